import { crc32c as referenceCrc32c } from '@node-rs/crc32';
import { deserialize } from 'bson';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, WireProtocolError } from '../../../src/errors.js';
import { OpMsgFlag } from '../../../src/wire/constants.js';
import {
  DEFAULT_MAX_INTERNAL_BSON_SIZE,
  bodyWithFrameRoom,
  commandName,
  encodeOpMsg,
  framedBody,
  parseOpMsg,
} from '../../../src/wire/op-msg.js';
import { bson, frame, hex, int32, kind0, kind1, nested, opMsg, rawDoc, element, uint32 } from './fixtures.js';

const opts = { maxBsonDepth: 200 };

function wireError(run: () => unknown): WireProtocolError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(WireProtocolError);
    return error as WireProtocolError;
  }
  throw new Error('expected a WireProtocolError');
}

function expectReject(bytes: Buffer, code: number, fatal: boolean, message?: RegExp): WireProtocolError {
  const error = wireError(() => parseOpMsg(bytes, opts));
  expect({ code: error.code, fatal: error.fatal }).toEqual({ code, fatal });
  if (message) expect(error.message).toMatch(message);
  return error;
}

/** Appends a checksum computed with @node-rs/crc32 directly (independent of src/wire/crc32c). */
function withChecksum(message: Buffer): Buffer {
  const out = Buffer.concat([message, Buffer.alloc(4)]);
  out.writeInt32LE(out.length, 0);
  out.writeUInt32LE(out.readUInt32LE(16) | OpMsgFlag.checksumPresent, 16);
  out.writeUInt32LE(referenceCrc32c(out.subarray(0, out.length - 4)) >>> 0, out.length - 4);
  return out;
}

const ping = bson({ ping: 1, $db: 'admin' });
const insertBody = bson({ insert: 'coll', $db: 'db' });
const docs = [bson({ _id: 1, a: 'x' }), bson({ _id: 2, b: [1, 2] })];

