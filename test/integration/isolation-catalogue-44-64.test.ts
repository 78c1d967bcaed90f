/**
 * Proof for catalogue items 44-64 (docs/threat-catalogue.md): wire level (44-53),
 * sessions (54-58), information leaks (59-63) and the database-per-tenant mapping (64).
 *
 * Every test acts as tenant "acme" (T) against tenant "globex" (B), tries to break the rule with
 * the official driver or hand-built frames (test/helpers/raw-client.ts), asserts the refusal,
 * the closed connection or the rewritten behaviour, and then reads the upstream DIRECTLY to prove
 * that nothing crossed. What FerretDB cannot show (the bytes sent upstream: session ids, cluster
 * times, flags, MongoDB-shaped error texts, refusals that must never be forwarded) is proven with
 * the in-process fake upstream (test/helpers/fake-upstream.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deflateSync } from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { Binary, Long, Timestamp, UUID, deserialize, serialize, type Document } from 'bson';
import type { MongoClient } from 'mongodb';
import { compress as snappyCompress } from 'snappy';
import { compress as zstdCompress } from '@mongodb-js/zstd';
import { crc32c } from '@node-rs/crc32';
import { startTenantProxy, type TenantProxy } from '../helpers/tenants.js';
import { forwardedBy, settled } from '../helpers/metrics.js';
import { directClient, lacks, uniqueDbName } from '../helpers/upstream.js';
import { startFakeUpstream, type FakeUpstream, type ReceivedMessage } from '../helpers/fake-upstream.js';
import {
  OP_COMPRESSED,
  OP_MSG,
  opMsg,
  opQuery,
  rawFrame,
  replyDocument,
  type BuiltFrame,
  type ReceivedFrame,
} from '../helpers/raw-client.js';

/** JSON.stringify replacer: leaves out the proxy's note of the explain figures it withheld. */
const withoutNote = (key: string, value: unknown): unknown => (key === 'mtpWithheld' ? undefined : value);
const T = 'acme';
const B = 'globex';
const MORE_TO_COME = 1 << 1;
const CHECKSUM_PRESENT = 1 << 0;
const EXHAUST_ALLOWED = 1 << 16;
const MAX_BSON = 16 * 1024 * 1024;

let tp: TenantProxy;
let direct: MongoClient;
const dbName = uniqueDbName('cat44');
/** B's documents, seeded through B's own listener before every test. */
const SECRET = 'globex-secret-value';

beforeAll(async () => {
  tp = await startTenantProxy([T, B]);
  direct = directClient();
  await tp
    .clientFor(B)
    .db(dbName)
    .collection('items')
    .insertMany([
      { _id: 'b-1' as never, owner: B, secret: SECRET, x: 'secret' },
      { _id: 'b-2' as never, owner: B, secret: SECRET },
    ]);
  await tp
    .clientFor(T)
    .db(dbName)
    .collection('items')
    .insertOne({ _id: 't-1' as never, owner: T });
});

afterAll(async () => {
  await direct
    ?.db(dbName)
    .dropDatabase()
    .catch(() => undefined);
  await direct?.close();
  await tp?.stop();
});

// ---------------------------------------------------------------------------------------------
// Helpers

function items(db = dbName, coll = 'items') {
  return direct.db(db).collection(coll);
}

/** B's documents as stored, read directly: unchanged by every test. */
async function expectGlobexUntouched(): Promise<void> {
  const docs = await items().find({ tenantId: B }).sort({ _id: 1 }).toArray();
  expect(docs).toEqual([
    { _id: 'b-1', tenantId: B, owner: B, secret: SECRET, x: 'secret' },
    { _id: 'b-2', tenantId: B, owner: B, secret: SECRET },
  ]);
}

/** Nothing carrying `marker` reached the upstream, in any collection of the test database. */
async function expectNothingStored(marker: string, db = dbName): Promise<void> {
  for (const { name } of await direct.db(db).listCollections().toArray()) {
    expect(await direct.db(db).collection(name).countDocuments({ marker }), `${db}.${name}`).toBe(0);
  }
}

/** A second client of T still gets answers: the proxy survived. */
async function expectProxyAlive(): Promise<void> {
  const c = await tp.rawFor(T);
  expect((await c.command(opMsg({ ping: 1, $db: 'admin' }))).ok).toBe(1);
  c.close();
}

/** Sends `bytes`; the outcome is an error reply (returned) or a closed connection (null). Never ok:1. */
async function refusedOrClosed(bytes: Buffer, tenant = T, timeoutMs = 3000): Promise<Document | null> {
  const c = await tp.rawFor(tenant);
  c.write(bytes);
  let frame: ReceivedFrame | null;
  try {
    frame = await c.readFrame(timeoutMs);
  } catch {
    frame = null; // no reply at all: the request was not executed for the client either
  }
  c.close();
  if (frame === null) return null;
  const doc = replyDocument(frame);
  expect(doc.ok, JSON.stringify(doc)).toBe(0);
  expect(frame.bytes.includes(Buffer.from(SECRET))).toBe(false);
  return doc;
}

const kind0 = (doc: Document | Buffer): Buffer =>
  Buffer.concat([Buffer.from([0]), Buffer.isBuffer(doc) ? doc : Buffer.from(serialize(doc))]);

function kind1(id: string, docs: Document[], sizeDelta = 0): Buffer {
  const bodies = docs.map((d) => Buffer.from(serialize(d)));
  const ident = Buffer.from(`${id}\0`, 'utf8');
  const size = Buffer.alloc(4);
  size.writeInt32LE(4 + ident.length + bodies.reduce((n, d) => n + d.length, 0) + sizeDelta, 0);
  return Buffer.concat([Buffer.from([1]), size, ident, ...bodies]);
}

let frameIds = 700_000;
/** An OP_MSG from raw sections (any order, any count). */
function msgFrame(sections: Buffer[], flags = 0, trailer: Buffer = Buffer.alloc(0)): Buffer {
  const f = Buffer.alloc(4);
  f.writeUInt32LE(flags >>> 0, 0);
  const payload = Buffer.concat([f, ...sections, trailer]);
  const h = Buffer.alloc(16);
  h.writeInt32LE(16 + payload.length, 0);
  h.writeInt32LE(++frameIds, 4);
  h.writeInt32LE(OP_MSG, 12);
  return Buffer.concat([h, payload]);
}

/** `doc` with the elements of `extra` appended as raw bytes (duplicate keys are possible). */
function appendElements(doc: Document, extra: Document): Buffer {
  const one = Buffer.from(serialize(doc));
  const more = Buffer.from(serialize(extra)).subarray(4, -1);
  const out = Buffer.concat([one.subarray(0, one.length - 1), more, Buffer.from([0])]);
  out.writeInt32LE(out.length, 0);
  return out;
}

/** Replaces the first occurrence of `from` (same length) in a serialized document. */
function patch(doc: Buffer, from: string, to: Buffer): Buffer {
  const at = doc.indexOf(Buffer.from(from, 'latin1'));
  if (at < 0 || to.length !== from.length) throw new Error(`cannot patch ${from}`);
  const out = Buffer.from(doc);
  to.copy(out, at);
  return out;
}

/** OP_COMPRESSED around any frame. */
async function compressed(frame: Buffer, compressorId: 0 | 1 | 2 | 3, declaredSize?: number): Promise<Buffer> {
  const inner = frame.subarray(16);
  let data: Buffer;
  if (compressorId === 0) data = inner;
  else if (compressorId === 1) data = await snappyCompress(inner);
  else if (compressorId === 2) data = deflateSync(inner);
  else data = await zstdCompress(inner);
  const head = Buffer.alloc(9);
  head.writeInt32LE(frame.readInt32LE(12), 0);
  head.writeInt32LE(declaredSize ?? inner.length, 4);
  head[8] = compressorId;
  return rawFrame(OP_COMPRESSED, Buffer.concat([head, data])).bytes;
}

function withChecksum(frame: Buffer, corrupt = false): Buffer {
  const framed = Buffer.concat([frame, Buffer.alloc(4)]);
  framed.writeInt32LE(framed.length, 0);
  framed.writeUInt32LE((framed.readUInt32LE(16) | CHECKSUM_PRESENT) >>> 0, 16);
  const sum = crc32c(framed.subarray(0, framed.length - 4));
  framed.writeUInt32LE(corrupt ? (sum ^ 0x5a) >>> 0 : sum, framed.length - 4);
  return framed;
}

function cstring(text: string): Buffer {
  return Buffer.from(`${text}\0`, 'utf8');
}

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(n, 0);
  return b;
}

/** An insert of B-tenant documents carrying `marker`, the payload most attacks below try to smuggle. */
function hostileInsert(marker: string, extra: Document = {}): Document {
  return { insert: 'items', documents: [{ tenantId: B, marker }], $db: dbName, ...extra };
}

async function waitFor(check: () => Promise<boolean>, timeoutMs = 2000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return check();
}

// ---------------------------------------------------------------------------------------------
// 6. Wire level (44-53)

