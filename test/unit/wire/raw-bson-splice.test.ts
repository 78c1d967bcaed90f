/**
 * Spliced values (raw-bson.ts, issue 15): a value passed `byReference` is written only where the
 * command finally goes, so wrapping a client's 10 MB filter in the tenant predicate does not copy it
 * into an array and a document first. Whatever is built of spliced values, its bytes are exactly
 * those of the same thing built by copying, through every way a value is read or written.
 */
import { Binary, Long, serialize } from 'bson';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { configFromObject } from '../../../src/config/index.js';
import { ErrorCodes, ProxyError } from '../../../src/errors.js';
import { CursorRegistry } from '../../../src/policy/cursors.js';
import { IsolationEngine } from '../../../src/rewrite/engine.js';
import { tenantFilter } from '../../../src/rewrite/filter.js';
import { decodeCommand } from '../../../src/server/command-view.js';
import { forwardFrame } from '../../../src/server/frames.js';
import { route, type ConnectionState } from '../../../src/server/route.js';
import { traitsOf } from '../../../src/upstream/command-traits.js';
import { encodeOpMsg } from '../../../src/wire/op-msg.js';
import type { TenantContext } from '../../../src/policy/types.js';
import { BsonType } from '../../../src/wire/bson-scan.js';
import { CopyJob } from '../../../src/wire/copy-job.js';
import {
  arrayOf,
  byReference,
  documentOf,
  encodeElements,
  lengthOf,
  RawDocument,
  valueOf,
  type RawValue,
} from '../../../src/wire/raw-bson.js';

/** A value tree: built twice, once with chosen leaves by reference. */
type Tree =
  | { kind: 'leaf'; value: unknown; reference: boolean }
  | { kind: 'document'; entries: Array<[string, Tree]> }
  | { kind: 'array'; items: Tree[] };

const leaf: fc.Arbitrary<Tree> = fc.record({
  kind: fc.constant('leaf' as const),
  value: fc.oneof(
    fc.integer(),
    fc.string({ maxLength: 40 }),
    fc.string({ minLength: 60, maxLength: 300 }),
    fc.constant(Long.fromString('-9007199254740993')),
    fc.uint8Array({ maxLength: 200 }).map((bytes) => new Binary(bytes)),
    fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }), fc.string({ maxLength: 120 }), { maxKeys: 4 }),
  ),
  reference: fc.boolean(),
});

const tree: fc.Arbitrary<Tree> = fc.letrec<{ node: Tree }>((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    leaf,
    fc.record({
      kind: fc.constant('document' as const),
      entries: fc.array(fc.tuple(fc.string({ minLength: 1, maxLength: 10 }), tie('node')), { maxLength: 5 }),
    }),
    fc.record({ kind: fc.constant('array' as const), items: fc.array(tie('node'), { maxLength: 5 }) }),
  ),
})).node;

/** The tree as a RawValue; `splice`: leaves marked `reference` go by reference. */
function build(node: Tree, splice: boolean): RawValue {
  switch (node.kind) {
    case 'leaf': {
      const value = valueOf(node.value);
      // A copy in its own memory, as a client's bytes would be (a view into its frame).
      const own: RawValue = { type: value.type, value: Buffer.from(value.value) };
      return splice && node.reference ? byReference(own, 0) : own;
    }
    case 'document':
      return documentOf(node.entries.map(([name, child]) => [name, build(child, splice)] as const));
    case 'array':
      return arrayOf(node.items.map((child) => build(child, splice)));
  }
}

const context = { field: 'tenantId', tenantValue: valueOf('acme') } as TenantContext;

