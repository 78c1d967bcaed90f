/**
 * Every client byte is hostile. Malformed input gets an error reply or a closed connection,
 * never a crash or a hang, and a second client on the same proxy keeps working throughout.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { serialize } from 'bson';
import type { MongoClient } from 'mongodb';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { directClient, uniqueDbName } from '../helpers/upstream.js';
import { OP_QUERY, RawClient, opMsg, opQuery, rawFrame, replyDocument } from '../helpers/raw-client.js';

let proxy: TestProxy;
let bystander: MongoClient;
let direct: MongoClient;
const dbName = uniqueDbName('hostile');

async function raw(): Promise<RawClient> {
  return RawClient.connect(proxy.proxy.address.host, proxy.proxy.address.port);
}

/** The bystander still gets answers: the proxy survived whatever the last test sent. */
async function expectBystanderServed(): Promise<void> {
  const result = await bystander.db(dbName).command({ ping: 1 });
  expect(result.ok).toBe(1);
}

function deepDocument(depth: number): Buffer {
  // Built by hand in one pass: no serializer would agree to nest this deep. Level i (0 = outer)
  // is {a: <level i+1>} and starts at 7*i: int32 size, type 0x03, key "a\0"; its closing 0x00
  // comes after the innermost empty document.
  const total = 8 * depth + 5;
  const doc = Buffer.alloc(total);
  for (let i = 0; i < depth; i += 1) {
    doc.writeInt32LE(total - 8 * i, 7 * i);
    doc[7 * i + 4] = 0x03;
    doc.write('a\0', 7 * i + 5, 'latin1');
  }
  doc.writeInt32LE(5, 7 * depth);
  return doc; // the innermost terminator and every closing 0x00 are already zero
}

beforeAll(async () => {
  proxy = await startTestProxy();
  bystander = await proxy.client();
  direct = await directClient();
});

afterAll(async () => {
  await direct?.close();
  await proxy?.stop();
});

describe('legacy handshake and opcodes', () => {
  it('answers an OP_QUERY isMaster on admin.$cmd with OP_REPLY', async () => {
    const c = await raw();
    c.write(opQuery('admin.$cmd', { isMaster: 1, helloOk: true }).bytes);
    const frame = await c.readFrame();
    expect(frame?.opCode).toBe(1);
    const doc = replyDocument(frame!);
    expect(doc.ismaster).toBe(true);
    expect(doc.helloOk).toBe(true);
    expect(doc.ok).toBe(1);
    c.close();
  });

  it('unwraps the $query wrapper of a legacy hello', async () => {
    const c = await raw();
    c.write(opQuery('admin.$cmd', { $query: { ismaster: true }, $readPreference: { mode: 'primary' } }).bytes);
    const doc = replyDocument((await c.readFrame())!);
    expect(doc.ismaster).toBe(true);
    c.close();
  });

  it('refuses OP_QUERY commands other than the handshake, and OP_QUERY on a collection', async () => {
    for (const frame of [
      opQuery('admin.$cmd', { $query: { find: 'c' } }),
      opQuery(`${dbName}.coll`, {}),
      opQuery('admin.$cmd', { insert: 'c', documents: [{}] }),
    ]) {
      const c = await raw();
      c.write(frame.bytes);
      const reply = await c.readFrame();
      expect(reply?.opCode).toBe(1);
      const doc = replyDocument(reply!);
      expect(doc.ok).toBe(0);
      expect(doc.$err).toMatch(/OP_QUERY/);
      c.close();
    }
    expect(await direct.db(dbName).collection('c').countDocuments()).toBe(0);
    await expectBystanderServed();
  });

  it('refuses removed and unknown opcodes with an error and closes', async () => {
    for (const opCode of [2001, 2002, 2005, 2006, 2007, 2010, 2011, 4242]) {
      const c = await raw();
      c.write(rawFrame(opCode, Buffer.alloc(24)).bytes);
      const reply = await c.readFrame();
      if (reply !== null) expect(replyDocument(reply).ok).toBe(0);
      expect(await c.waitClosed()).toBe(true);
      c.close();
    }
    await expectBystanderServed();
  });
});