describe('wire level', () => {
  it('catalogue 44: every opcode but OP_MSG/OP_COMPRESSED (and the OP_QUERY handshake) closes the connection, nothing forwarded', async () => {
    const ns = cstring(`${dbName}.items`);
    const doc = (d: Document): Buffer => Buffer.from(serialize(d));
    const frames: Array<[number, Buffer]> = [
      [1, Buffer.concat([int32(0), Buffer.alloc(8), int32(0), int32(1), doc({ tenantId: B, marker: 'o44' })])], // OP_REPLY from a client
      [2001, Buffer.concat([int32(0), ns, int32(2), doc({}), doc({ $set: { secret: 'overwritten', marker: 'o44' } })])], // OP_UPDATE multi
      [2002, Buffer.concat([int32(0), ns, doc({ tenantId: B, marker: 'o44' })])], // OP_INSERT
      [2005, Buffer.concat([int32(0), ns, int32(0), Buffer.alloc(8)])], // OP_GET_MORE
      [2006, Buffer.concat([int32(0), ns, int32(0), doc({})])], // OP_DELETE of everything
      [2007, Buffer.concat([int32(0), int32(1), Buffer.alloc(8)])], // OP_KILL_CURSORS
      [
        2010,
        Buffer.concat([
          cstring(dbName),
          cstring('insert'),
          doc({}),
          doc({ insert: 'items', documents: [{ tenantId: B, marker: 'o44' }] }),
        ]),
      ], // OP_COMMAND
      [2011, Buffer.concat([doc({ ok: 1 }), doc({})])], // OP_COMMANDREPLY
      [2003, Buffer.alloc(24)],
      [4242, Buffer.alloc(24)],
    ];
    for (const [opCode, payload] of frames) {
      const c = await tp.rawFor(T);
      c.write(rawFrame(opCode, payload).bytes);
      const reply = await c.readFrame().catch(() => null);
      if (reply !== null) expect(replyDocument(reply).ok, `opcode ${opCode}`).toBe(0);
      expect(await c.waitClosed(), `opcode ${opCode} closes`).toBe(true);
      c.close();
    }
    await expectNothingStored('o44');
    await expectGlobexUntouched();
    await expectProxyAlive();
  });

  it('catalogue 45: OP_QUERY wrappers reach nothing but the hello handshake', async () => {
    const attacks: BuiltFrame[] = [
      opQuery('admin.$cmd', { $query: { find: 'items', filter: {} }, $readPreference: { mode: 'primary' } }),
      opQuery(`${dbName}.$cmd`, { $query: { find: 'items' } }),
      opQuery('admin.$cmd', { query: { find: 'items' }, $orderby: { _id: 1 } }),
      opQuery(`${dbName}.$cmd`, { insert: 'items', documents: [{ tenantId: B, marker: 'o45' }] }),
      opQuery(`${dbName}.items`, {}), // legacy find on a collection (servers before 5.1 run it)
      opQuery(`${dbName}.items`, { $query: { tenantId: B }, $orderby: { _id: 1 }, $hint: { _id: 1 } }),
      opQuery(`${dbName}.items`, { $query: {}, $explain: true }),
      opQuery('admin.$cmd', { $query: { hello: 1, insert: 'items' } }), // hello is the first key only when unwrapped
    ];
    for (const frame of attacks.slice(0, -1)) {
      const c = await tp.rawFor(T);
      c.write(frame.bytes);
      const reply = await c.readFrame();
      expect(reply?.opCode).toBe(1);
      const doc = replyDocument(reply!);
      expect(doc.ok).toBe(0);
      expect(doc.$err).toMatch(/OP_QUERY/);
      expect(reply!.bytes.includes(Buffer.from(SECRET))).toBe(false);
      c.close();
    }
    // The wrapped hello forms are answered by the proxy itself (never forwarded).
    for (const query of [
      { $query: { isMaster: 1 }, $readPreference: { mode: 'primaryPreferred' } },
      { ismaster: 1 },
      { query: { hello: 1 } },
    ]) {
      const c = await tp.rawFor(T);
      c.write(opQuery('admin.$cmd', query).bytes);
      const doc = replyDocument((await c.readFrame())!);
      expect(doc.ok, JSON.stringify(query)).toBe(1);
      c.close();
    }
    await expectNothingStored('o45');
    await expectGlobexUntouched();
  });

  it('catalogue 46: OP_COMPRESSED is checked as if uncompressed: a compressed $where, OP_QUERY or foreign-tenant insert is refused', async () => {
    const where = opMsg({ find: 'items', filter: { $where: 'sleep(2000) || true' }, $db: dbName }).bytes;
    const plain = await (async () => {
      const c = await tp.rawFor(T);
      const doc = await c.command({ bytes: where, requestId: where.readInt32LE(4) });
      c.close();
      return doc;
    })();
    expect(plain.ok).toBe(0);
    for (const compressorId of [0, 1, 2, 3] as const) {
      const c = await tp.rawFor(T);
      const frame = await compressed(where, compressorId);
      const { outcome, forwarded } = await forwardedBy(tp.proxy.proxy, async () => {
        c.write(frame);
        return c.readFrame();
      });
      expect(forwarded, `compressor ${compressorId}: refused, never forwarded`).toBe(0);
      const reply = await settled(outcome);
      const doc = replyDocument(reply!.opCode === OP_COMPRESSED ? await decompressReply(reply!) : reply!);
      expect(doc.ok, `compressor ${compressorId}`).toBe(0);
      expect(doc.code).toBe(plain.code);
      expect(doc.errmsg).toBe(plain.errmsg);
      c.close();
    }
    // A compressed foreign-tenant insert and a compressed legacy find.
    for (const compressorId of [1, 2, 3] as const) {
      const c = await tp.rawFor(T);
      c.write(await compressed(opMsg(hostileInsert('o46')).bytes, compressorId));
      const reply = await c.readFrame();
      expect(replyDocument(reply!.opCode === OP_COMPRESSED ? await decompressReply(reply!) : reply!).ok).toBe(0);
      c.close();
    }
    const c = await tp.rawFor(T);
    c.write(await compressed(opQuery(`${dbName}.items`, {}).bytes, 2));
    const legacy = await c.readFrame();
    expect(replyDocument(legacy!.opCode === OP_COMPRESSED ? await decompressReply(legacy!) : legacy!).ok).toBe(0);
    c.close();
    // Declared size that lies (larger or smaller than the real one), nesting and a bomb: closed.
    const insert = opMsg(hostileInsert('o46')).bytes;
    for (const bytes of [
      await compressed(insert, 2, insert.length - 16 + 100),
      await compressed(insert, 2, insert.length - 16 - 10),
      await compressed(insert, 1, insert.length - 16 + 1),
      await compressed(await compressed(insert, 0), 0),
      rawFrame(
        OP_COMPRESSED,
        Buffer.concat([
          Buffer.from([0xdd, 0x07, 0, 0]),
          int32(1000),
          Buffer.from([2]),
          deflateSync(Buffer.alloc(64 * 1024 * 1024)),
        ]),
      ).bytes,
    ]) {
      expect(await refusedOrClosed(bytes)).toBeNull();
    }
    await expectNothingStored('o46');
    await expectGlobexUntouched();
    await expectProxyAlive();
  });

  it('catalogue 47: OP_MSG sections mirror the server: two bodies, no body, duplicate / extra / misplaced sequences, kind 2 and unknown kinds', async () => {
    const doc = { tenantId: B, marker: 'o47' };
    const cases: Array<[string, Buffer]> = [
      [
        'two kind-0 bodies',
        msgFrame([kind0({ insert: 'items', $db: dbName }), kind0({ insert: 'items', documents: [doc], $db: dbName })]),
      ],
      ['no body', msgFrame([kind1('documents', [doc])])],
      [
        'duplicate sequence',
        msgFrame([
          kind0({ insert: 'items', $db: dbName }),
          kind1('documents', [{ marker: 'o47' }]),
          kind1('documents', [doc]),
        ]),
      ],
      [
        'three sequences',
        msgFrame([
          kind0({ insert: 'items', $db: dbName }),
          kind1('documents', [doc]),
          kind1('a', [{}]),
          kind1('b', [{}]),
        ]),
      ],
      [
        'sequence also in body',
        msgFrame([kind0({ insert: 'items', documents: [{ marker: 'o47' }], $db: dbName }), kind1('documents', [doc])]),
      ],
      [
        'sequence also in body, dotted path',
        msgFrame([
          kind0({ update: 'items', updates: [{ q: {}, u: { $set: { marker: 'o47' } }, multi: true }], $db: dbName }),
          kind1('updates.0', [{}]),
        ]),
      ],
      [
        'kind 2 security token',
        msgFrame([
          kind0({ insert: 'items', $db: dbName }),
          Buffer.concat([Buffer.from([2]), Buffer.from(serialize({ $tenant: B }))]),
          kind1('documents', [doc]),
        ]),
      ],
      [
        'unknown kind 3',
        msgFrame([
          kind0({ insert: 'items', $db: dbName }),
          Buffer.concat([Buffer.from([3]), Buffer.from(serialize(doc))]),
        ]),
      ],
      ['documents sequence on find', msgFrame([kind0({ find: 'items', $db: dbName }), kind1('documents', [doc])])],
      [
        'updates sequence on insert',
        msgFrame([
          kind0({ insert: 'items', documents: [{ marker: 'o47' }], $db: dbName }),
          kind1('updates', [{ q: {}, u: { $set: { secret: 'x', marker: 'o47' } }, multi: true }]),
        ]),
      ],
      [
        'deletes sequence on update',
        msgFrame([kind0({ update: 'items', updates: [], $db: dbName }), kind1('deletes', [{ q: {}, limit: 0 }])]),
      ],
    ];
    for (const [label, bytes] of cases) {
      const reply = await refusedOrClosed(bytes);
      if (label === 'unknown kind 3') expect(reply, label).toBeNull(); // the spec: error and close
    }
    await expectNothingStored('o47');
    await expectGlobexUntouched();
    await expectProxyAlive();
  });

  it('catalogue 48: framing lies are refused and never split differently from the server (targeted cases; the mutation fuzz is below, against the fake upstream)', async () => {
    const smuggled = Buffer.from(
      serialize({ insert: 'items', documents: [{ tenantId: B, marker: 'o48' }], $db: dbName }),
    );
    const cases: Array<[string, Buffer]> = [
      [
        'sequence size too small',
        msgFrame([
          kind0({ insert: 'items', $db: dbName }),
          kind1('documents', [{ marker: 'o48' }, { tenantId: B, marker: 'o48' }], -10),
        ]),
      ],
      [
        'sequence size too large',
        msgFrame(
          [kind0({ insert: 'items', $db: dbName }), kind1('documents', [{ marker: 'o48' }], 5)],
          0,
          Buffer.from(serialize({ tenantId: B, marker: 'o48' })),
        ),
      ],
      [
        'trailing bytes after the last section',
        msgFrame([kind0({ ping: 1, $db: 'admin' })], 0, Buffer.concat([Buffer.from([0]), smuggled])),
      ],
      ['trailing bytes after the body', msgFrame([kind0({ ping: 1, $db: 'admin' })], 0, smuggled)],
      [
        'body length shorter than the document',
        (() => {
          const body = Buffer.from(
            serialize({
              insert: 'items',
              documents: [{ marker: 'o48' }],
              $db: dbName,
              z: { tenantId: B, marker: 'o48' },
            }),
          );
          body.writeInt32LE(body.length - 30, 0);
          return msgFrame([kind0(body)]);
        })(),
      ],
      [
        'body length longer than the document',
        (() => {
          const body = Buffer.from(
            serialize({ insert: 'items', documents: [{ tenantId: B, marker: 'o48' }], $db: dbName }),
          );
          body.writeInt32LE(body.length + 4, 0);
          return msgFrame([kind0(body)], 0, Buffer.alloc(4));
        })(),
      ],
      [
        'inner document length lie',
        (() => {
          const body = Buffer.from(
            serialize({ insert: 'items', documents: [{ marker: 'o48', tenantId: B }], $db: dbName }),
          );
          const inner = body.indexOf(Buffer.from('marker\0', 'latin1')) - 5;
          body.writeInt32LE(body.readInt32LE(inner) - 12, inner);
          return msgFrame([kind0(body)]);
        })(),
      ],
    ];
    for (const [label, bytes] of cases) {
      const c = await tp.rawFor(T);
      c.write(bytes);
      const reply = await c.readFrame(2000).catch(() => null);
      if (reply !== null) expect(replyDocument(reply).ok, label).toBe(0);
      c.close();
    }
    // messageLength shorter than the bytes: the rest is read as the next frame, which is garbage.
    {
      const whole = opMsg(hostileInsert('o48')).bytes;
      const lie = Buffer.from(whole);
      lie.writeInt32LE(whole.length - 20, 0);
      const c = await tp.rawFor(T);
      c.write(lie);
      await c.waitClosed(1000).catch(() => undefined);
      c.close();
    }

    await expectNothingStored('o48');
    await expectGlobexUntouched();
    await expectProxyAlive();
  });

  it('catalogue 49: unknown required flag bits close the connection; bad checksums are refused; a checksummed foreign insert is still rewritten', async () => {
    for (const bit of [2, 3, 5, 15]) {
      const c = await tp.rawFor(T);
      c.write(opMsg(hostileInsert('o49'), { flags: 1 << bit }).bytes);
      expect(await c.waitClosed(), `bit ${bit}`).toBe(true);
    }
    expect(await refusedOrClosed(withChecksum(opMsg(hostileInsert('o49')).bytes, true))).toSatisfy(
      (doc: Document | null) => doc === null || doc.ok === 0,
    );
    // A correct checksum does not exempt the message from the checks.
    const c = await tp.rawFor(T);
    c.write(withChecksum(opMsg(hostileInsert('o49')).bytes));
    expect(replyDocument((await c.readFrame())!).ok).toBe(0);
    c.write(
      withChecksum(
        opMsg({ insert: 'items', documents: [{ _id: 'o49-ok', marker: 'o49-ok' }], $db: dbName }, { flags: 1 << 20 })
          .bytes,
      ),
    );
    expect(replyDocument((await c.readFrame())!).n).toBe(1);
    c.close();
    expect(await items().findOne({ _id: 'o49-ok' as never })).toEqual({ _id: 'o49-ok', tenantId: T, marker: 'o49-ok' });
    await items().deleteOne({ _id: 'o49-ok' as never });
    await expectNothingStored('o49');
    await expectGlobexUntouched();
  });

  it('catalogue 50: a w:0 (moreToCome) insert for another tenant is refused and nothing is stored; an untagged one is stamped', async () => {
    const c = await tp.rawFor(T);
    c.write(opMsg(hostileInsert('o50', { writeConcern: { w: 0 } }), { flags: MORE_TO_COME }).bytes);
    c.write(
      opMsg(
        {
          insert: 'items',
          documents: [{ _id: 'o50-seq', tenantId: B, marker: 'o50' }],
          $db: dbName,
          writeConcern: { w: 0 },
        },
        { flags: MORE_TO_COME },
      ).bytes,
    );
    c.write(
      opMsg(
        { insert: 'items', $db: dbName, writeConcern: { w: 0 } },
        {
          flags: MORE_TO_COME,
          sequences: [{ id: 'documents', docs: [{ marker: 'o50' }, { tenantId: B, marker: 'o50' }] }],
        },
      ).bytes,
    );
    // w:0 updates and deletes aimed at B's documents are rewritten like acknowledged ones.
    c.write(
      opMsg(
        {
          update: 'items',
          updates: [{ q: { tenantId: B }, u: { $set: { secret: 'overwritten', marker: 'o50' } }, multi: true }],
          $db: dbName,
          writeConcern: { w: 0 },
        },
        { flags: MORE_TO_COME },
      ).bytes,
    );
    c.write(
      opMsg(
        {
          update: 'items',
          updates: [{ q: { _id: 'b-1' }, u: { $set: { tenantId: T, marker: 'o50' } } }],
          $db: dbName,
          writeConcern: { w: 0 },
        },
        { flags: MORE_TO_COME },
      ).bytes,
    );
    c.write(
      opMsg(
        { delete: 'items', deletes: [{ q: { owner: B }, limit: 0 }], $db: dbName, writeConcern: { w: 0 } },
        { flags: MORE_TO_COME },
      ).bytes,
    );
    const fresh = await tp.rawFor(T);
    fresh.write(
      opMsg(
        { insert: 'w0', documents: [{ _id: 'o50-ok', marker: 'o50-ok' }], $db: dbName, writeConcern: { w: 0 } },
        { flags: MORE_TO_COME },
      ).bytes,
    );
    expect(await waitFor(async () => (await items(dbName, 'w0').findOne({ _id: 'o50-ok' as never })) !== null)).toBe(
      true,
    );
    expect(await items(dbName, 'w0').findOne({ _id: 'o50-ok' as never })).toEqual({
      _id: 'o50-ok',
      tenantId: T,
      marker: 'o50-ok',
    });
    // Let the refused ones have had every chance to arrive.
    await (c.closed
      ? Promise.resolve()
      : (async () => {
          const ping = await c.command(opMsg({ ping: 1, $db: 'admin' })).catch(() => null);
          if (ping !== null) expect(ping.ok).toBe(1);
        })());
    c.close();
    fresh.close();
    await expectNothingStored('o50');
    await expectGlobexUntouched();
  });

  it('catalogue 51: a document pushed over 16 MiB by the tenant stamp is an error, never truncated; 100,000 levels of nesting are refused', async () => {
    // {_id: "o51", pad: "x…"} of exactly 16 MiB before stamping: legal as sent, too large stamped.
    const head = { _id: 'o51', pad: '' };
    const overhead = serialize(head).length;
    const padded = serialize({ _id: 'o51', pad: 'x'.repeat(MAX_BSON - overhead) });
    expect(padded.length).toBe(MAX_BSON);
    const c = await tp.rawFor(T);
    const inBody = await c.command(
      opMsg({ insert: 'big', $db: dbName }, { sequences: [{ id: 'documents', docs: [deserialize(padded)] }] }),
    );
    expect(inBody.ok === 0 || (inBody.writeErrors?.length ?? 0) > 0, JSON.stringify(inBody).slice(0, 300)).toBe(true);
    expect(JSON.stringify(inBody)).toMatch(/10334|BSONObjectTooLarge|too large|exceeds/i);
    // An update that would grow a stored document the same way.
    c.close();
    expect(await items(dbName, 'big').countDocuments()).toBe(0);

    const d = await tp.rawFor(T);
    const depth = 100_000;
    const total = 8 * depth + 5;
    const deep = Buffer.alloc(total);
    for (let i = 0; i < depth; i += 1) {
      deep.writeInt32LE(total - 8 * i, 7 * i);
      deep[7 * i + 4] = 0x03;
      deep.write('a\0', 7 * i + 5, 'latin1');
    }
    deep.writeInt32LE(5, 7 * depth);
    const docs = Buffer.concat([
      Buffer.from(serialize({ marker: 'o51' })).subarray(0, -1),
      Buffer.from([0x03]),
      Buffer.from('d\0'),
      deep,
      Buffer.from([0]),
    ]);
    docs.writeInt32LE(docs.length, 0);
    const body = Buffer.from(serialize({ insert: 'items', $db: dbName }));
    d.write(
      msgFrame([
        kind0(body),
        Buffer.concat([Buffer.from([1]), int32(4 + 10 + docs.length), cstring('documents'), docs]),
      ]),
    );
    const reply = await d.readFrame(10_000).catch(() => null);
    if (reply !== null) expect(replyDocument(reply).ok).toBe(0);
    d.close();
    // A message over maxMessageSizeBytes is closed before it is buffered.
    const e = await tp.rawFor(T);
    const header = Buffer.alloc(16);
    header.writeInt32LE(48_000_001, 0);
    header.writeInt32LE(OP_MSG, 12);
    e.write(header);
    expect(await e.waitClosed()).toBe(true);
    await expectProxyAlive();
    await expectNothingStored('o51');
    await expectGlobexUntouched();
  });

  it('catalogue 52: invalid UTF-8 and NUL in $db, command names, collection names and keys are refused byte-exactly', async () => {
    const bad = Buffer.from([0xc3, 0x28]);
    const insert = (db: string, coll = 'items', doc: Document = { marker: 'o52' }): Buffer =>
      Buffer.from(serialize({ insert: coll, documents: [doc], $db: db }));
    const bodies: Array<[string, Buffer]> = [
      ['invalid UTF-8 in $db', patch(insert(`${dbName}ZZ`), 'ZZ', bad)],
      [
        'invalid UTF-8 in the command name',
        patch(Buffer.from(serialize({ inZZrt: 'items', documents: [{ marker: 'o52' }], $db: dbName })), 'ZZ', bad),
      ],
      ['invalid UTF-8 in the collection', patch(insert(dbName, 'itemsZZ'), 'ZZ', bad)],
      ['invalid UTF-8 in a key', patch(insert(dbName, 'items', { marker: 'o52', kZZ: 1 }), 'ZZ', bad)],
      ['invalid UTF-8 in the tenant key', patch(insert(dbName, 'items', { marker: 'o52', tenantIZZ: B }), 'ZZ', bad)],
      ['NUL in $db', insert(`${dbName}\0globex`)],
      ['NUL in the collection', insert(dbName, 'items\0x')],
      ['NUL in a find $db', Buffer.from(serialize({ find: 'items', $db: `${dbName}\0x` }))],
    ];
    for (const [label, body] of bodies) {
      const c = await tp.rawFor(T);
      const doc = await c.command({ bytes: msgFrame([kind0(body)]), requestId: 0 }).catch(() => null);
      if (doc !== null) expect(doc.ok, label).toBe(0);
      c.close();
    }
    await expectNothingStored('o52');
    await expectGlobexUntouched();
  });

  it('catalogue 53: the command is the first key, case-sensitive; $db exactly once, a non-empty string; $tenant and internal fields refused', async () => {
    const c = await tp.rawFor(T);
    for (const name of ['Find', 'FIND', 'fInd', 'Insert', 'findAndmodify', 'Aggregate']) {
      const doc = await c.command(
        opMsg({ [name]: 'items', documents: [{ tenantId: B, marker: 'o53' }], filter: {}, $db: dbName }),
      );
      expect(doc.ok, name).toBe(0);
      expect(doc.code, name).toBe(59);
    }
    const attempts: Array<[string, Buffer]> = [
      [
        '$db first',
        Buffer.from(serialize({ $db: dbName, insert: 'items', documents: [{ tenantId: B, marker: 'o53' }] })),
      ],
      [
        '$db twice',
        appendElements({ insert: 'items', documents: [{ marker: 'o53' }], $db: dbName }, { $db: `${dbName}x` }),
      ],
      ['numeric $db', Buffer.from(serialize({ insert: 'items', documents: [{ marker: 'o53' }], $db: 5 }))],
      ['empty $db', Buffer.from(serialize({ insert: 'items', documents: [{ marker: 'o53' }], $db: '' }))],
      [
        'document $db',
        Buffer.from(serialize({ insert: 'items', documents: [{ marker: 'o53' }], $db: { db: dbName } })),
      ],
      [
        '$tenant on insert',
        Buffer.from(serialize({ insert: 'items', documents: [{ marker: 'o53' }], $tenant: B, $db: dbName })),
      ],
      ['$tenant as a UUID', Buffer.from(serialize({ find: 'items', $tenant: new UUID(), $db: dbName }))],
      ['$audit', Buffer.from(serialize({ insert: 'items', documents: [{ marker: 'o53' }], $audit: {}, $db: dbName }))],
      [
        'mayBypassWriteBlocking',
        Buffer.from(
          serialize({ insert: 'items', documents: [{ marker: 'o53' }], mayBypassWriteBlocking: true, $db: dbName }),
        ),
      ],
      [
        'duplicate command field',
        appendElements({ insert: 'items', documents: [{ marker: 'o53' }], $db: dbName }, { insert: 'other' }),
      ],
    ];
    for (const [label, body] of attempts) {
      const doc = await c.command({ bytes: msgFrame([kind0(body)]), requestId: 0 });
      expect(doc.ok, label).toBe(0);
      expect(JSON.stringify(doc)).not.toContain(SECRET);
    }
    // $tenant on a read: refused, and B's documents never appear.
    const read = await c.command(opMsg({ find: 'items', filter: {}, $tenant: B, $db: dbName }));
    expect(read.ok).toBe(0);
    expect(read.cursor).toBeUndefined();
    // The aliases the server accepts are accepted and rewritten like their canonical spelling.
    const alias = await c.command(
      opMsg({ findandmodify: 'items', query: {}, update: { $set: { seen: 1 } }, $db: dbName }),
    );
    expect(alias.ok).toBe(1);
    expect(alias.value?._id).toBe('t-1');
    c.close();
    await items().updateOne({ _id: 't-1' as never }, { $unset: { seen: '' } });
    await expectNothingStored('o53');
    await expectGlobexUntouched();
  });
});

