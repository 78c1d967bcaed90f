/**
 * The rewrite of a large insert in slices (issue 15, "~48 MB inserts"): decodeCommand's
 * `deferCopies` has the insert handler make every check and stamp decision at once and put the
 * copies of the batch (stamped documents spliced together, the array, the forwarded frame) into
 * the command's CopyJob, which the server runs through the ValidationScheduler. Here: whatever the
 * slice size (down to a byte), the frame sent is byte for byte the one the whole rewrite makes;
 * every attack input is refused exactly as before (same rule, code and message), before any copy;
 * and a bystander's work is not behind a big copy of another tenant.
 */
import { Code, Long, serialize } from 'bson';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { configFromObject } from '../../../src/config/index.js';
import { ErrorCodes, ProxyError } from '../../../src/errors.js';
import { CursorRegistry } from '../../../src/policy/cursors.js';
import { IsolationEngine } from '../../../src/rewrite/engine.js';
import { decodeCommand } from '../../../src/server/command-view.js';
import { forwardFrame } from '../../../src/server/frames.js';
import { route, type ConnectionState } from '../../../src/server/route.js';
import { ValidationScheduler } from '../../../src/server/validation-scheduler.js';
import { CopyJob } from '../../../src/wire/copy-job.js';
import { encodeOpMsg } from '../../../src/wire/op-msg.js';

const FIELD = 'tenantId';

function state(tenantValueType: 'string' | 'int64' = 'string', tenant = 'acme'): ConnectionState {
  const engine = new IsolationEngine({
    config: configFromObject({ isolation: { tenantValueType } }).isolation,
    cursors: new CursorRegistry(),
    sessionKey: Buffer.alloc(32, 1),
    collationSupported: () => false,
  });
  return {
    tenant,
    overConnectionLimit: undefined,
    engine: engine.forTenant(tenant),
    engineError: undefined,
    unauthorized: (name) => new ProxyError(ErrorCodes.Unauthorized, `command ${name} requires authentication`),
  };
}

const STRING_TENANT = state();

/** An insert of `docs` (raw BSON) as a kind-1 sequence or in the body array, as a client frame. */
function insertFrame(docs: readonly Uint8Array[], form: 'sequence' | 'body', extra: Record<string, unknown> = {}) {
  if (form === 'sequence') {
    const body = serialize({ insert: 'orders', ordered: true, ...extra, $db: 'app' });
    return encodeOpMsg({
      requestId: 9,
      responseTo: 0,
      body,
      sequences: [{ identifier: 'documents', documents: docs.map((doc) => Buffer.from(doc)) }],
    });
  }
  const array = Buffer.concat([
    Buffer.alloc(4),
    ...docs.map((doc, index) => Buffer.concat([Buffer.from([0x03]), Buffer.from(`${index}\0`), doc])),
    Buffer.from([0]),
  ]);
  array.writeInt32LE(array.length, 0);
  const head = serialize({ insert: 'orders' });
  const tail = serialize({ ordered: true, ...extra, $db: 'app' });
  const body = Buffer.concat([
    head.subarray(0, head.length - 1),
    Buffer.from([0x04]),
    Buffer.from('documents\0'),
    array,
    tail.subarray(4),
  ]);
  body.writeInt32LE(body.length, 0);
  return encodeOpMsg({ requestId: 9, responseTo: 0, body });
}

type Outcome =
  | { kind: 'forward'; frame: string }
  | { kind: 'refuse'; rule: string; code: number; message: string }
  | { kind: 'error'; code: number | undefined; message: string };

/** The whole rewrite, as before: every byte written when route() returns. */
function wholeRewrite(frame: Buffer, connection: ConnectionState = STRING_TENANT): Outcome {
  try {
    const command = decodeCommand(frame, { maxBsonDepth: 20 });
    expect(command.copies).toBeUndefined();
    const next = route(command, connection);
    if (next.action === 'refuse')
      return { kind: 'refuse', rule: next.rule, code: next.refusal.code, message: next.refusal.message };
    if (next.action !== 'forward') throw new Error(`unexpected ${next.action}`);
    return { kind: 'forward', frame: forwardFrame(frame, command.msg, next.plan.rewrite).toString('hex') };
  } catch (error) {
    const e = error as ProxyError;
    return { kind: 'error', code: e.code, message: e.message };
  }
}