describe('parseOpMsg', () => {
  it('parses a hand-written ping', () => {
    // {ping: 1, $db: "admin"}: int32 ping, string $db.
    const golden = hex(`
      33000000 2a000000 00000000 dd070000
      00000000
      00
      1e000000 10 70696e6700 01000000 02 24646200 06000000 61646d696e00 00`);
    expect(golden.length).toBe(51);
    const msg = parseOpMsg(golden, opts);
    expect(msg.requestId).toBe(42);
    expect(msg.responseTo).toBe(0);
    expect(msg.flagBits).toBe(0);
    expect(deserialize(msg.body)).toEqual({ ping: 1, $db: 'admin' });
    expect(msg.sequences).toEqual([]);
    expect(commandName(msg.body)).toBe('ping');
  });

  it('returns views into the frame for body and documents', () => {
    const bytes = opMsg(0, [kind0(insertBody), kind1('documents', docs)], { requestId: 5, responseTo: 9 });
    const msg = parseOpMsg(bytes, opts);
    expect(msg.body.buffer).toBe(bytes.buffer);
    expect(msg.body).toEqual(insertBody);
    expect(msg.sequences).toEqual([{ identifier: 'documents', documents: docs }]);
    expect(msg.responseTo).toBe(9);
  });

  it('accepts sequences before the body, two sequences, and an empty sequence', () => {
    const bulk = bson({ bulkWrite: 1, $db: 'admin' });
    const bytes = opMsg(0, [kind1('ops', docs), kind1('nsInfo', []), kind0(bulk)]);
    const msg = parseOpMsg(bytes, opts);
    expect(msg.sequences.map((s) => [s.identifier, s.documents.length])).toEqual([
      ['ops', 2],
      ['nsInfo', 0],
    ]);
    expect(msg.body).toEqual(bulk);
  });

  describe('flagBits', () => {
    it('keeps moreToCome and exhaustAllowed', () => {
      const flags = OpMsgFlag.moreToCome | OpMsgFlag.exhaustAllowed;
      expect(parseOpMsg(opMsg(flags, [kind0(ping)]), opts).flagBits).toBe(flags);
    });

    it('clears unknown optional bits 16-31', () => {
      const flags = OpMsgFlag.moreToCome | (1 << 17) | (1 << 31) | (1 << 24);
      expect(parseOpMsg(opMsg(flags, [kind0(ping)]), opts).flagBits).toBe(OpMsgFlag.moreToCome);
    });

    it('rejects unknown required bits 2-15 with IllegalOpMsgFlag (connection-fatal, like the server)', () => {
      for (const bit of [2, 5, 15]) {
        expectReject(opMsg(1 << bit, [kind0(ping)]), ErrorCodes.IllegalOpMsgFlag, true, /illegal flags value: 0b0+1/);
      }
    });
  });

  describe('checksum', () => {
    it('verifies a valid CRC-32C and drops it', () => {
      const bytes = withChecksum(opMsg(OpMsgFlag.moreToCome, [kind0(ping)]));
      const msg = parseOpMsg(bytes, opts);
      expect(msg.flagBits).toBe(OpMsgFlag.moreToCome);
      expect(msg.body).toEqual(ping);
    });

    it('verifies with sequences present', () => {
      const msg = parseOpMsg(withChecksum(opMsg(0, [kind0(insertBody), kind1('documents', docs)])), opts);
      expect(msg.sequences[0]?.documents).toEqual(docs);
    });

    it('rejects a wrong checksum with ChecksumMismatch (fatal)', () => {
      const bytes = withChecksum(opMsg(0, [kind0(ping)]));
      bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0x01;
      expectReject(bytes, ErrorCodes.ChecksumMismatch, true);
      const tampered = withChecksum(opMsg(0, [kind0(ping)]));
      tampered[44] = (tampered[44] as number) ^ 0x20; // "admin" becomes "Admin": still valid BSON
      expectReject(tampered, ErrorCodes.ChecksumMismatch, true);
    });

    it('rejects a checksum flag on a message too short to hold one', () => {
      expectReject(opMsg(OpMsgFlag.checksumPresent, [uint32(0)]), ErrorCodes.ProtocolError, true, /too short/);
    });

    it('never lets the body reach into the checksum', () => {
      // The body's declared length covers 4 more bytes: the checksum itself.
      const body = Buffer.concat([ping.subarray(0, ping.length - 1)]);
      const bytes = opMsg(OpMsgFlag.checksumPresent, [
        kind0(Buffer.concat([int32(ping.length + 4), body.subarray(4), hex('000000')])),
        hex('00'),
      ]);
      expectReject(bytes, ErrorCodes.ProtocolError, true);
    });
  });

  describe('sections', () => {
    it('second body → 40430', () => {
      expectReject(opMsg(0, [kind0(ping), kind0(ping)]), ErrorCodes.Location40430, false, /Multiple body sections/);
    });

    it('no body → 40587, also with no sections at all', () => {
      expectReject(opMsg(0, [kind1('documents', docs)]), ErrorCodes.Location40587, false);
      expectReject(opMsg(0, []), ErrorCodes.Location40587, false);
    });

    it('duplicate sequence identifier → 40431', () => {
      expectReject(
        opMsg(0, [kind0(insertBody), kind1('documents', docs), kind1('documents', [])]),
        ErrorCodes.Location40431,
        false,
      );
    });

    it('a third sequence → TooManyDocumentSequences (fatal, like the server)', () => {
      expectReject(
        opMsg(0, [kind0(insertBody), kind1('a', []), kind1('b', []), kind1('c', [])]),
        ErrorCodes.TooManyDocumentSequences,
        true,
      );
    });

    it('identifier also in the body → 40433, path-aware like the server', () => {
      const dup = (body: Record<string, unknown>, id: string) => opMsg(0, [kind0(bson(body)), kind1(id, docs)]);
      expectReject(dup({ insert: 'c', documents: [], $db: 'd' }, 'documents'), ErrorCodes.Location40433, false);
      expectReject(dup({ insert: 'c', a: { b: 1 }, $db: 'd' }, 'a.b'), ErrorCodes.Location40433, false);
      expectReject(dup({ insert: 'c', a: [{ b: 1 }], $db: 'd' }, 'a.b'), ErrorCodes.Location40433, false);
      expectReject(dup({ insert: 'c', a: { b: { c: 1 } }, $db: 'd' }, 'a.b.c'), ErrorCodes.Location40433, false);
      // Not found: a scalar on the path, a missing component, a mere prefix.
      expect(() => parseOpMsg(dup({ insert: 'c', a: 1, $db: 'd' }, 'a.b'), opts)).not.toThrow();
      expect(() => parseOpMsg(dup({ insert: 'c', a: { x: 1 }, $db: 'd' }, 'a.b'), opts)).not.toThrow();
      expect(() => parseOpMsg(dup({ insert: 'c', documentsX: 1, $db: 'd' }, 'documents'), opts)).not.toThrow();
    });

    it('kind 2 (security token) → fatal Unauthorized', () => {
      expectReject(
        opMsg(0, [kind0(ping), Buffer.concat([hex('02'), bson({ token: 1 })])]),
        ErrorCodes.Unauthorized,
        true,
      );
    });

    it('unknown kinds → fatal 40432', () => {
      for (const kind of [3, 0x7f, 0xff]) {
        expectReject(
          opMsg(0, [kind0(ping), Buffer.from([kind])]),
          ErrorCodes.Location40432,
          true,
          new RegExp(`kind ${kind}`),
        );
      }
    });

    it('a sequence size that does not exactly cover its documents → fatal', () => {
      const seq = kind1('documents', docs);
      const size = seq.readInt32LE(1);
      // One byte short: the last document overruns the section.
      expectReject(
        opMsg(0, [kind0(insertBody), kind1('documents', docs, size - 1), hex('00')]),
        ErrorCodes.ProtocolError,
        true,
      );
      // Extra bytes inside the section that are not a whole document.
      const padded = Buffer.concat([kind1('documents', docs, size + 3), hex('010203')]);
      expectReject(opMsg(0, [kind0(insertBody), padded]), ErrorCodes.ProtocolError, true);
      // Size overrunning the message.
      expectReject(opMsg(0, [kind0(insertBody), kind1('documents', docs, size + 50)]), ErrorCodes.ProtocolError, true);
      // Sizes too small to hold an identifier.
      for (const bad of [0, 4, -1, -0x80000000]) {
        expectReject(
          opMsg(0, [kind0(insertBody), Buffer.concat([hex('01'), int32(bad), hex('00')])]),
          ErrorCodes.ProtocolError,
          true,
        );
      }
      // A size field cut short by the end of the message.
      expectReject(opMsg(0, [kind0(insertBody), hex('01 0500')]), ErrorCodes.ProtocolError, true);
    });

    it('an identifier not terminated inside its section → fatal', () => {
      const section = Buffer.concat([hex('01'), int32(7), Buffer.from('abc')]);
      expectReject(opMsg(0, [kind0(insertBody), section, hex('00')]), ErrorCodes.ProtocolError, true, /identifier/);
    });

    it('an identifier with invalid UTF-8 → rejected', () => {
      const section = Buffer.concat([hex('01'), int32(7), hex('61ff00')]);
      expectReject(opMsg(0, [kind0(insertBody), section]), ErrorCodes.InvalidBSON, false);
    });

    it('a body overrunning the message → fatal', () => {
      const truncated = ping.subarray(0, ping.length - 3);
      expectReject(opMsg(0, [kind0(truncated)]), ErrorCodes.ProtocolError, true);
      expectReject(opMsg(0, [hex('00 0300')]), ErrorCodes.ProtocolError, true);
      expectReject(opMsg(0, [Buffer.concat([hex('00'), int32(3), hex('00')])]), ErrorCodes.ProtocolError, true);
    });

    it('trailing bytes after the sections → rejected', () => {
      expectReject(opMsg(0, [kind0(ping), hex('01')]), ErrorCodes.ProtocolError, true);
      expectReject(opMsg(0, [kind0(ping), hex('09')]), ErrorCodes.Location40432, true);
    });

    it('invalid BSON inside the body or a sequence document → non-fatal InvalidBSON', () => {
      const badUtf8 = rawDoc(element(0x02, 'find', Buffer.concat([int32(3), hex('c0 80 00')])));
      expectReject(opMsg(0, [kind0(badUtf8)]), ErrorCodes.InvalidBSON, false, /OP_MSG body/);
      const badDoc = rawDoc(element(0x08, 'x', hex('07')));
      const error = expectReject(
        opMsg(0, [kind0(insertBody), kind1('documents', [docs[0] as Buffer, badDoc])]),
        ErrorCodes.InvalidBSON,
        false,
      );
      expect(error.message).toMatch(/document sequence "documents"/);
    });

    it('a sequence document cannot borrow bytes past its section', () => {
      // Document claims 2 more bytes than the section holds; the next section's bytes would fit.
      const doc = bson({ a: 1 });
      const liar = Buffer.concat([int32(doc.length + 2), doc.subarray(4)]);
      const section = Buffer.concat([
        hex('01'),
        int32(4 + 2 + doc.length),
        Buffer.from('d\0'),
        liar.subarray(0, doc.length),
      ]);
      expectReject(opMsg(0, [kind0(insertBody), section, hex('0000')]), ErrorCodes.ProtocolError, true);
    });

    it('too deep → non-fatal Overflow; 100,000 levels do not crash', () => {
      expectReject(opMsg(0, [kind0(nested(201))]), ErrorCodes.Overflow, false);
      expect(() => parseOpMsg(opMsg(0, [kind0(nested(200))]), opts)).not.toThrow();
      expectReject(opMsg(0, [kind0(nested(100_000))]), ErrorCodes.Overflow, false);
      expectReject(opMsg(0, [kind0(insertBody), kind1('documents', [nested(100_000)])]), ErrorCodes.Overflow, false);
    });
  });

  describe('duplicate keys and document size', () => {
    const twoDb = rawDoc(
      element(0x02, 'find', Buffer.concat([int32(2), hex('6300')])),
      element(0x02, '$db', Buffer.concat([int32(2), hex('6100')])),
      element(0x02, '$db', Buffer.concat([int32(2), hex('6200')])),
    );
    const deepDup = rawDoc(
      element(0x02, 'find', Buffer.concat([int32(2), hex('6300')])),
      element(0x03, 'filter', rawDoc(element(0x10, 'tenant', int32(1)), element(0x10, 'tenant', int32(2)))),
    );

    it('rejects duplicate keys at any depth by default (non-fatal InvalidBSON)', () => {
      expectReject(opMsg(0, [kind0(twoDb)]), ErrorCodes.InvalidBSON, false, /duplicate key "\$db"/);
      expectReject(opMsg(0, [kind0(deepDup)]), ErrorCodes.InvalidBSON, false, /duplicate key "tenant"/);
      expectReject(
        opMsg(0, [kind0(insertBody), kind1('documents', [deepDup])]),
        ErrorCodes.InvalidBSON,
        false,
        /document sequence/,
      );
    });

    it('accepts them when told the bytes are trusted', () => {
      const msg = parseOpMsg(opMsg(0, [kind0(twoDb)]), { ...opts, rejectDuplicateKeys: false });
      expect(msg.body).toEqual(twoDb);
    });

    it('rejects a document above maxBsonObjectSize with BSONObjectTooLarge (non-fatal)', () => {
      const big = bson({ insert: 'c', pad: 'x'.repeat(100), $db: 'd' });
      const small = { ...opts, maxBsonObjectSize: big.length - 1 };
      const error = wireError(() => parseOpMsg(opMsg(0, [kind0(big)]), small));
      expect({ code: error.code, fatal: error.fatal }).toEqual({ code: ErrorCodes.BSONObjectTooLarge, fatal: false });
      const inSequence = wireError(() => parseOpMsg(opMsg(0, [kind0(insertBody), kind1('documents', [big])]), small));
      expect(inSequence.code).toBe(ErrorCodes.BSONObjectTooLarge);
      expect(() => parseOpMsg(opMsg(0, [kind0(big)]), { ...opts, maxBsonObjectSize: big.length })).not.toThrow();
    });

    it('defaults the document limit to 16 MiB + 16 KiB', () => {
      expect(DEFAULT_MAX_INTERNAL_BSON_SIZE).toBe(16 * 1024 * 1024 + 16 * 1024);
      // A declared length beyond the message is a framing lie, refused before any size limit.
      const liar = Buffer.concat([int32(DEFAULT_MAX_INTERNAL_BSON_SIZE + 1), hex('00')]);
      expectReject(opMsg(0, [kind0(liar)]), ErrorCodes.ProtocolError, true);
    });
  });

  describe('framing', () => {
    it('rejects a messageLength that differs from the frame', () => {
      const bytes = opMsg(0, [kind0(ping)]);
      bytes.writeInt32LE(bytes.length + 1, 0);
      expectReject(bytes, ErrorCodes.ProtocolError, true, /does not match/);
    });

    it('rejects another opcode', () => {
      expectReject(frame(2004, [uint32(0), kind0(ping)]), ErrorCodes.ProtocolError, true, /not OP_MSG/);
    });

    it('rejects a message too short for flagBits', () => {
      expectReject(frame(2013, [hex('0000')]), ErrorCodes.ProtocolError, true);
      expectReject(hex('0c000000'), ErrorCodes.ProtocolError, true);
    });
  });
});