describe('spliced values', () => {
  it('build exactly the bytes of the copied build, however they are nested and read', () => {
    fc.assert(
      fc.property(
        tree,
        fc.array(fc.tuple(fc.string({ minLength: 1, maxLength: 6 }), tree), { maxLength: 4 }),
        (root, more) => {
          const copied = build(root, false);
          const spliced = build(root, true);
          expect(lengthOf(spliced)).toBe(copied.value.length);
          expect(Buffer.from(spliced.value).equals(Buffer.from(copied.value))).toBe(true);

          // Put into a document with other elements (with, withFirst, toValue, toBytes, a copy job).
          const plain = new RawDocument(more.map(([name, child]) => ({ name, ...build(child, false) })));
          let expected = plain.with('x', copied).withFirst('find', valueOf('c'));
          let actual = plain.with('x', build(root, true)).withFirst('find', valueOf('c'));
          expect(Buffer.from(actual.toBytes()).equals(Buffer.from(expected.toBytes()))).toBe(true);
          expect(Buffer.from(actual.toValue().value).equals(Buffer.from(expected.toValue().value))).toBe(true);
          const job = new CopyJob();
          const deferred = actual.toBytes(undefined, job);
          while (job.remaining > 0 || !job.finished) job.step(7);
          expect(Buffer.from(deferred).equals(Buffer.from(expected.toBytes()))).toBe(true);

          // An element read as a plain object (spread) reads the joined bytes.
          expected = new RawDocument(expected.elements.map((element) => ({ ...element })));
          actual = new RawDocument(actual.elements.map((element) => ({ ...element })));
          expect(Buffer.from(actual.toBytes()).equals(Buffer.from(expected.toBytes()))).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('keep a client filter by reference until the frame is written: its bytes are not copied before', () => {
    const filter = serialize({ pad: { $ne: 'z'.repeat(1 << 20) } });
    const frame = Buffer.concat([Buffer.alloc(33), filter, Buffer.alloc(7)]);
    const client: RawValue = { type: BsonType.document, value: frame.subarray(33, 33 + filter.length) };
    const wrapped = tenantFilter(context, client);
    const pieces = wrapped.pieces ?? [];
    const big = pieces.filter((piece) => piece.length > 1024);
    expect(big).toHaveLength(1);
    expect(big[0]!.buffer).toBe(frame.buffer);
    expect(big[0]!.byteOffset).toBe(client.value.byteOffset);
    // The rest is the predicate's own bytes, a few dozen.
    expect(lengthOf(wrapped) - filter.length).toBeLessThan(100);

    const body = new RawDocument([
      { name: 'find', ...valueOf('orders') },
      { name: 'filter', ...client },
      { name: '$db', ...valueOf('app') },
    ]).with('filter', wrapped);
    const expected = serialize(
      {
        find: 'orders',
        filter: { $and: [{ tenantId: { $eq: 'acme' } }, { pad: { $ne: 'z'.repeat(1 << 20) } }] },
        $db: 'app',
      },
      { checkKeys: false },
    );
    expect(Buffer.from(body.toBytes()).equals(expected)).toBe(true);
  });

  it('an absent or small filter gives the same predicate as before', () => {
    const none = tenantFilter(context, undefined);
    expect(Buffer.from(none.value).equals(serialize({ $and: [{ tenantId: { $eq: 'acme' } }] }))).toBe(true);
    const small = tenantFilter(context, { type: BsonType.document, value: serialize({ a: 1 }) });
    expect(Buffer.from(small.value).equals(serialize({ $and: [{ tenantId: { $eq: 'acme' } }, { a: 1 }] }))).toBe(true);
    // A short filter is copied, not spliced (cheaper for a few KiB).
    expect(small.pieces).toBeUndefined();
  });

  it('an array with a spliced item under a copy job defines its pieces, written once into the frame', () => {
    const big: RawValue = { type: BsonType.document, value: serialize({ s: 'q'.repeat(5000) }) };
    const job = new CopyJob();
    const array = arrayOf([valueOf(1), byReference(big, 0)], undefined, job);
    const document = encodeElements([{ name: 'a', type: array.type, value: array.value }], undefined, job);
    job.runAll();
    expect(Buffer.from(document).equals(serialize({ a: [1, { s: 'q'.repeat(5000) }] }))).toBe(true);
  });
});

describe('through the rewrite of a command', () => {
  const engine = new IsolationEngine({
    config: configFromObject({}).isolation,
    cursors: new CursorRegistry(),
    sessionKey: Buffer.alloc(32, 1),
    collationSupported: () => false,
  });
  const connection: ConnectionState = {
    tenant: 'acme',
    overConnectionLimit: undefined,
    engine: engine.forTenant('acme'),
    engineError: undefined,
    unauthorized: (name) => new ProxyError(ErrorCodes.Unauthorized, `command ${name} requires authentication`),
  };
  const pad = 'z'.repeat(1 << 20);
  const filter = { pad: { $ne: pad } };

  /** The client's filter bytes as they sit in its frame (found by content). */
  function clientFilterIn(frame: Buffer): { offset: number; length: number } {
    const bytes = serialize(filter);
    return { offset: frame.indexOf(bytes), length: bytes.length };
  }

  for (const [name, command, field] of [
    ['find', { find: 'orders', filter, $db: 'app' }, 'filter'],
    ['update', { update: 'orders', updates: [{ q: filter, u: { $set: { a: 1 } } }], $db: 'app' }, 'updates'],
    ['delete', { delete: 'orders', deletes: [{ q: filter, limit: 0 }], $db: 'app' }, 'deletes'],
  ] as const) {
    it(`${name}: the 1 MB filter goes from the client's frame to the forwarded one by reference, never joined`, () => {
      for (const deferCopies of [false, true]) {
        const frame = encodeOpMsg({ requestId: 3, responseTo: 0, body: serialize(command) });
        const decoded = decodeCommand(frame, { maxBsonDepth: 20, deferCopies });
        const next = route(decoded, connection);
        if (next.action !== 'forward') throw new Error(`unexpected ${next.action}`);
        const rewritten = next.plan.rewrite!.body.get(field)!;
        const { offset, length } = clientFilterIn(frame);
        const big = (rewritten.pieces ?? []).filter((piece) => piece.length >= length);
        expect(big).toHaveLength(1);
        expect(big[0]!.buffer).toBe(frame.buffer);
        expect(big[0]!.byteOffset).toBe(frame.byteOffset + offset);
        // Reading the value would join it: the forwarding layer's traits do not.
        const fields = next.plan.rewrite!.body.elements.map((element) =>
          element.name === field
            ? {
                name: element.name,
                type: element.type,
                pieces: element.pieces,
                get value(): Uint8Array {
                  throw new Error(`${field} joined`);
                },
              }
            : element,
        );
        expect(traitsOf(fields).db).toBe('app');
        const out = forwardFrame(frame, decoded.msg, next.plan.rewrite, decoded.copies);
        decoded.copies?.runAll();
        // The forwarded frame holds the client's filter and the tenant predicate.
        expect(out.indexOf(serialize(filter))).toBeGreaterThan(0);
        expect(out.indexOf(serialize({ tenantId: { $eq: 'acme' } }))).toBeGreaterThan(0);
      }
    });
  }
});