describe('framing lies', () => {
  it('closes on a length below the header size, negative, or above the maximum', async () => {
    for (const length of [0, 15, -1, 48_000_001, 0x7fffffff]) {
      const c = await raw();
      const header = Buffer.alloc(16);
      header.writeInt32LE(length, 0);
      header.writeInt32LE(1, 4);
      header.writeInt32LE(2013, 12);
      c.write(header);
      expect(await c.waitClosed(), `length ${length}`).toBe(true);
    }
    await expectBystanderServed();
  });

  it('does not wait forever on a truncated frame once the client goes away', async () => {
    const c = await raw();
    const { bytes } = opMsg({ ping: 1, $db: 'admin' });
    c.write(bytes.subarray(0, bytes.length - 3));
    c.close();
    await expectBystanderServed();
  });

  it('survives random bytes', async () => {
    for (let i = 0; i < 25; i += 1) {
      const c = await raw();
      const junk = randomBytes(64 + i * 13);
      c.write(junk);
      // Either an error reply or a close; what matters is that it ends and the proxy lives.
      await c.waitClosed(500).catch(() => undefined);
      c.close();
    }
    await expectBystanderServed();
  });

  it('rejects a section whose length overruns the message', async () => {
    const c = await raw();
    const { bytes } = opMsg({ ping: 1, $db: 'admin' });
    bytes.writeInt32LE(9999, 21);
    c.write(bytes);
    const reply = await c.readFrame().catch(() => null);
    if (reply !== null) expect(replyDocument(reply).ok).toBe(0);
    await expectBystanderServed();
    c.close();
  });
});

describe('OP_MSG rules', () => {
  it('closes the connection on unknown required flag bits, as the server does (IllegalOpMsgFlag is connection-fatal)', async () => {
    const c = await raw();
    c.write(opMsg({ ping: 1, $db: 'admin' }, { flags: 1 << 5 }).bytes);
    expect(await c.waitClosed()).toBe(true);
    await expectBystanderServed();
  });

  it('clears unknown optional flag bits and forwards', async () => {
    const c = await raw();
    const doc = await c.command(opMsg({ ping: 1, $db: 'admin' }, { flags: 1 << 20 }));
    expect(doc.ok).toBe(1);
    c.close();
  });

  it('rejects a missing, duplicated or non-string $db and a misplaced command name', async () => {
    const c = await raw();
    expect((await c.command(opMsg({ ping: 1 }))).ok).toBe(0);
    expect((await c.command(opMsg({ ping: 1, $db: 5 }))).ok).toBe(0);
    expect((await c.command(opMsg({ $db: 'admin', ping: 1 }))).ok).toBe(0);
    // Two $db keys cannot be written with a JS object; splice a second one in by hand.
    const one = Buffer.from(serialize({ ping: 1, $db: 'admin' }));
    const extra = Buffer.from(serialize({ $db: 'other' })).subarray(4, -1);
    const twice = Buffer.concat([one.subarray(0, one.length - 1), extra, Buffer.from([0])]);
    twice.writeInt32LE(twice.length, 0);
    expect((await c.command(opMsg(twice))).ok).toBe(0);
    c.close();
  });

  it('rejects a document sequence also present in the body, duplicated sequences, and two bodies', async () => {
    const c = await raw();
    const collection = 'seq';
    const inBoth = await c.command(
      opMsg({ insert: collection, documents: [], $db: dbName }, { sequences: [{ id: 'documents', docs: [{ x: 1 }] }] }),
    );
    expect(inBoth.ok).toBe(0);
    const duplicated = await c.command(
      opMsg(
        { insert: collection, $db: dbName },
        {
          sequences: [
            { id: 'documents', docs: [{ x: 1 }] },
            { id: 'documents', docs: [{ x: 2 }] },
          ],
        },
      ),
    );
    expect(duplicated.ok).toBe(0);
    expect(await direct.db(dbName).collection(collection).countDocuments()).toBe(0);
    c.close();
  });

  it('accepts inserts carried in a kind-1 document sequence', async () => {
    const c = await raw();
    const doc = await c.command(
      opMsg({ insert: 'seqok', $db: dbName }, { sequences: [{ id: 'documents', docs: [{ x: 1 }, { x: 2 }] }] }),
    );
    expect(doc.ok).toBe(1);
    expect(doc.n).toBe(2);
    expect(await direct.db(dbName).collection('seqok').countDocuments()).toBe(2);
    c.close();
  });

  it('rejects a 100,000-level deep document without falling over', async () => {
    const c = await raw();
    const deep = deepDocument(100_000);
    const body = Buffer.concat([
      Buffer.from(serialize({ insert: 'deep', $db: dbName })).subarray(0, -1),
      Buffer.from([0x03]),
      Buffer.from('d\0', 'latin1'),
      deep,
      Buffer.from([0]),
    ]);
    body.writeInt32LE(body.length, 0);
    c.write(opMsg(body).bytes);
    const frame = await c.readFrame(10_000);
    if (frame !== null) expect(replyDocument(frame).ok).toBe(0);
    await expectBystanderServed();
    expect(await direct.db(dbName).collection('deep').countDocuments()).toBe(0);
    c.close();
  });

  it('rejects invalid UTF-8 in keys', async () => {
    const c = await raw();
    const body = Buffer.from(serialize({ ping: 1, $db: 'admin', xx: 1 }));
    const at = body.indexOf(Buffer.from('xx\0', 'latin1'));
    body[at] = 0xc3;
    body[at + 1] = 0x28;
    const doc = await c.command(opMsg(body));
    expect(doc.ok).toBe(0);
    c.close();
  });
});