/** Runs the scheduler's turns (defer runs later, in order), counting them. */
function manualScheduler(sliceBytes: number): { scheduler: ValidationScheduler; runAll: () => Promise<number> } {
  const queue: Array<() => void> = [];
  const scheduler = new ValidationScheduler({
    sliceBytes,
    turnBytes: sliceBytes * 2,
    defer: (run) => void queue.push(run),
  });
  return {
    scheduler,
    async runAll() {
      let turns = 0;
      for (let run = queue.shift(); run !== undefined; run = queue.shift()) {
        turns++;
        run();
        await Promise.resolve();
      }
      return turns;
    },
  };
}

/** The rewrite with its copies put off and run by the scheduler in slices of `slice` bytes. */
async function slicedRewrite(
  frame: Buffer,
  slice: number,
  connection: ConnectionState = STRING_TENANT,
): Promise<Outcome & { copied?: number }> {
  let command;
  try {
    command = decodeCommand(frame, { maxBsonDepth: 20, deferCopies: true });
  } catch (error) {
    const e = error as ProxyError;
    return { kind: 'error', code: e.code, message: e.message };
  }
  const copies = command.copies!;
  const next = route(command, connection);
  if (next.action === 'refuse') {
    // Refused before anything was copied.
    expect(copies.remaining).toBe(copies.bytes);
    return { kind: 'refuse', rule: next.rule, code: next.refusal.code, message: next.refusal.message };
  }
  if (next.action !== 'forward') throw new Error(`unexpected ${next.action}`);
  const outgoing = forwardFrame(frame, command.msg, next.plan.rewrite, copies);
  const { scheduler, runAll } = manualScheduler(slice);
  const copying = scheduler.copy('t', copies);
  await runAll();
  expect(await copying).toBe(true);
  expect(copies.finished).toBe(true);
  expect(copies.remaining).toBe(0);
  return { kind: 'forward', frame: outgoing.toString('hex'), copied: copies.bytes };
}

const rawDoc = (doc: Record<string, unknown>): Buffer => Buffer.from(serialize(doc));

/** Documents to store: with or without `_id`, with T, without it, nested values, strings of any length. */
const storedDocument = fc
  .record(
    {
      id: fc.option(fc.oneof(fc.integer(), fc.string({ maxLength: 8 })), { nil: undefined }),
      tenant: fc.constantFrom('none', 'own', 'own-first'),
      fields: fc.dictionary(
        fc.stringMatching(/^[a-z][a-z0-9_]{0,6}$/),
        fc.oneof(
          fc.integer(),
          fc.string({ maxLength: 300 }),
          fc.boolean(),
          fc.constant(null),
          fc.array(fc.integer(), { maxLength: 20 }),
          fc.record({ x: fc.integer(), y: fc.string({ maxLength: 20 }) }),
        ),
        { maxKeys: 6 },
      ),
    },
    { requiredKeys: ['tenant', 'fields'] },
  )
  .map(({ id, tenant, fields }) => {
    const doc: Record<string, unknown> = {};
    if (tenant === 'own-first') doc[FIELD] = 'acme';
    if (id !== undefined) doc['_id'] = id;
    for (const [name, value] of Object.entries(fields)) if (name !== FIELD && name !== '_id') doc[name] = value;
    if (tenant === 'own') doc[FIELD] = 'acme';
    return rawDoc(doc);
  });

describe('the insert rewrite in slices', () => {
  it('sends byte for byte the frame of the whole rewrite, whatever the slice size (down to one byte)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(storedDocument, { minLength: 1, maxLength: 12 }),
        fc.constantFrom<'sequence' | 'body'>('sequence', 'body'),
        fc.oneof(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 65, max: 4096 })),
        async (docs, form, slice) => {
          const frame = insertFrame(docs, form);
          const whole = wholeRewrite(frame);
          expect(whole.kind).toBe('forward');
          const { copied, ...sliced } = await slicedRewrite(frame, slice);
          expect(sliced).toEqual(whole);
          expect(copied).toBeGreaterThan(0);
        },
      ),
      { numRuns: 400 },
    );
  });

  it('slices of one document: a big batch of stamped documents, the same frame', async () => {
    const pad = 'p'.repeat(2_000);
    const docs = Array.from({ length: 300 }, (_, n) => rawDoc({ _id: n, pad, n }));
    for (const form of ['sequence', 'body'] as const) {
      const frame = insertFrame(docs, form);
      const whole = wholeRewrite(frame);
      const { copied, ...sliced } = await slicedRewrite(frame, docs[0]!.length);
      expect(sliced).toEqual(whole);
      // The batch is copied through the job once, from the client's bytes into the frame: no
      // copy of the stamped documents (or of the array) before the copy into the frame.
      expect(copied).toBeGreaterThan(300 * 2_000);
      expect(copied).toBeLessThanOrEqual((whole as { frame: string }).frame.length / 2);
    }
  });

  it('an int64 tenant value and a mix of kept and stamped documents', async () => {
    const connection = state('int64', '42');
    const docs = [
      rawDoc({ _id: 1, a: 'x' }),
      rawDoc({ _id: 2, [FIELD]: Long.fromNumber(42), b: 1 }),
      rawDoc({ c: [1, 2, { d: 3 }] }),
    ];
    for (const form of ['sequence', 'body'] as const) {
      const frame = insertFrame(docs, form);
      const whole = wholeRewrite(frame, connection);
      expect(whole.kind).toBe('forward');
      const { copied: _copied, ...sliced } = await slicedRewrite(frame, 7, connection);
      expect(sliced).toEqual(whole);
    }
  });
});