/** Top-level key names of a BSON document, read from its bytes (duplicates kept). */
function topLevelKeys(doc: Buffer): string[] {
  const keys: string[] = [];
  let p = 4;
  while (p < doc.length - 1) {
    const type = doc[p]!;
    const nameEnd = doc.indexOf(0, p + 1);
    keys.push(doc.toString('utf8', p + 1, nameEnd));
    p = nameEnd + 1;
    const fixed: Record<number, number> = {
      1: 8,
      7: 12,
      8: 1,
      9: 8,
      10: 0,
      16: 4,
      17: 8,
      18: 8,
      19: 16,
      127: 0,
      255: 0,
    };
    if (type in fixed) p += fixed[type]!;
    else if (type === 2 || type === 13 || type === 14) p += 4 + doc.readInt32LE(p);
    else if (type === 3 || type === 4 || type === 15) p += doc.readInt32LE(p);
    else if (type === 5) p += 5 + doc.readInt32LE(p);
    else if (type === 11) p = doc.indexOf(0, doc.indexOf(0, p) + 1) + 1;
    else if (type === 12) p += 4 + doc.readInt32LE(p) + 12;
    else throw new Error(`BSON type ${type}`);
  }
  return keys;
}

/** The documents of a forwarded insert: from the body's array or a kind-1 `documents` sequence. */
function* insertedDocuments(message: ReceivedMessage): Generator<Buffer> {
  const bytes = message.bytes;
  let p = 20;
  while (p < bytes.length) {
    const kind = bytes[p]!;
    p += 1;
    if (kind === 0) {
      const length = bytes.readInt32LE(p);
      const body = bytes.subarray(p, p + length);
      const documents = deserialize(body, { fieldsAsRaw: { documents: true } }).documents as Buffer[] | undefined;
      for (const value of documents ?? []) yield Buffer.from(value);
      p += length;
    } else {
      const size = bytes.readInt32LE(p);
      const end = p + size;
      let q = bytes.indexOf(0, p + 4) + 1;
      while (q < end) {
        const length = bytes.readInt32LE(q);
        yield bytes.subarray(q, q + length);
        q += length;
      }
      p = end;
    }
  }
}