describe('checksums', () => {
  it('verifies CRC-32C on input: a good checksum is accepted, a bad one refused', async () => {
    const { crc32c } = await import('@node-rs/crc32');
    const withSum = (corrupt: boolean): Buffer => {
      const { bytes } = opMsg({ ping: 1, $db: 'admin' }, { flags: 1 });
      const framed = Buffer.concat([bytes, Buffer.alloc(4)]);
      framed.writeInt32LE(framed.length, 0);
      const sum = crc32c(framed.subarray(0, framed.length - 4));
      framed.writeUInt32LE(corrupt ? (sum ^ 1) >>> 0 : sum, framed.length - 4);
      return framed;
    };
    const c = await raw();
    c.write(withSum(false));
    expect(replyDocument((await c.readFrame())!).ok).toBe(1);
    c.write(withSum(true));
    const bad = await c.readFrame().catch(() => null);
    if (bad !== null) expect(replyDocument(bad).ok).toBe(0);
    c.close();
    await expectBystanderServed();
  });
});

describe('OP_COMPRESSED from hostile clients', () => {
  it('rejects a zlib bomb before inflating it', async () => {
    const { deflateSync } = await import('node:zlib');
    const inner = opMsg({ ping: 1, $db: 'admin', pad: 'x'.repeat(1000) }).bytes;
    const bomb = deflateSync(Buffer.alloc(200 * 1024 * 1024));
    const payload = Buffer.alloc(9);
    payload.writeInt32LE(2013, 0);
    payload.writeInt32LE(inner.length - 16, 4); // claims small, inflates to 200 MiB
    payload[8] = 2;
    const c = await raw();
    c.write(rawFrame(2012, Buffer.concat([payload, bomb])).bytes);
    expect(await c.waitClosed()).toBe(true);
    await expectBystanderServed();
  });

  it('rejects nested compression and unknown compressors', async () => {
    const inner = Buffer.alloc(9);
    inner.writeInt32LE(2012, 0);
    inner.writeInt32LE(10, 4);
    inner[8] = 0;
    const c = await raw();
    c.write(rawFrame(2012, Buffer.concat([inner, Buffer.alloc(10)])).bytes);
    expect(await c.waitClosed()).toBe(true);
    const d = await raw();
    const unknown = Buffer.alloc(9);
    unknown.writeInt32LE(2013, 0);
    unknown.writeInt32LE(10, 4);
    unknown[8] = 77;
    d.write(rawFrame(2012, Buffer.concat([unknown, Buffer.alloc(10)])).bytes);
    expect(await d.waitClosed()).toBe(true);
    await expectBystanderServed();
  });

  it('treats a compressed OP_QUERY like an uncompressed one', async () => {
    const query = opQuery(`${dbName}.coll`, {}).bytes;
    const payload = Buffer.alloc(9);
    payload.writeInt32LE(OP_QUERY, 0);
    payload.writeInt32LE(query.length - 16, 4);
    payload[8] = 0; // noop compressor
    const c = await raw();
    c.write(rawFrame(2012, Buffer.concat([payload, query.subarray(16)])).bytes);
    const reply = await c.readFrame();
    expect(replyDocument(reply!).ok).toBe(0);
    c.close();
  });
});

describe('handshake rules', () => {
  it('refuses client metadata sent a second time on the same connection', async () => {
    const c = await raw();
    const first = await c.command(opMsg({ hello: 1, client: { driver: { name: 'x', version: '1' } }, $db: 'admin' }));
    expect(first.ok).toBe(1);
    const second = await c.command(opMsg({ hello: 1, client: { driver: { name: 'x', version: '1' } }, $db: 'admin' }));
    expect(second.ok).toBe(0);
    expect(second.code).toBe(186);
    c.close();
  });

  it('refuses authentication mechanisms the listener does not enable, without forwarding', async () => {
    const c = await raw();
    const doc = await c.command(
      opMsg({ saslStart: 1, mechanism: 'SCRAM-SHA-256', payload: Buffer.alloc(0), $db: 'admin' }),
    );
    expect(doc.ok).toBe(0);
    expect(doc.code).toBe(334);
    expect(doc.codeName).toBe('MechanismUnavailable');
    c.close();
  });
});