/**
 * Attack inputs (catalogue 1, 2, 8, 11, 42, 51, G3, G8): each is refused by the rewrite with its
 * copies put off exactly as by the whole rewrite (rule, code, message), whatever its place in a
 * batch of clean documents and its form; and refused at all.
 */
const ATTACKS: ReadonlyArray<[string, Buffer]> = [
  ['$where nested', rawDoc({ _id: 1, a: { b: { $where: 'sleep(100)' } } })],
  ['$function in an array', rawDoc({ _id: 1, a: [{ $function: { body: 'x', args: [], lang: 'js' } }] })],
  ['$accumulator', rawDoc({ a: { $accumulator: {} } })],
  ['JavaScript value', rawDoc({ a: new Code('function () {}') })],
  ['$$USER_ROLES in a name', rawDoc({ a: { x$$USER_ROLES: 1 } })],
  ['top-level $ name', rawDoc({ _id: 1, $set: { a: 1 } })],
  ['top-level dotted name', rawDoc({ 'a.b': 1 })],
  ['foreign tenant', rawDoc({ _id: 1, [FIELD]: 'other' })],
  ['tenant as an array', rawDoc({ [FIELD]: ['acme'] })],
  ['tenant null', rawDoc({ [FIELD]: null })],
  ['tenant of another type', rawDoc({ [FIELD]: 7 })],
  ['tenant prefix', rawDoc({ [FIELD]: 'acm' })],
  // The one pass stops at the tenant field only when validation saw nothing else to refuse:
  // whatever follows T here must still be found.
  ['own tenant, then a dotted name', rawDoc({ _id: 1, [FIELD]: 'acme', 'a.b': 1 })],
  ['own tenant, then a $ name', rawDoc({ [FIELD]: 'acme', $inc: { a: 1 } })],
  ['own tenant, then a $ inside a name', rawDoc({ [FIELD]: 'acme', a$$USER_ROLES: 1 })],
  ['own tenant, then $where below', rawDoc({ [FIELD]: 'acme', a: { $where: 'x' } })],
  ['own tenant, then JavaScript', rawDoc({ [FIELD]: 'acme', a: new Code('x') })],
  ['own tenant, then a foreign one under a dotted alias', rawDoc({ [FIELD]: 'acme', [`${FIELD}.x`]: 'other' })],
];

/** A document the parser refuses: its name "b" respelled "a" (duplicate names, at the top or below). */
function duplicated(doc: Record<string, unknown>): Buffer {
  const bytes = rawDoc(doc);
  bytes[bytes.indexOf(Buffer.from('b\0'))] = 0x61;
  return bytes;
}
const DUPLICATE_TOP = duplicated({ a: 1, b: 2 });
const DUPLICATE_NESTED = duplicated({ x: { a: 1, b: 2 } });

describe('the sliced rewrite refuses what the whole rewrite refuses', () => {
  const clean = rawDoc({ _id: 'c', v: 1 });
  for (const [label, attack] of ATTACKS) {
    for (const form of ['sequence', 'body'] as const) {
      for (const at of [0, 2]) {
        it(`${label} (${form}, document ${at})`, async () => {
          const docs = [clean, clean, clean];
          docs.splice(at, 0, attack);
          const frame = insertFrame(docs, form);
          const whole = wholeRewrite(frame);
          expect(whole.kind, `${label} is refused`).toBe('refuse');
          expect(await slicedRewrite(frame, 16)).toEqual(whole);
        });
      }
    }
  }

  it('duplicate names are refused by the parser, before the rewrite, either way', async () => {
    for (const dup of [DUPLICATE_TOP, DUPLICATE_NESTED]) {
      for (const form of ['sequence', 'body'] as const) {
        const frame = insertFrame([clean, dup], form);
        const whole = wholeRewrite(frame);
        expect(whole).toMatchObject({ kind: 'error', code: ErrorCodes.InvalidBSON });
        expect(await slicedRewrite(frame, 16)).toEqual(whole);
      }
    }
  });

  it('a document the stamp pushes past 16 MiB is refused (BSONObjectTooLarge), either way', async () => {
    const base = rawDoc({ _id: 1, pad: '' });
    const pad = 16 * 1024 * 1024 - base.length;
    const big = rawDoc({ _id: 1, pad: 'x'.repeat(pad) });
    expect(big.length).toBe(16 * 1024 * 1024);
    const frame = insertFrame([big], 'sequence');
    const whole = wholeRewrite(frame);
    expect(whole).toMatchObject({ kind: 'refuse', code: ErrorCodes.BSONObjectTooLarge });
    expect(await slicedRewrite(frame, 64 * 1024)).toEqual(whole);
  });
});