async function decompressReply(frame: ReceivedFrame): Promise<ReceivedFrame> {
  const { inflateSync } = await import('node:zlib');
  const { uncompress } = await import('snappy');
  const { decompress } = await import('@mongodb-js/zstd');
  const original = frame.bytes.readInt32LE(16);
  const id = frame.bytes[24];
  const data = frame.bytes.subarray(25);
  const inner =
    id === 0
      ? data
      : id === 1
        ? ((await uncompress(data)) as Buffer)
        : id === 2
          ? inflateSync(data)
          : await decompress(data);
  const bytes = Buffer.concat([Buffer.alloc(16), inner]);
  bytes.writeInt32LE(bytes.length, 0);
  bytes.writeInt32LE(original, 12);
  return { length: bytes.length, requestId: frame.requestId, responseTo: frame.responseTo, opCode: original, bytes };
}

// ---------------------------------------------------------------------------------------------
// Behaviour seen on the upstream's side of the proxy: a fake upstream records every byte.

describe('what reaches the upstream (fake upstream)', () => {
  let fake: FakeUpstream;
  let fp: TenantProxy;
  /** The test's answer for the next commands; default: a plausible ok reply. */
  let respond: (message: ReceivedMessage) => Document[] | 'no-reply' | { delayMs: number; replies: Document[] } =
    defaultReply;

  function defaultReply(message: ReceivedMessage): Document[] | 'no-reply' {
    if ((message.flags & MORE_TO_COME) !== 0) return 'no-reply'; // as a server does
    const name = Object.keys(message.body)[0]!;
    if (name === 'find' || name === 'aggregate') {
      return [
        { cursor: { id: Long.fromNumber(0), ns: `${message.body.$db}.${message.body[name]}`, firstBatch: [] }, ok: 1 },
      ];
    }
    if (name === 'insert') return [{ n: 1, ok: 1 }];
    return [{ ok: 1 }];
  }

  beforeAll(async () => {
    fake = await startFakeUpstream((message) => respond(message));
    // The refusal mode of shared-collection statistics (isolation.tenancy.virtualDdl: false).
    fp = await startTenantProxy([T, B], {
      upstream: { uri: fake.uri, maxIdleConnections: 2 },
      isolation: { tenancy: { virtualDdl: false } },
    });
  });

  afterAll(async () => {
    await fp?.stop();
    await fake?.close();
  });

  /** Sends commands as `tenant` on a fresh connection; returns what the upstream received for them. */
  async function sent(
    tenant: string,
    ...commands: Document[]
  ): Promise<{ replies: Document[]; upstream: ReceivedMessage[] }> {
    const before = fake.received.length;
    const c = await fp.rawFor(tenant);
    const replies: Document[] = [];
    for (const command of commands) replies.push(await c.command(opMsg(command)));
    c.close();
    return { replies, upstream: fake.received.slice(before) };
  }

  const lsidBytes = (message: ReceivedMessage): string =>
    Buffer.from((message.body.lsid.id as Binary).buffer).toString('hex');

  it('catalogue 54: the same client lsid (and txnNumber) maps to a different server session per tenant, stably per tenant', async () => {
    const lsid = { id: new UUID() };
    const clientHex = Buffer.from(lsid.id.buffer).toString('hex');
    const txn = { lsid, txnNumber: Long.fromNumber(7), startTransaction: true, autocommit: false };
    const b1 = await sent(B, { insert: 'items', documents: [{ marker: 'b' }], ...txn, $db: 'app' });
    const t1 = await sent(T, { insert: 'items', documents: [{ marker: 't' }], ...txn, $db: 'app' });
    const t2 = await sent(T, { find: 'items', lsid, txnNumber: Long.fromNumber(7), autocommit: false, $db: 'app' });
    const b2 = await sent(B, { find: 'items', lsid, $db: 'app' });
    const tCommit = await sent(T, {
      commitTransaction: 1,
      lsid,
      txnNumber: Long.fromNumber(7),
      autocommit: false,
      $db: 'admin',
    });
    const tAbort = await sent(T, {
      abortTransaction: 1,
      lsid,
      txnNumber: Long.fromNumber(7),
      autocommit: false,
      $db: 'admin',
    });
    const ids = {
      b1: lsidBytes(b1.upstream[0]!),
      b2: lsidBytes(b2.upstream[0]!),
      t1: lsidBytes(t1.upstream[0]!),
      t2: lsidBytes(t2.upstream[0]!),
      tCommit: lsidBytes(tCommit.upstream[0]!),
      tAbort: lsidBytes(tAbort.upstream[0]!),
    };
    expect(ids.t1).not.toBe(ids.b1); // T never reaches B's server session
    expect(ids.t1).toBe(ids.t2); // stable for one tenant (across connections)
    expect(ids.b1).toBe(ids.b2);
    expect(ids.tCommit).toBe(ids.t1); // T's commit / abort reach T's session only
    expect(ids.tAbort).toBe(ids.t1);
    for (const id of Object.values(ids)) expect(id).not.toBe(clientHex); // the client id never travels
    // The upstream id is a well-formed UUID (subtype 4, 16 bytes); txnNumber kept as sent.
    expect((t1.upstream[0]!.body.lsid.id as Binary).sub_type).toBe(4);
    expect((t1.upstream[0]!.body.lsid.id as Binary).buffer.length).toBe(16);
    expect(Number(t1.upstream[0]!.body.txnNumber)).toBe(7);
    // Session lists are mapped the same way (endSessions / refreshSessions).
    const ended = await sent(T, { endSessions: [lsid], $db: 'admin' });
    expect(Buffer.from((ended.upstream[0]!.body.endSessions[0].id as Binary).buffer).toString('hex')).toBe(ids.t1);
  });

  it('catalogue 54: an lsid with fields other than id (uid, txnNumber, txnUUID), or a non-UUID id, is refused and not forwarded', async () => {
    const id = new UUID();
    const bad: Document[] = [
      { id, uid: new Binary(Buffer.alloc(32)) },
      { id, txnNumber: Long.fromNumber(1) },
      { id, txnUUID: new UUID() },
      { uid: new Binary(Buffer.alloc(32)), id },
      { id: 'not-a-uuid' },
      { id: new Binary(Buffer.alloc(16), 0) },
      { id: new Binary(Buffer.alloc(12), 4) },
    ];
    for (const lsid of bad) {
      const { replies, upstream } = await sent(T, { find: 'items', lsid, $db: 'app' });
      expect(replies[0]!.ok, JSON.stringify(lsid)).toBe(0);
      expect(upstream).toEqual([]);
    }
    const { replies, upstream } = await sent(
      T,
      { find: 'items', lsid: 'string', $db: 'app' },
      { endSessions: [{ id, uid: new Binary(Buffer.alloc(32)) }], $db: 'admin' },
    );
    expect(replies.map((r) => r.ok)).toEqual([0, 0]);
    expect(upstream).toEqual([]);
    // Two lsid fields (a JS object cannot hold them): refused.
    const twice = appendElements({ find: 'items', lsid: { id }, $db: 'app' }, { lsid: { id: new UUID() } });
    const c = await fp.rawFor(T);
    const before = fake.received.length;
    expect((await c.command({ bytes: msgFrame([kind0(twice)]), requestId: 0 })).ok).toBe(0);
    expect(fake.received.length).toBe(before);
    c.close();
  });

  it("catalogue 55: replaying another tenant's (lsid, txnNumber) retryable write reaches a different session upstream", async () => {
    const lsid = { id: new UUID() };
    const write = {
      findAndModify: 'items',
      query: { _id: 'b-1' },
      update: { $inc: { n: 1 } },
      new: true,
      lsid,
      txnNumber: Long.fromNumber(1),
      $db: 'app',
    };
    const b = await sent(B, write);
    const t = await sent(T, write);
    expect(lsidBytes(t.upstream[0]!)).not.toBe(lsidBytes(b.upstream[0]!));
    // And T's replay is rewritten like any other write: only T's documents can match.
    expect(JSON.stringify(t.upstream[0]!.body.query)).toContain(T);
    expect(JSON.stringify(t.upstream[0]!.body.query)).not.toContain(B);
  });

  it('catalogue 56: killAllSessions, killAllSessionsByPattern and an empty killSessions are refused, never forwarded; killSessions maps the lsid', async () => {
    const lsid = { id: new UUID() };
    for (const command of [
      { killAllSessions: [], $db: 'admin' },
      { killAllSessions: [{ user: 'proxy', db: 'admin' }], $db: 'admin' },
      { killAllSessionsByPattern: [], $db: 'admin' },
      { killAllSessionsByPattern: [{ lsid }], $db: 'admin' },
      { killSessions: [], $db: 'admin' },
      { reapLogicalSessionCacheNow: 1, $db: 'admin' },
      { refreshLogicalSessionCacheNow: 1, $db: 'admin' },
    ]) {
      const { replies, upstream } = await sent(T, command);
      expect(replies[0]!.ok, Object.keys(command)[0]).toBe(0);
      expect(upstream, Object.keys(command)[0]).toEqual([]);
    }
    // endSessions, refreshSessions and killSessions of B's lsid from T act on T's mapped session, never B's.
    const b = await sent(B, { find: 'items', lsid, $db: 'app' });
    const t = await sent(
      T,
      { endSessions: [lsid], $db: 'admin' },
      { refreshSessions: [lsid], $db: 'admin' },
      { killSessions: [lsid], $db: 'admin' },
    );
    expect(t.upstream).toHaveLength(3);
    for (const message of t.upstream) {
      const list = (message.body.endSessions ?? message.body.refreshSessions ?? message.body.killSessions) as Array<{
        id: Binary;
      }>;
      expect(Buffer.from(list[0]!.id.buffer).toString('hex')).not.toBe(lsidBytes(b.upstream[0]!));
    }
  });

  it('catalogue 57: a forged $clusterTime is stripped before forwarding', async () => {
    const forged = {
      clusterTime: new Timestamp({ t: 0x7fffffff, i: 1 }),
      signature: { hash: new Binary(Buffer.alloc(20, 0xab)), keyId: Long.fromNumber(0) },
    };
    const { replies, upstream } = await sent(
      T,
      { find: 'items', $clusterTime: forged, $db: 'app' },
      { insert: 'items', documents: [{ a: 1 }], $clusterTime: forged, $db: 'app' },
      {
        commitTransaction: 1,
        lsid: { id: new UUID() },
        txnNumber: Long.fromNumber(1),
        autocommit: false,
        $clusterTime: forged,
        $db: 'admin',
      },
      { ping: 1, $clusterTime: forged, $db: 'admin' },
    );
    expect(replies.map((r) => r.ok)).toEqual([1, 1, 1, 1]);
    expect(upstream).toHaveLength(4);
    for (const message of upstream) {
      expect(Object.keys(message.body)).not.toContain('$clusterTime');
      expect(message.bytes.includes(Buffer.from('$clusterTime\0'))).toBe(false);
    }
  });

  it('catalogue 58: pooled upstream connections never cross replies between tenants (concurrent, random upstream delays)', async () => {
    respond = (message) => {
      const name = Object.keys(message.body)[0]!;
      if (name !== 'find') return defaultReply(message);
      return {
        delayMs: Math.floor(Math.random() * 8),
        replies: [
          {
            cursor: {
              id: Long.fromNumber(0),
              ns: `app.items`,
              firstBatch: [{ echo: message.body.comment, filter: message.body.filter }],
            },
            ok: 1,
          },
        ],
      };
    };
    try {
      // A fixed number of requests, not a time window: on a busy machine a window checked too few
      // interleavings (36 of the 100 it asked for) and the proof depended on the CPU.
      const perWorker = 25;
      let checked = 0;
      const worker = async (tenant: string, n: number): Promise<void> => {
        let c = await fp.rawFor(tenant);
        for (let i = 0; i < perWorker; i += 1) {
          const tag = `${tenant}-${n}-${i}`;
          const doc = await c.command(opMsg({ find: 'items', filter: {}, comment: tag, $db: 'app' }));
          const [row] = doc.cursor.firstBatch as Document[];
          expect(row!.echo).toBe(tag); // the reply to this very request
          expect(JSON.stringify(row!.filter)).toContain(`"${tenant}"`); // rewritten for this tenant
          checked += 1;
          if (i % 7 === 6) {
            c.close(); // connections come and go, so upstream connections are reused across tenants
            c = await fp.rawFor(tenant);
          }
        }
        c.close();
      };
      await Promise.all([0, 1, 2, 3].flatMap((n) => [worker(T, n), worker(B, n)]));
      expect(checked).toBe(8 * perWorker);
    } finally {
      respond = defaultReply;
    }
  });

  it('catalogue 50: exhaustAllowed: every streamed reply is policed, and another tenant cannot stream a cursor it does not own', async () => {
    respond = (message) => {
      const name = Object.keys(message.body)[0]!;
      if (name === 'find') return [{ cursor: { id: Long.fromNumber(4242), ns: 'app.items', firstBatch: [] }, ok: 1 }];
      if (name === 'getMore' && (message.flags & EXHAUST_ALLOWED) !== 0) {
        return [1, 2, 3].map((n) => ({
          cursor: { id: Long.fromNumber(n === 3 ? 0 : 4242), ns: 'app.items', nextBatch: [{ n }] },
          ok: 1,
        }));
      }
      return defaultReply(message);
    };
    try {
      const c = await fp.rawFor(T);
      expect((await c.command(opMsg({ find: 'items', $db: 'app' }))).ok).toBe(1);
      // B tries to stream T's cursor: CursorNotFound, nothing forwarded.
      const b = await fp.rawFor(B);
      const before = fake.received.length;
      const stolen = await b.command(
        opMsg({ getMore: Long.fromNumber(4242), collection: 'items', $db: 'app' }, { flags: EXHAUST_ALLOWED }),
      );
      expect(stolen.ok).toBe(0);
      expect(stolen.code).toBe(43);
      expect(fake.received.length).toBe(before);
      b.close();
      // T streams its own.
      c.write(
        opMsg({ getMore: Long.fromNumber(4242), collection: 'items', $db: 'app' }, { flags: EXHAUST_ALLOWED }).bytes,
      );
      const frames = [await c.readFrame(), await c.readFrame(), await c.readFrame()];
      expect(frames.map((f) => replyDocument(f!).cursor.nextBatch[0].n)).toEqual([1, 2, 3]);
      c.close();
    } finally {
      respond = defaultReply;
    }
  });

  it('catalogue 50: moreToCome on a command that is not a write is refused, never forwarded fire-and-forget', async () => {
    // Catalogue 50: "reject moreToCome on non-writes". A fire-and-forget find or aggregate would
    // open upstream cursors no tenant is ever told about (nor registered as owning).
    respond = (message) => ((message.flags & MORE_TO_COME) !== 0 ? 'no-reply' : defaultReply(message));
    try {
      for (const command of [
        { find: 'items', comment: 'o50-mtc', $db: 'app' },
        { aggregate: 'items', pipeline: [], cursor: {}, comment: 'o50-mtc', $db: 'app' },
        { count: 'items', comment: 'o50-mtc', $db: 'app' },
      ]) {
        const d = await fp.rawFor(T);
        const mark = fake.received.length;
        d.write(opMsg(command, { flags: MORE_TO_COME }).bytes);
        await d.waitClosed(200).catch(() => undefined);
        const forwarded = fake.received.slice(mark).filter((m) => m.body.comment === 'o50-mtc');
        expect(forwarded, Object.keys(command)[0]).toEqual([]);
        d.close();
      }
    } finally {
      respond = defaultReply;
    }
  });

  it('catalogue 48: mutation fuzz: whatever the proxy forwards from random corruptions of an insert carries exactly T, once, in every document', async () => {
    const base = opMsg(
      { insert: 'fz', ordered: false, $db: 'app' },
      { sequences: [{ id: 'documents', docs: [{ n: 1 }, { tenantId: T, n: 2, s: 'abc' }, { sub: { tenantId: B } }] }] },
    ).bytes;
    const inBody = opMsg({ insert: 'fz', documents: [{ n: 1 }, { tenantId: T, n: 2 }], $db: 'app' }).bytes;
    const mark = fake.received.length;
    let c = await fp.rawFor(T);
    // A fixed number of corruptions, not a time window whose count depended on the CPU.
    const corruptions = 80;
    let sent = 0;
    while (sent < corruptions) {
      const frame = Buffer.from(sent % 2 === 0 ? base : inBody);
      for (let k = 0; k < 1 + (sent % 4); k += 1) {
        // Length kept intact (targeted cases above cover it), so every frame is consumed whole.
        const at = 4 + Math.floor(Math.random() * (frame.length - 4));
        frame[at] = randomBytes(1)[0]!;
      }
      sent += 1;
      c.write(frame);
      const reply = await c.readFrame(300).catch(() => 'timeout' as const);
      if (reply === 'timeout' || reply === null || c.closed) {
        c.close();
        c = await fp.rawFor(T);
      }
    }
    c.close();
    const forwarded = fake.received.slice(mark);
    expect(sent).toBe(corruptions);
    for (const message of forwarded) {
      expect(Object.keys(message.body)[0]).toBe('insert');
      const documents = [...insertedDocuments(message)];
      for (const doc of documents) {
        const tenantKeys = topLevelKeys(doc).filter((key) => key === 'tenantId');
        expect(tenantKeys).toHaveLength(1);
        expect(deserialize(doc).tenantId).toBe(T);
      }
    }
  });

  it('catalogue 49: unknown optional flag bits and the checksum flag are cleared before forwarding', async () => {
    const c = await fp.rawFor(T);
    const before = fake.received.length;
    c.write(withChecksum(opMsg({ find: 'items', $db: 'app' }, { flags: ((1 << 20) | (1 << 31)) >>> 0 }).bytes));
    expect(replyDocument((await c.readFrame())!).ok).toBe(1);
    c.close();
    const [forwarded] = fake.received.slice(before);
    expect(forwarded!.flags).toBe(0);
  });

  it("catalogue 59: explain at every verbosity is forwarded on shared data; MongoDB's execution figures (counting other tenants) are withheld from the reply", async () => {
    // A MongoDB-shaped executionStats answer: every figure counts B's documents too.
    respond = (message) => {
      if (message.body.explain === undefined) return defaultReply(message);
      return [
        {
          queryPlanner: {
            namespace: 'app.items',
            winningPlan: {
              stage: 'FETCH',
              inputStage: {
                stage: 'IXSCAN',
                indexName: 'mtp_t_0123456789abcdef01234567',
                keyPattern: { tenantId: 1, bSecretKey: 1 },
              },
            },
          },
          executionStats: {
            nReturned: 1,
            totalDocsExamined: 4242,
            totalKeysExamined: 4242,
            executionTimeMillis: 9,
            executionStages: { stage: 'FETCH', nReturned: 1, docsExamined: 4242, works: 4243 },
          },
          serverInfo: { host: 'upstream-host-0', port: 27017, version: '7.0.0' },
          ok: 1,
        },
      ];
    };
    try {
      for (const verbosity of ['executionStats', 'allPlansExecution']) {
        for (const inner of [
          { find: 'items', filter: {} },
          { count: 'items' },
          { aggregate: 'items', pipeline: [], cursor: {} },
          { distinct: 'items', key: 'x' },
        ]) {
          const { replies, upstream } = await sent(T, { explain: inner, verbosity, $db: 'app' });
          const what = `${verbosity} ${Object.keys(inner)[0]}`;
          expect(replies[0]!.ok, what).toBe(1);
          expect(upstream[0]!.body.verbosity, what).toBe(verbosity);
          const text = JSON.stringify(replies[0]);
          for (const hidden of ['4242', '4243', 'mtp_t_', 'bSecretKey', 'upstream-host-0'])
            expect(text, what).not.toContain(hidden);
          expect(replies[0]!.executionStats, what).toEqual({ nReturned: 1, executionStages: { stage: 'FETCH' } });
          expect(replies[0]!.mtpWithheld.fields, what).toEqual([
            'docsExamined',
            'executionTimeMillis',
            'nReturned',
            'totalDocsExamined',
            'totalKeysExamined',
            'works',
          ]);
        }
      }
    } finally {
      respond = defaultReply;
    }
    // No verbosity: the server's default (allPlansExecution), figures withheld as above.
    const { upstream } = await sent(T, { explain: { find: 'items', filter: { tenantId: B } }, $db: 'app' });
    expect(upstream[0]!.body.verbosity).toBeUndefined();
    expect(JSON.stringify(upstream[0]!.body.explain.filter)).toContain(`{"tenantId":{"$eq":"${T}"}}`);
    // $collStats / $indexStats and the stats commands are refused.
    for (const command of [
      { aggregate: 'items', pipeline: [{ $collStats: { count: {} } }], cursor: {}, $db: 'app' },
      { aggregate: 'items', pipeline: [{ $indexStats: {} }], cursor: {}, $db: 'app' },
      { collStats: 'items', $db: 'app' },
      { dbStats: 1, $db: 'app' },
      { dataSize: 'app.items', $db: 'app' },
    ]) {
      const result = await sent(T, command);
      expect(result.replies[0]!.ok, JSON.stringify(command)).toBe(0);
      expect(result.upstream).toEqual([]);
    }
  });

  it('catalogue 59: count without a query and estimatedDocumentCount are sent with the tenant query', async () => {
    const { upstream } = await sent(
      T,
      { count: 'items', $db: 'app' },
      { count: 'items', query: {}, $db: 'app' },
      { count: 'items', query: { tenantId: B }, $db: 'app' },
    );
    expect(upstream).toHaveLength(3);
    for (const message of upstream) expect(JSON.stringify(message.body.query)).toContain(`{"tenantId":{"$eq":"${T}"}}`);
  });

  it('catalogue 60: conversion errors never quote the value of another tenant (MongoDB-shaped messages)', async () => {
    respond = (message) => {
      const name = Object.keys(message.body)[0]!;
      if (name !== 'find' && name !== 'aggregate') return defaultReply(message);
      const errmsg =
        message.body.comment === 'date'
          ? "Error parsing date string 'globex-secret-value'; 0: Unexpected character 'g'"
          : "Failed to parse number 'globex-secret-value' in $convert with no onError value: Did not consume whole string.";
      return [{ ok: 0, errmsg, code: 241, codeName: 'ConversionFailure' }];
    };
    try {
      const { replies } = await sent(
        T,
        { find: 'items', filter: { $expr: { $eq: [{ $toInt: '$x' }, 1] } }, $db: 'app' },
        {
          aggregate: 'items',
          pipeline: [{ $project: { d: { $dateFromString: { dateString: '$x' } } } }],
          cursor: {},
          comment: 'date',
          $db: 'app',
        },
      );
      for (const reply of replies) {
        expect(reply.ok).toBe(0);
        expect(reply.code).toBe(241);
        expect(JSON.stringify(reply)).not.toContain('globex-secret');
      }
    } finally {
      respond = defaultReply;
    }
    // A hint on an index that does not start with the tenant is refused (B's documents would be evaluated first).
    const hinted = await sent(T, {
      find: 'items',
      filter: { $expr: { $eq: [{ $toInt: '$x' }, 1] } },
      hint: { x: 1 },
      $db: 'app',
    });
    expect(hinted.replies[0]!.ok).toBe(0);
    expect(hinted.upstream).toEqual([]);
  });

  it("catalogue 61: a MongoDB-shaped E11000 on another tenant's _id or unique key reaches the client without values or keyValue", async () => {
    const dupMessage = 'E11000 duplicate key error collection: app.items index: _id_ dup key: { _id: "b-secret-id" }';
    const emailMessage =
      'E11000 duplicate key error collection: app.users index: tenantId_1_email_1 dup key: { tenantId: "globex", email: "ceo@globex.example" }';
    respond = (message) => {
      const name = Object.keys(message.body)[0]!;
      if (name === 'insert' && message.body.insert === 'items') {
        return [
          {
            n: 0,
            writeErrors: [
              { index: 0, code: 11000, keyPattern: { _id: 1 }, keyValue: { _id: 'b-secret-id' }, errmsg: dupMessage },
            ],
            ok: 1,
          },
        ];
      }
      if (name === 'insert') {
        return [{ n: 0, writeErrors: [{ index: 0, code: 11000, errmsg: emailMessage }], ok: 1 }];
      }
      if (name === 'findAndModify' || name === 'update') {
        return [
          {
            ok: 0,
            code: 11000,
            codeName: 'DuplicateKey',
            keyPattern: { _id: 1 },
            keyValue: { _id: 'b-secret-id' },
            errmsg: dupMessage,
          },
        ];
      }
      return defaultReply(message);
    };
    try {
      const { replies } = await sent(
        T,
        { insert: 'items', documents: [{ _id: 'b-secret-id' }], $db: 'app' },
        { insert: 'users', documents: [{ email: 'ceo@globex.example' }], $db: 'app' },
        { findAndModify: 'items', query: { _id: 'b-secret-id' }, update: { $set: { a: 1 } }, upsert: true, $db: 'app' },
        { update: 'items', updates: [{ q: { _id: 'b-secret-id' }, u: { $set: { a: 1 } }, upsert: true }], $db: 'app' },
      );
      for (const reply of replies) {
        const text = JSON.stringify(reply);
        expect(text).toContain('E11000');
        expect(text).not.toContain('b-secret-id');
        expect(text).not.toContain('ceo@globex');
        expect(text).not.toContain('"globex"');
        expect(text).not.toContain('keyValue');
      }
      expect(replies[0]!.writeErrors[0].code).toBe(11000);
      expect(replies[0]!.writeErrors[0].errmsg).toMatch(/index: _id_ dup key: \{ _id: <redacted> \}/);
    } finally {
      respond = defaultReply;
    }
  });

  it('catalogue 62: timing attacks: $where / $function refused at once; maxTimeMS capped or added on every command', async () => {
    for (const filter of [
      { $where: 'sleep(5000) || true' },
      { $or: [{ a: 1 }, { $where: 'sleep(5000) || true' }] },
      { $expr: { $function: { body: 'function(){ while(true){} }', args: [], lang: 'js' } } },
      { a: { $where: 'x' } },
    ]) {
      // "At once": refused by the proxy, nothing reached the upstream.
      const { replies, upstream } = await sent(T, { find: 'items', filter, $db: 'app' });
      expect(replies[0]!.ok).toBe(0);
      expect(upstream).toEqual([]);
    }
    const { upstream } = await sent(
      T,
      { find: 'items', filter: { s: { $regex: '^(a+)+$' } }, $db: 'app' },
      { find: 'items', filter: {}, maxTimeMS: 10_000_000, $db: 'app' },
      { find: 'items', filter: {}, maxTimeMS: 0, $db: 'app' },
      { find: 'items', filter: {}, maxTimeMS: Long.fromString('9000000000000'), $db: 'app' },
      { aggregate: 'items', pipeline: [{ $match: { s: { $regex: '^(a+)+$' } } }], cursor: {}, $db: 'app' },
      { count: 'items', $db: 'app' },
    );
    expect(upstream.map((m) => Number(m.body.maxTimeMS))).toEqual([60_000, 60_000, 60_000, 60_000, 60_000, 60_000]);
    const small = await sent(T, { find: 'items', filter: {}, maxTimeMS: 5, $db: 'app' });
    expect(small.upstream[0]!.body.maxTimeMS).toBe(5);
    const sleep = await sent(T, { sleep: 1, secs: 10, $db: 'admin' }, { sleep: 1, millis: 10_000, $db: 'app' });
    expect(sleep.replies.map((r) => r.ok)).toEqual([0, 0]);
    expect(sleep.upstream).toEqual([]);
  });

  it('catalogue 63: log, profiler and query-analytics commands and stages are refused and never forwarded; getLog and currentOp are answered empty by the proxy', async () => {
    // The proxy's own answers: no log line and no operation of anyone, nothing forwarded.
    for (const command of [
      { getLog: 'global', $db: 'admin' },
      { getLog: 'startupWarnings', $db: 'admin' },
      { currentOp: 1, $all: true, $db: 'admin' },
    ]) {
      const { replies, upstream } = await sent(T, command);
      expect(replies[0]!.ok, JSON.stringify(command)).toBe(1);
      expect(replies[0]!.log ?? replies[0]!.inprog, JSON.stringify(command)).toEqual([]);
      expect(upstream, JSON.stringify(command)).toEqual([]);
    }
    const commands: Document[] = [
      { clearLog: 'global', $db: 'admin' },
      { profile: 2, $db: 'app' },
      { profile: -1, $db: 'app' },
      { find: 'system.profile', $db: 'app' },
      { aggregate: 'system.profile', pipeline: [], cursor: {}, $db: 'app' },
      { killOp: 1, op: 12345, $db: 'admin' },
      { logApplicationMessage: 'x', $db: 'admin' },
      { aggregate: 1, pipeline: [{ $currentOp: { allUsers: true } }], cursor: {}, $db: 'admin' },
      { aggregate: 1, pipeline: [{ $currentOp: {} }], cursor: {}, $db: 'app' },
      { aggregate: 'items', pipeline: [{ $planCacheStats: {} }], cursor: {}, $db: 'app' },
      { aggregate: 1, pipeline: [{ $queryStats: {} }], cursor: {}, $db: 'admin' },
      { aggregate: 1, pipeline: [{ $listSampledQueries: {} }], cursor: {}, $db: 'admin' },
      { aggregate: 1, pipeline: [{ $listSessions: { allUsers: true } }], cursor: {}, $db: 'config' },
      { aggregate: 1, pipeline: [{ $listLocalSessions: { allUsers: true } }], cursor: {}, $db: 'admin' },
      {
        aggregate: 'items',
        pipeline: [{ $match: {} }, { $lookup: { from: 'x', pipeline: [{ $currentOp: {} }], as: 'o' } }],
        cursor: {},
        $db: 'app',
      },
      { planCacheListFilters: 'items', $db: 'app' },
      { setProfilingFilterGlobally: 1, filter: {}, $db: 'admin' },
    ];
    for (const command of commands) {
      const { replies, upstream } = await sent(T, command);
      expect(replies[0]!.ok, JSON.stringify(command)).toBe(0);
      expect(upstream, JSON.stringify(command)).toEqual([]);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// 7. Sessions end to end (54-58) and 8. Leaks (59-63) against the real upstream.

describe('sessions and leaks end to end', () => {
  it.skipIf(lacks('transactions', 'transactions need a replica set (or the DocumentDB gateway); FerretDB has none'))(
    "catalogue 54: T reusing B's lsid and txnNumber inside a transaction joins nothing: B's writes stay invisible and B's transaction is neither committed nor aborted by T",
    async () => {
      const coll = 'txn54';
      await items(dbName, coll).insertOne({ _id: 'seed' as never, tenantId: B });
      const bClient = tp.clientFor(B);
      const session = bClient.startSession();
      try {
        session.startTransaction();
        await bClient
          .db(dbName)
          .collection(coll)
          .insertOne({ _id: 'b-txn' as never, marker: 'b-txn' }, { session });
        const lsid = session.id!;
        const txnNumber = (session as unknown as { serverSession: { txnNumber: number } }).serverSession.txnNumber;
        const t = await tp.rawFor(T);
        const join = await t.command(
          opMsg({
            find: coll,
            filter: {},
            lsid,
            txnNumber: Long.fromNumber(txnNumber),
            autocommit: false,
            $db: dbName,
          }),
        );
        expect(JSON.stringify(join)).not.toContain('b-txn');
        const commit = await t.command(
          opMsg({ commitTransaction: 1, lsid, txnNumber: Long.fromNumber(txnNumber), autocommit: false, $db: 'admin' }),
        );
        expect(commit.ok).toBe(0);
        const abort = await t.command(
          opMsg({ abortTransaction: 1, lsid, txnNumber: Long.fromNumber(txnNumber), autocommit: false, $db: 'admin' }),
        );
        expect(abort.ok).toBe(0);
        t.close();
        // Not committed by T: invisible outside the transaction.
        expect(await items(dbName, coll).findOne({ _id: 'b-txn' as never })).toBeNull();
        // Not aborted by T: B can still commit.
        await session.commitTransaction();
        expect(await items(dbName, coll).findOne({ _id: 'b-txn' as never })).toEqual({
          _id: 'b-txn',
          tenantId: B,
          marker: 'b-txn',
        });
      } finally {
        await session.endSession();
      }
    },
  );

  it("catalogue 55: T replaying B's (lsid, txnNumber) findAndModify never receives B's document", async () => {
    const lsid = { id: new UUID() };
    const write = (tenantQuery: Document): Document => ({
      findAndModify: 'items',
      query: tenantQuery,
      update: { $inc: { replay55: 1 } },
      new: true,
      lsid,
      txnNumber: Long.fromNumber(1),
      $db: dbName,
    });
    const b = await tp.rawFor(B);
    const bReply = await b.command(opMsg(write({ _id: 'b-1' })));
    b.close();
    expect(bReply.ok).toBe(1);
    const t = await tp.rawFor(T);
    for (const query of [{ _id: 'b-1' }, {}]) {
      const replay = await t.command(opMsg(write(query)));
      expect(JSON.stringify(replay)).not.toContain(SECRET);
      expect(replay.value?._id).not.toBe('b-1');
    }
    t.close();
    const stored = await items().findOne({ _id: 'b-1' as never });
    expect(stored?.replay55).toBe(1); // executed once, by B only
    await items().updateMany({}, { $unset: { replay55: '' } });
    await expectGlobexUntouched();
  });

  it('catalogue 56: killAllSessions is refused; B keeps working', async () => {
    const t = tp.clientFor(T);
    await expect(t.db('admin').command({ killAllSessions: [] })).rejects.toThrow(/refused|killAllSessions/);
    await expect(t.db('admin').command({ killAllSessionsByPattern: [] })).rejects.toThrow(/refused/);
    await expect(t.db('admin').command({ killSessions: [] })).rejects.toThrow(/refused/);
    expect(await tp.clientFor(B).db(dbName).collection('items').countDocuments()).toBe(2);
  });

  it('catalogue 57: a forged $clusterTime does not break or reach the real upstream', async () => {
    const c = await tp.rawFor(T);
    const doc = await c.command(
      opMsg({
        find: 'items',
        filter: {},
        $clusterTime: {
          clusterTime: new Timestamp({ t: 0x7fffffff, i: 1 }),
          signature: { hash: new Binary(Buffer.alloc(20)), keyId: Long.fromNumber(1) },
        },
        $db: dbName,
      }),
    );
    c.close();
    expect(doc.ok).toBe(1);
    expect(doc.cursor.firstBatch.map((d: Document) => d._id)).toEqual(['t-1']);
  });

  it('catalogue 58: two tenants hammering one proxy concurrently (pooled upstream connections) each see only their own documents', async () => {
    const coll = 'pool58';
    const small = await startTenantProxy([T, B], { upstream: { maxIdleConnections: 1 } });
    try {
      const deadline = Date.now() + 1500;
      const worker = async (tenant: string, n: number): Promise<number> => {
        const client = small.clientFor(tenant, { maxPoolSize: 3 });
        const c = client.db(dbName).collection(coll);
        let ops = 0;
        for (let i = 0; Date.now() < deadline; i += 1) {
          await c.insertOne({ who: tenant, n, i });
          const seen = await c
            .find({}, { projection: { _id: 0 } })
            .limit(50)
            .toArray();
          for (const doc of seen) expect(doc.who).toBe(tenant);
          expect(await c.countDocuments({ who: tenant === T ? B : T })).toBe(0);
          ops += 1;
        }
        return ops;
      };
      const counts = await Promise.all([0, 1, 2].flatMap((n) => [worker(T, n), worker(B, n)]));
      expect(counts.every((n) => n > 0)).toBe(true);
      for (const tenant of [T, B]) {
        const stored = await items(dbName, coll).find({ who: tenant }).toArray();
        expect(stored.length).toBeGreaterThan(0);
        for (const doc of stored) expect(doc.tenantId).toBe(tenant);
      }
    } finally {
      await small.stop();
    }
  });

  it('catalogue 59: explain executionStats in a shared namespace shows no figure counting other tenants; count and estimatedDocumentCount count only T', async () => {
    const t = tp.clientFor(T).db(dbName);
    for (const verbosity of ['executionStats', 'allPlansExecution'] as const) {
      // The figures' names may appear in the proxy's own note of what it withheld, never as figures.
      const stats = JSON.stringify(await t.collection('items').find({}).explain(verbosity), withoutNote);
      expect(stats).not.toContain(SECRET);
      expect(stats).not.toMatch(/totalDocsExamined|totalKeysExamined|"docsExamined"|"keysExamined"/);
    }
    const plan = await t.collection('items').find({ tenantId: B }).explain('queryPlanner');
    const planText = JSON.stringify(plan);
    expect(planText).not.toContain(SECRET);
    expect(planText).not.toMatch(/totalDocsExamined|executionStats/);
    const c = await tp.rawFor(T);
    const raw = await c.command(opMsg({ explain: { find: 'items', filter: {} }, $db: dbName }));
    c.close();
    expect(raw.ok).toBe(1);
    expect(JSON.stringify(raw, withoutNote)).not.toMatch(
      /totalDocsExamined|totalKeysExamined|"docsExamined"|"keysExamined"/,
    );

    expect(await t.collection('items').estimatedDocumentCount()).toBe(1);
    expect(await t.collection('items').countDocuments()).toBe(1);
    expect(await t.collection('items').countDocuments({ tenantId: B })).toBe(0);
    expect((await t.command({ count: 'items' })).n).toBe(1);
    expect((await t.command({ count: 'items', query: { tenantId: B } })).n).toBe(0);
    // Statistics are T's own figures, computed from its documents (issue 13), never the upstream's.
    expect((await t.command({ collStats: 'items' })).count).toBe(1);
    const stats = await t.command({ dbStats: 1 });
    expect(stats.collections).toBe((await t.listCollections().toArray()).length);
    expect(JSON.stringify(stats)).not.toContain(SECRET);
    expect(await items().countDocuments()).toBeGreaterThanOrEqual(3); // the upstream really holds more
  });

  it('catalogue 60: an error oracle on B\'s values ("secret") never shows them to T', async () => {
    const c = await tp.rawFor(T);
    for (const command of [
      { find: 'items', filter: { $expr: { $eq: [{ $toInt: '$x' }, 1] } }, $db: dbName },
      { find: 'items', filter: { $expr: { $eq: [{ $toInt: '$x' }, 1] } }, hint: { x: 1 }, $db: dbName },
      { aggregate: 'items', pipeline: [{ $project: { v: { $toInt: '$secret' } } }], cursor: {}, $db: dbName },
      {
        aggregate: 'items',
        pipeline: [{ $project: { v: { $dateFromString: { dateString: '$secret' } } } }],
        cursor: {},
        $db: dbName,
      },
    ]) {
      const reply = await c.command(opMsg(command));
      const text = JSON.stringify(reply);
      expect(text).not.toContain(SECRET);
      expect(text).not.toContain('"secret"');
    }
    c.close();
  });

  it("catalogue 61: a duplicate-key error on B's _id reaches T without B's values (no _id value, no keyValue) and changes nothing", async () => {
    const t = await tp.rawFor(T);
    const inserted = await t.command(
      opMsg({ insert: 'items', documents: [{ _id: 'b-1', marker: 'o61' }], $db: dbName }),
    );
    const kv = await t.command(
      opMsg(
        { insert: 'items', $db: dbName },
        { sequences: [{ id: 'documents', docs: [{ _id: 'b-2', marker: 'o61' }] }] },
      ),
    );
    t.close();
    for (const reply of [inserted, kv]) {
      expect(reply.writeErrors?.[0]?.code ?? reply.code).toBe(11000);
      const text = JSON.stringify(reply);
      expect(text).not.toMatch(/b-1|b-2/);
      expect(text).not.toContain(SECRET);
      expect(text).not.toContain('keyValue');
      expect(text).not.toContain(B);
    }
    // The driver shows the same: an error, no values.
    const error = await tp
      .clientFor(T)
      .db(dbName)
      .collection('items')
      .insertOne({ _id: 'b-1' as never })
      .then(
        () => null,
        (e: unknown) => e as { code?: number; message: string; keyValue?: unknown; errInfo?: unknown },
      );
    expect(error?.code).toBe(11000);
    expect(error?.message).not.toContain('b-1');
    expect(error?.keyValue).toBeUndefined();
    await expectNothingStored('o61');
    await expectGlobexUntouched();
  });

  it('catalogue 62: $where sleep is refused before it can run; the regex cap is enforced by maxTimeMS', async () => {
    const t = tp.clientFor(T).db(dbName).collection('items');
    // Refused before it can run: nothing was forwarded upstream.
    for (const filter of [
      { $where: 'sleep(5000) || true' },
      { $expr: { $function: { body: 'function(){ sleep(5000); return true }', args: [], lang: 'js' } } },
    ]) {
      const { outcome, forwarded } = await forwardedBy(tp.proxy.proxy, () => t.find(filter).toArray());
      expect(forwarded, JSON.stringify(filter)).toBe(0);
      await expect(settled(outcome)).rejects.toThrow(/refused/);
    }
    await expect(t.find({ x: 1 }).hint({ x: 1 }).toArray()).rejects.toThrow(/refused/);
  });

  it('catalogue 63: profile, system.profile and $currentOp are refused; getLog and currentOp show nothing', async () => {
    const t = tp.clientFor(T);
    expect((await t.db('admin').command({ getLog: 'global' })).log).toEqual([]);
    expect((await t.db('admin').command({ currentOp: 1, $all: true })).inprog).toEqual([]);
    for (const [db, command] of [
      [dbName, { profile: 2 }],
      [dbName, { find: 'system.profile' }],
      ['admin', { aggregate: 1, pipeline: [{ $currentOp: { allUsers: true } }], cursor: {} }],
    ] as const) {
      await expect(t.db(db).command(command), JSON.stringify(command)).rejects.toThrow(/refused/);
    }
    expect(
      await direct
        .db(dbName)
        .collection('system.profile')
        .countDocuments()
        .catch(() => 0),
    ).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------
// 64. Database-per-tenant mapping

describe('catalogue 64: database per tenant', () => {
  const run = Math.random().toString(36).slice(2, 8);
  // Tenants chosen so "{tenant}_{db}" would collide without escaping: "<a>" + "b_c" vs "<a>_b" + "c".
  const A = `a${run}`;
  const AB = `a${run}_b`;
  let dp: TenantProxy;
  const app = `app${run}`;

  beforeAll(async () => {
    dp = await startTenantProxy([T, B, A, AB], { isolation: { defaultModel: 'database-per-tenant' } });
    await dp
      .clientFor(B)
      .db(app)
      .collection('items')
      .insertOne({ _id: 'b-64' as never, secret: SECRET });
    await dp
      .clientFor(T)
      .db(app)
      .collection('items')
      .insertOne({ _id: 't-64' as never, mine: true });
  });

  afterAll(async () => {
    for (const db of [
      `${T}_${app}`,
      `${B}_${app}`,
      `${A}_b_c`,
      `${A}-5fb_c`,
      `${A}_${A}-5fb_c`,
      `${A}_b-5fb_c`,
      `${T}_${B}_${app}`,
      `${T}_${B.toUpperCase()}_${app}`,
      `${T}_Globex_${app}`,
      `${T}_${T}_${app}`,
      `${T}_${B}`, // T's own database "globex" (a $merge into {db: "globex"} is mapped there)
    ]) {
      await direct
        ?.db(db)
        .dropDatabase()
        .catch(() => undefined);
    }
    await dp?.stop();
  });

  async function globexUntouched(): Promise<void> {
    expect(await direct.db(`${B}_${app}`).collection('items').find().toArray()).toEqual([
      { _id: 'b-64', secret: SECRET },
    ]);
    expect((await direct.db(`${B}_${app}`).listCollections().toArray()).map((c) => c.name)).toEqual(['items']);
  }

  it("catalogue 64: a $db naming another tenant's physical database never reaches it (any case)", async () => {
    // The catalogue asks for a refusal; the resolver maps every client database injectively into
    // T's own space instead ("globex_app" → "acme_globex_app"), which can never be B's. Either
    // outcome is accepted here; what is proven is that B's database is neither read nor written.
    const t = await dp.rawFor(T);
    for (const db of [`${B}_${app}`, `${B.toUpperCase()}_${app}`, `Globex_${app}`, `${T}_${app}`]) {
      for (const command of [
        { find: 'items', filter: {}, $db: db },
        { insert: 'items', documents: [{ marker: 'o64' }], $db: db },
        { delete: 'items', deletes: [{ q: {}, limit: 0 }], $db: db },
        { listCollections: 1, $db: db },
        { drop: 'items', $db: db },
        { dropDatabase: 1, $db: db },
      ]) {
        const reply = await t.command(opMsg(command));
        expect(JSON.stringify(reply)).not.toContain(SECRET);
        expect(JSON.stringify(reply)).not.toContain('b-64');
        if (reply.ok === 1 && reply.cursor !== undefined) {
          expect(reply.cursor.ns.startsWith(`${db}.`), `${db}: ns ${reply.cursor.ns} is the client's name`).toBe(true);
        }
      }
      // Whatever T wrote under that name is in T's own physical database.
      const inserted = await t.command(opMsg({ insert: 'probe', documents: [{ marker: 'o64-own' }], $db: db }));
      if (inserted.ok === 0) {
        // MongoDB and DocumentDB refuse a database whose name differs only in case from an
        // existing one (here T's own "globex_app"); the message names T's databases as T does.
        expect(inserted.code, JSON.stringify(inserted)).toBe(13297);
        expect(inserted.errmsg).not.toContain(`${T}_`);
        expect(inserted.errmsg).toContain(`[${db}]`);
        continue;
      }
      expect(
        await direct.db(`${T}_${db}`).collection('probe').countDocuments({ marker: 'o64-own' }),
        `${db}: ${JSON.stringify(inserted)}`,
      ).toBe(1);
    }
    t.close();
    await globexUntouched();
    expect(await direct.db(`${B}_${app}`).collection('probe').countDocuments()).toBe(0);
  });

  it('catalogue 64: every embedded namespace naming another database is refused: $lookup from.db, $merge into.db, $out db, renameCollection to, bulkWrite nsInfo, mapReduce out.db', async () => {
    const t = await dp.rawFor(T);
    const foreign = `${B}_${app}`;
    const attempts: Document[] = [
      {
        aggregate: 'items',
        pipeline: [
          { $lookup: { from: { db: foreign, coll: 'items' }, localField: '_id', foreignField: '_id', as: 'x' } },
        ],
        cursor: {},
        $db: app,
      },
      {
        aggregate: 'items',
        pipeline: [{ $lookup: { from: { db: app, coll: 'items' }, pipeline: [], as: 'x' } }],
        cursor: {},
        $db: app,
      },
      {
        aggregate: 'items',
        pipeline: [{ $lookup: { from: { db: 'local', coll: 'oplog.rs' }, pipeline: [], as: 'x' } }],
        cursor: {},
        $db: app,
      },
      {
        aggregate: 'items',
        pipeline: [{ $unionWith: { coll: { db: foreign, coll: 'items' } } }],
        cursor: {},
        $db: app,
      },
      {
        aggregate: 'items',
        pipeline: [
          {
            $graphLookup: {
              from: { db: foreign, coll: 'items' },
              startWith: '$_id',
              connectFromField: '_id',
              connectToField: '_id',
              as: 'x',
            },
          },
        ],
        cursor: {},
        $db: app,
      },
      {
        aggregate: 'items',
        pipeline: [{ $merge: { into: { db: foreign, coll: 'items' }, whenMatched: 'replace' } }],
        cursor: {},
        $db: app,
      },
      { aggregate: 'items', pipeline: [{ $merge: { into: { db: B, coll: 'items' } } }], cursor: {}, $db: app },
      { aggregate: 'items', pipeline: [{ $out: { db: foreign, coll: 'items' } }], cursor: {}, $db: app },
      { aggregate: 'items', pipeline: [{ $out: { db: 'admin', coll: 'x' } }], cursor: {}, $db: app },
      {
        aggregate: 'items',
        pipeline: [{ $facet: { a: [{ $lookup: { from: { db: foreign, coll: 'items' }, pipeline: [], as: 'x' } }] } }],
        cursor: {},
        $db: app,
      },
      { renameCollection: `${app}.items`, to: `${foreign}.items`, dropTarget: true, $db: 'admin' },
      { renameCollection: `${foreign}.items`, to: `${app}.stolen`, $db: 'admin' },
      { renameCollection: `${app}.items`, to: `${B}.items`, $db: 'admin' },
      {
        mapReduce: 'items',
        map: 'function(){}',
        reduce: 'function(){}',
        out: { replace: 'items', db: foreign },
        $db: app,
      },
    ];
    for (const command of attempts) {
      const reply = await t.command(opMsg(command));
      expect(JSON.stringify(reply)).not.toContain(SECRET);
      const stage = ((command.pipeline as Document[] | undefined)?.[0] ?? {}) as Document;
      const target = (stage.$merge?.into ?? stage.$out) as Document | undefined;
      if (target !== undefined && target.db !== 'admin' && reply.ok === 1) {
        // Like $db, a $merge / $out target database is mapped into T's own space (the resolver's
        // design, test/unit/rewrite/pipeline.test.ts): "globex_app" is T's database of that name.
        // Upstreams without the stage (FerretDB v1) refuse it instead. B's data is checked below.
        const written = await direct
          .db(`${T}_${target.db as string}`)
          .listCollections()
          .toArray();
        expect(
          written.map((c) => c.name),
          JSON.stringify(command).slice(0, 120),
        ).toContain(target.coll);
        continue;
      }
      expect(reply.ok, JSON.stringify(command).slice(0, 120)).toBe(0);
    }
    const bulk = await t.command(
      opMsg(
        { bulkWrite: 1, $db: 'admin' },
        {
          sequences: [
            {
              id: 'ops',
              docs: [
                { insert: 0, document: { marker: 'o64' } },
                { delete: 1, filter: {}, multi: true },
              ],
            },
            { id: 'nsInfo', docs: [{ ns: `${app}.items` }, { ns: `${foreign}.items` }] },
          ],
        },
      ),
    );
    expect(bulk.ok).toBe(0);
    t.close();
    await globexUntouched();
    expect(await direct.db(`${T}_${app}`).collection('items').countDocuments({ marker: 'o64' })).toBe(0);
  });

  it('catalogue 64: the mapping is injective: tenant "a" + db "b_c" and tenant "a_b" + db "c" land in different physical databases', async () => {
    await dp
      .clientFor(A)
      .db('b_c')
      .collection('k')
      .insertOne({ _id: 'from-a' as never });
    await dp
      .clientFor(AB)
      .db('c')
      .collection('k')
      .insertOne({ _id: 'from-a_b' as never });
    const names = (await direct.db('admin').admin().listDatabases({ nameOnly: true })).databases.map((d) => d.name);
    expect(names).toContain(`${A}_b_c`);
    expect(names).toContain(`${A}-5fb_c`);
    expect(await direct.db(`${A}_b_c`).collection('k').find().toArray()).toEqual([{ _id: 'from-a' }]);
    expect(await direct.db(`${A}-5fb_c`).collection('k').find().toArray()).toEqual([{ _id: 'from-a_b' }]);
    // Each sees only its own, through its own names.
    expect(await dp.clientFor(A).db('b_c').collection('k').find().toArray()).toEqual([{ _id: 'from-a' }]);
    expect(await dp.clientFor(AB).db('c').collection('k').find().toArray()).toEqual([{ _id: 'from-a_b' }]);
    // "a" cannot reach "a_b"'s physical database by naming it, nor by naming its escaped form.
    for (const name of [`${A}-5fb_c`, 'b-5fb_c', `${A}_b_c`]) {
      const found = await dp
        .clientFor(A)
        .db(name)
        .collection('k')
        .find()
        .toArray()
        .catch(() => []);
      expect(found, name).not.toContainEqual({ _id: 'from-a_b' });
    }
    const reverse = await dp
      .clientFor(AB)
      .db('b_c')
      .collection('k')
      .find()
      .toArray()
      .catch(() => []);
    expect(reverse).not.toContainEqual({ _id: 'from-a' });
    expect(await direct.db(`${A}-5fb_c`).collection('k').find().toArray()).toEqual([{ _id: 'from-a_b' }]);
    expect(await direct.db(`${A}_b_c`).collection('k').find().toArray()).toEqual([{ _id: 'from-a' }]);
  });

  it('catalogue 64: physical names are mapped back in replies: cursor ns, listCollections, listDatabases, error messages', async () => {
    const t = await dp.rawFor(T);
    const found = await t.command(opMsg({ find: 'items', filter: {}, $db: app }));
    expect(found.cursor.ns).toBe(`${app}.items`);
    expect(found.cursor.firstBatch).toEqual([{ _id: 't-64', mine: true }]);
    const aggregated = await t.command(opMsg({ aggregate: 'items', pipeline: [], cursor: {}, $db: app }));
    expect(aggregated.cursor.ns).toBe(`${app}.items`);
    const collections = await t.command(opMsg({ listCollections: 1, $db: app }));
    expect(collections.cursor.firstBatch.map((c: Document) => c.name)).toEqual(['items']);
    // MongoDB spells it $cmd.listCollections, DocumentDB $cmd.ListCollections (docs/upstreams.md).
    expect(collections.cursor.ns.toLowerCase()).toBe(`${app}.$cmd.listcollections`.toLowerCase());
    const indexes = await t.command(opMsg({ listIndexes: 'items', $db: app }));
    expect(JSON.stringify(indexes)).not.toContain(`${T}_`);
    const dup = await t.command(opMsg({ insert: 'items', documents: [{ _id: 't-64' }], $db: app }));
    expect(dup.writeErrors[0].code).toBe(11000);
    expect(JSON.stringify(dup)).not.toContain(`${T}_${app}`);
    const physicalNames = async () =>
      ((await direct.db('admin').admin().listDatabases({ nameOnly: true })).databases ?? []).map((d) => d.name);
    const physicalBefore = await physicalNames();
    const databases = await t.command(opMsg({ listDatabases: 1, nameOnly: true, $db: 'admin' }));
    const listed = (databases.databases as Document[]).map((d) => d.name as string);
    expect(listed).toContain(app);
    // Every name listed is one of T's own databases, in T's client spelling: its physical
    // counterpart exists upstream under T's prefix (earlier tests created T-owned databases
    // whose client names happen to look like other tenants', e.g. "globex_app"). Read before and
    // after the listing: test files running beside this one create and drop acme's databases.
    const physical = [...new Set([...physicalBefore, ...(await physicalNames())])];
    for (const name of listed) expect(physical, name).toContain(`${T}_${name}`);
    t.close();
    // An aggregation writing into T's own database is mapped to T's physical database.
    const own = await dp.clientFor(T).db(app).collection('items').find().toArray();
    expect(own).toEqual([{ _id: 't-64', mine: true }]);
    await globexUntouched();
  });
});