describe('encodeOpMsg', () => {
  it('frames a body built with room in front in place, byte for byte as a copied one', () => {
    const doc = bson({ ok: 1, cursor: { firstBatch: [{ a: 1 }] } });
    for (const flagBits of [0, OpMsgFlag.moreToCome, OpMsgFlag.moreToCome | OpMsgFlag.checksumPresent]) {
      const room = bodyWithFrameRoom(doc.length + 7);
      room.set(doc);
      const body = framedBody(room, doc.length);
      const expected = encodeOpMsg({ requestId: 3, responseTo: 9, flagBits, body: Buffer.from(body) });
      const framed = encodeOpMsg({ requestId: 3, responseTo: 9, flagBits, body });
      expect(framed.equals(expected)).toBe(true);
      const inPlace = (frame: Buffer): boolean =>
        frame.buffer === body.buffer && frame.byteOffset + frame.length - body.length === body.byteOffset;
      expect(inPlace(framed)).toBe(true); // no copy
      // Once framed, the room is used: a second frame of the same body is a copy.
      const again = encodeOpMsg({ requestId: 3, responseTo: 9, flagBits, body });
      expect(again.equals(expected)).toBe(true);
      expect(inPlace(again)).toBe(false);
    }
    // With a checksum or sequences, the frame is built as usual.
    const body = framedBody(bodyWithFrameRoom(doc.length), doc.length);
    body.set(doc);
    const summed = encodeOpMsg({ requestId: 1, responseTo: 0, body, checksum: true });
    expect(summed.equals(encodeOpMsg({ requestId: 1, responseTo: 0, body: Buffer.from(doc), checksum: true }))).toBe(
      true,
    );
    expect(Buffer.from(parseOpMsg(summed, opts).body).equals(doc)).toBe(true);
  });

  it('produces exactly the hand-built bytes (body first, then sequences)', () => {
    const expected = opMsg(OpMsgFlag.moreToCome, [kind0(insertBody), kind1('documents', docs), kind1('x', [])], {
      requestId: 77,
      responseTo: 3,
    });
    const encoded = encodeOpMsg({
      requestId: 77,
      responseTo: 3,
      flagBits: OpMsgFlag.moreToCome,
      body: insertBody,
      sequences: [
        { identifier: 'documents', documents: docs },
        { identifier: 'x', documents: [] },
      ],
    });
    expect(encoded).toEqual(expected);
  });

  it('defaults flagBits and sequences', () => {
    expect(encodeOpMsg({ requestId: 1, responseTo: 0, body: ping })).toEqual(opMsg(0, [kind0(ping)], { requestId: 1 }));
  });

  it('appends a CRC-32C that @node-rs/crc32 agrees with', () => {
    const encoded = encodeOpMsg({
      requestId: 9,
      responseTo: 0,
      body: ping,
      sequences: [{ identifier: 'd', documents: docs }],
      checksum: true,
    });
    const expected = withChecksum(opMsg(0, [kind0(ping), kind1('d', docs)], { requestId: 9 }));
    expect(encoded).toEqual(expected);
    expect(encoded.readUInt32LE(encoded.length - 4)).toBe(
      referenceCrc32c(encoded.subarray(0, encoded.length - 4)) >>> 0,
    );
    expect(encoded.readUInt32LE(16) & OpMsgFlag.checksumPresent).toBe(OpMsgFlag.checksumPresent);
  });

  it('lets `checksum` alone decide checksumPresent', () => {
    const encoded = encodeOpMsg({ requestId: 1, responseTo: 0, flagBits: OpMsgFlag.checksumPresent, body: ping });
    expect(encoded.readUInt32LE(16)).toBe(0);
    expect(encoded.length).toBe(16 + 4 + 1 + ping.length);
  });

  it('round-trips through parseOpMsg, with and without checksum', () => {
    for (const checksum of [false, true]) {
      const encoded = encodeOpMsg({
        requestId: -5,
        responseTo: 12,
        flagBits: OpMsgFlag.exhaustAllowed,
        body: insertBody,
        sequences: [{ identifier: 'documents', documents: docs }],
        checksum,
      });
      expect(parseOpMsg(encoded, opts)).toEqual({
        requestId: -5,
        responseTo: 12,
        flagBits: OpMsgFlag.exhaustAllowed,
        body: insertBody,
        sequences: [{ identifier: 'documents', documents: docs }],
      });
    }
  });

  it('re-encoding a parsed checksummed message with checksum:true gives a fresh valid checksum', () => {
    const original = withChecksum(opMsg(0, [kind0(ping)], { requestId: 4 }));
    const parsed = parseOpMsg(original, opts);
    const again = encodeOpMsg({ ...parsed, checksum: true });
    expect(again).toEqual(original);
  });

  it('refuses an identifier containing NUL', () => {
    expect(() =>
      encodeOpMsg({ requestId: 1, responseTo: 0, body: ping, sequences: [{ identifier: 'a\0b', documents: [] }] }),
    ).toThrow(RangeError);
  });
});

describe('commandName', () => {
  it('is the first key, case preserved', () => {
    expect(commandName(bson({ Find: 'c', $db: 'x' }))).toBe('Find');
    expect(commandName(bson({ $db: 'x', find: 'c' }))).toBe('$db');
  });

  it('throws a non-fatal WireProtocolError for an empty or broken body', () => {
    expect(wireError(() => commandName(hex('0500000000'))).fatal).toBe(false);
    expect(wireError(() => commandName(hex('0600000000'))).fatal).toBe(false);
  });
});