describe('copies in the scheduler', () => {
  it('a bystander is not behind a big copy of another tenant', async () => {
    const { scheduler, runAll } = manualScheduler(1024);
    const target = Buffer.alloc(1 << 20);
    const job = new CopyJob();
    for (let at = 0; at < target.length; at += 64 * 1024) job.add(Buffer.alloc(64 * 1024, 7), target, at);
    const order: string[] = [];
    const noisy = scheduler.copy('noisy', job).then(() => void order.push('noisy'));
    const small = new CopyJob();
    small.add(Buffer.from('hello'), Buffer.alloc(5), 0);
    const bystander = scheduler.copy('bystander', small).then(() => void order.push('bystander'));
    const turns = await runAll();
    await Promise.all([noisy, bystander]);
    expect(order).toEqual(['bystander', 'noisy']);
    expect(turns).toBeGreaterThanOrEqual(target.length / 2048);
    expect(target.every((byte) => byte === 7)).toBe(true);
    expect(scheduler.pending).toBe(0);
  });

  it('drops the copies of a client that left, at the next slice', async () => {
    const { scheduler, runAll } = manualScheduler(512);
    const job = new CopyJob();
    job.add(Buffer.alloc(100_000, 1), Buffer.alloc(100_000), 0);
    let left = false;
    const copying = scheduler.copy('noisy', job, () => left);
    left = true;
    await runAll();
    expect(await copying).toBe(false);
    expect(job.remaining).toBe(100_000);
    expect(scheduler.pending).toBe(0);
  });

  it('CopyJob: a defined region is copied as its pieces where it goes, or written in place at the end', () => {
    const source = Buffer.from('abcdefgh');
    const middle = Buffer.alloc(6);
    const job = new CopyJob();
    // middle = "ab" + "XY" + "gh", never written itself when it is copied on.
    job.define(middle, [source.subarray(0, 2), Buffer.from('XY'), source.subarray(6)]);
    const outer = Buffer.alloc(10, 0x2e);
    job.add(middle, outer, 2);
    while (!job.finished) job.step(1);
    expect(outer.toString()).toBe('..abXYgh..');
    expect(middle.equals(Buffer.alloc(6))).toBe(true);
    expect(job.bytes).toBe(6);
    // Not copied anywhere: written in place when the job finishes.
    const unused = new CopyJob();
    const alone = Buffer.alloc(4);
    unused.define(alone, [Buffer.from('wx'), Buffer.from('yz')]);
    expect(unused.finished).toBe(false);
    unused.runAll();
    expect(unused.finished).toBe(true);
    expect(alone.toString()).toBe('wxyz');
    expect(() => job.define(Buffer.alloc(3), [Buffer.from('ab')])).toThrow(RangeError);
  });

  it('CopyJob: copies in order, split anywhere, the same bytes', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ minLength: 0, maxLength: 40 }), { maxLength: 10 }),
        fc.integer({ min: 1, max: 50 }),
        (pieces, step) => {
          const whole = Buffer.concat(pieces);
          const target = Buffer.alloc(whole.length + 6);
          const job = new CopyJob();
          let at = 3;
          for (const piece of pieces) {
            job.add(piece, target, at);
            at += piece.length;
          }
          // A later copy may read what an earlier one wrote: the first three bytes again, at the front.
          job.add(target.subarray(3, 6), target, 0);
          expect(job.bytes).toBe(whole.length + 3);
          while (!job.finished) expect(job.step(step)).toBeLessThanOrEqual(step);
          expect(target.subarray(3, 3 + whole.length)).toEqual(whole);
          expect(target.subarray(0, 3)).toEqual(target.subarray(3, 6));
        },
      ),
    );
  });
});
