import { deflateSync } from 'node:zlib';
import { compress as zstdCompress, decompress as zstdDecompress } from '@mongodb-js/zstd';
import { compress as snappyCompress } from 'snappy';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, WireProtocolError } from '../../../src/errors.js';
import {
  compressBytes,
  decompressBytes,
  snappyUncompressedLength,
  zstdDecompressedBound,
} from '../../../src/wire/compression.js';
import { CompressorId, OpCode } from '../../../src/wire/constants.js';
import {
  compressMessage,
  compressorIdOf,
  compressorNameOf,
  decompressMessage,
  readOpCompressedHeader,
} from '../../../src/wire/op-compressed.js';
import { bson, frame, hex, int32, kind0, opMsg } from './fixtures.js';

const CAP = 1_000_000;
const message = opMsg(0, [kind0(bson({ insert: 'c', documents: [{ a: 'x'.repeat(2000), b: 1 }], $db: 'd' }))], {
  requestId: 11,
  responseTo: 4,
});
const inner = message.subarray(16);

/** OP_COMPRESSED assembled by hand around `payload`. */
function opCompressed(
  payload: Buffer,
  fields: { originalOpcode?: number; uncompressedSize?: number; compressorId?: number } = {},
): Buffer {
  return frame(
    OpCode.OP_COMPRESSED,
    [
      int32(fields.originalOpcode ?? OpCode.OP_MSG),
      int32(fields.uncompressedSize ?? inner.length),
      Buffer.from([fields.compressorId ?? 0]),
      payload,
    ],
    { requestId: 11, responseTo: 4 },
  );
}

async function rejection(promise: Promise<unknown>): Promise<WireProtocolError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(WireProtocolError);
    expect((error as WireProtocolError).fatal).toBe(true);
    return error as WireProtocolError;
  }
  throw new Error('expected a rejection');
}

/** A zstd block header: bit 0 last, bits 1-2 type, bits 3-23 size. */
function zstdBlock(last: boolean, type: number, size: number): Buffer {
  const v = (size << 3) | (type << 1) | (last ? 1 : 0);
  return Buffer.from([v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff]);
}
const ZSTD_MAGIC = hex('28b52ffd');

describe('decompressMessage on hand-built OP_COMPRESSED', () => {
  it('noop', async () => {
    expect(await decompressMessage(opCompressed(inner, { compressorId: 0 }), CAP)).toEqual(message);
  });

  it('snappy (compressed with the snappy package directly)', async () => {
    expect(await decompressMessage(opCompressed(await snappyCompress(inner), { compressorId: 1 }), CAP)).toEqual(
      message,
    );
  });

  it('zlib (compressed with node:zlib directly)', async () => {
    expect(await decompressMessage(opCompressed(deflateSync(inner), { compressorId: 2 }), CAP)).toEqual(message);
  });

  it('zstd (compressed with @mongodb-js/zstd directly, which writes no content size)', async () => {
    const payload = await zstdCompress(inner);
    expect(zstdDecompressedBound(payload).exact).toBeNull();
    expect(await decompressMessage(opCompressed(payload, { compressorId: 3 }), CAP)).toEqual(message);
  });

  it('rebuilds the header with the original opcode, same ids and the new length', async () => {
    const out = await decompressMessage(opCompressed(inner), CAP);
    expect([out.readInt32LE(0), out.readInt32LE(4), out.readInt32LE(8), out.readInt32LE(12)]).toEqual([
      message.length,
      11,
      4,
      OpCode.OP_MSG,
    ]);
  });
});

describe('compressMessage', () => {
  for (const name of ['noop', 'snappy', 'zlib', 'zstd'] as const) {
    it(`round-trips with ${name}`, async () => {
      const compressed = await compressMessage(message, name);
      const header = readOpCompressedHeader(compressed);
      expect(header).toEqual({
        requestId: 11,
        responseTo: 4,
        originalOpcode: OpCode.OP_MSG,
        uncompressedSize: inner.length,
        compressorId: CompressorId[name],
      });
      expect(compressed.readInt32LE(12)).toBe(OpCode.OP_COMPRESSED);
      expect(compressed.readInt32LE(0)).toBe(compressed.length);
      expect(await decompressMessage(compressed, CAP)).toEqual(message);
    });
  }

  it('writes a payload the reference codecs can read', async () => {
    const zlibOut = await compressMessage(message, 'zlib', 9);
    const payload = zlibOut.subarray(25);
    expect(Buffer.from(await zstdDecompress(await zstdCompress(inner)))).toEqual(inner);
    const { inflateSync } = await import('node:zlib');
    expect(inflateSync(payload)).toEqual(inner);
  });

  it('refuses to compress twice, bad levels and unknown compressors', async () => {
    const once = await compressMessage(message, 'noop');
    await expect(compressMessage(once, 'zlib')).rejects.toThrow(RangeError);
    await expect(compressMessage(message, 'zlib', 10)).rejects.toThrow(RangeError);
    await expect(compressMessage(message, 'lz4' as never)).rejects.toThrow(RangeError);
    const lying = Buffer.from(message);
    lying.writeInt32LE(5, 0);
    await expect(compressMessage(lying, 'noop')).rejects.toThrow(RangeError);
    await expect(compressBytes(inner, 'brotli' as never)).rejects.toThrow(RangeError);
  });

  it('maps names and ids', () => {
    expect(compressorIdOf('zstd')).toBe(3);
    expect(compressorIdOf('snappy')).toBe(1);
    expect(compressorIdOf('toString')).toBeNull();
    expect(compressorIdOf('lz4')).toBeNull();
    expect(compressorNameOf(2)).toBe('zlib');
    expect(compressorNameOf(0)).toBe('noop');
    expect(compressorNameOf(9)).toBeNull();
  });
});

describe('decompressMessage defences', () => {
  it('checks the declared size against the cap before decompressing', async () => {
    const payload = deflateSync(inner);
    const error = await rejection(decompressMessage(opCompressed(payload, { compressorId: 2 }), inner.length - 1));
    expect(error.message).toMatch(/exceeds the limit/);
    // Exactly the cap is fine.
    expect(await decompressMessage(opCompressed(payload, { compressorId: 2 }), inner.length)).toEqual(message);
    // A garbage payload proves nothing was decompressed: the size check fires first.
    expect(
      (await rejection(decompressMessage(opCompressed(hex('00'), { compressorId: 3, uncompressedSize: CAP + 1 }), CAP)))
        .message,
    ).toMatch(/exceeds the limit/);
  });

  it('stops a zlib bomb: a few KB that would inflate past the cap', async () => {
    const bomb = deflateSync(Buffer.alloc(20_000_000), { level: 9 });
    expect(bomb.length).toBeLessThan(25_000);
    const error = await rejection(
      decompressMessage(opCompressed(bomb, { compressorId: 2, uncompressedSize: 1000 }), CAP),
    );
    expect(error.code).toBe(ErrorCodes.ZLibError);
  });

  it('stops a snappy stream whose preamble lies', async () => {
    const real = await snappyCompress(inner);
    // Replace the varint preamble with 2^31 (5 bytes): the declared size is honest and small.
    const preambleLength = [...real].findIndex((b) => (b & 0x80) === 0) + 1;
    const lying = Buffer.concat([hex('8080808008'), real.subarray(preambleLength)]);
    expect(snappyUncompressedLength(lying)).toBe(2 ** 31);
    const error = await rejection(decompressMessage(opCompressed(lying, { compressorId: 1 }), CAP));
    expect(error.message).toMatch(/snappy stream claims 2147483648 bytes/);
    // A preamble that agrees with the declared size but a body that does not decode.
    await rejection(
      decompressMessage(
        opCompressed(Buffer.concat([real.subarray(0, preambleLength), hex('ffffffff')]), { compressorId: 1 }),
        CAP,
      ),
    );
  });

  it('rejects malformed snappy preambles', () => {
    expect(() => snappyUncompressedLength(hex(''))).toThrow(WireProtocolError);
    expect(() => snappyUncompressedLength(hex('8080'))).toThrow(WireProtocolError);
    expect(() => snappyUncompressedLength(hex('ffffffff7f'))).toThrow(/32-bit varint/);
    expect(() => snappyUncompressedLength(hex('8080808080'))).toThrow(WireProtocolError);
    expect(snappyUncompressedLength(hex('ffffffff0f'))).toBe(0xffffffff);
    expect(snappyUncompressedLength(hex('00'))).toBe(0);
  });

  it('stops a zstd bomb made of RLE blocks before decompressing', async () => {
    // No content size, 2 MiB window, 1000 RLE blocks of 128 KiB: 4 KB claiming 128 MiB.
    const blocks: Buffer[] = [];
    for (let i = 0; i < 1000; i++) blocks.push(zstdBlock(i === 999, 1, 128 * 1024), hex('00'));
    const bomb = Buffer.concat([ZSTD_MAGIC, hex('00 58'), ...blocks]);
    expect(bomb.length).toBeLessThan(5000);
    expect(zstdDecompressedBound(bomb)).toEqual({ max: 1000 * 128 * 1024, exact: null });
    const error = await rejection(
      decompressMessage(opCompressed(bomb, { compressorId: 3, uncompressedSize: 1000 }), CAP),
    );
    expect(error.message).toMatch(/may inflate to 131072000 bytes/);
  });

  it('decodes a hand-built zstd frame of RLE and raw blocks, with and without content size', async () => {
    const noFcs = Buffer.concat([
      ZSTD_MAGIC,
      hex('00 00'),
      zstdBlock(false, 1, 100),
      hex('78'),
      zstdBlock(true, 0, 3),
      Buffer.from('abc'),
    ]);
    expect(zstdDecompressedBound(noFcs)).toEqual({ max: 103, exact: null });
    expect(await decompressBytes(3, noFcs, 103)).toEqual(Buffer.concat([Buffer.alloc(100, 'x'), Buffer.from('abc')]));
    const fcs = Buffer.concat([
      ZSTD_MAGIC,
      hex('20 67'),
      zstdBlock(false, 1, 100),
      hex('78'),
      zstdBlock(true, 0, 3),
      Buffer.from('abc'),
    ]);
    expect(zstdDecompressedBound(fcs)).toEqual({ max: 103, exact: 103 });
    expect((await decompressBytes(3, fcs, 103)).length).toBe(103);
  });

  it('rejects a zstd content size that disagrees with the declared size', async () => {
    const fcs = Buffer.concat([
      ZSTD_MAGIC,
      hex('20 67'),
      zstdBlock(false, 1, 100),
      hex('78'),
      zstdBlock(true, 0, 3),
      Buffer.from('abc'),
    ]);
    expect((await rejection(decompressBytes(3, fcs, 104))).message).toMatch(/zstd frames declare 103 bytes/);
  });

  it('reads 2-, 4- and 8-byte zstd content sizes and skippable frames', () => {
    const body = [zstdBlock(true, 1, 300), hex('01')];
    const fcs2 = Buffer.concat([ZSTD_MAGIC, hex('60'), hex('2c00'), ...body]); // (0x002c + 256) = 300, single segment
    expect(zstdDecompressedBound(fcs2)).toEqual({ max: 300, exact: 300 });
    const fcs4 = Buffer.concat([ZSTD_MAGIC, hex('a0'), hex('2c010000'), ...body]);
    expect(zstdDecompressedBound(fcs4)).toEqual({ max: 300, exact: 300 });
    const fcs8 = Buffer.concat([ZSTD_MAGIC, hex('e0'), hex('2c01000000000000'), ...body]);
    expect(zstdDecompressedBound(fcs8)).toEqual({ max: 300, exact: 300 });
    const huge = Buffer.concat([ZSTD_MAGIC, hex('e0'), hex('ffffffffffffffff'), ...body]);
    expect(() => zstdDecompressedBound(huge)).toThrow(/declares/);
    const withWindowAndChecksum = Buffer.concat([ZSTD_MAGIC, hex('44 00'), hex('2c00'), ...body, hex('00000000')]);
    expect(zstdDecompressedBound(withWindowAndChecksum)).toEqual({ max: 300, exact: 300 });
    const skippable = Buffer.concat([hex('5f2a4d18'), int32(3), hex('010203'), fcs2]);
    expect(zstdDecompressedBound(skippable)).toEqual({ max: 300, exact: 300 });
    const twoFrames = Buffer.concat([
      fcs2,
      Buffer.concat([ZSTD_MAGIC, hex('00 00'), zstdBlock(true, 1, 10), hex('01')]),
    ]);
    expect(zstdDecompressedBound(twoFrames)).toEqual({ max: 310, exact: null });
  });

  it('rejects malformed or unsupported zstd streams', () => {
    const bad: Array<[Buffer, RegExp]> = [
      [hex(''), /empty/],
      [hex('28b52f'), /magic number is truncated/],
      [hex('00000000'), /not a zstd frame/],
      [Buffer.concat([ZSTD_MAGIC]), /frame header is truncated/],
      [Buffer.concat([ZSTD_MAGIC, hex('08 00'), zstdBlock(true, 0, 0)]), /reserved bit/],
      [Buffer.concat([ZSTD_MAGIC, hex('01 00 05'), zstdBlock(true, 0, 0)]), /dictionary/],
      [Buffer.concat([ZSTD_MAGIC, hex('00')]), /window descriptor is truncated/],
      [Buffer.concat([ZSTD_MAGIC, hex('c0 00 0102')]), /frame content size is truncated/],
      [Buffer.concat([ZSTD_MAGIC, hex('00 00'), hex('01')]), /block header is truncated/],
      [Buffer.concat([ZSTD_MAGIC, hex('00 00'), zstdBlock(true, 3, 1), hex('00')]), /reserved block type/],
      [
        Buffer.concat([ZSTD_MAGIC, hex('00 58'), zstdBlock(true, 1, 128 * 1024 + 1), hex('00')]),
        /exceeds the block maximum/,
      ],
      [
        Buffer.concat([ZSTD_MAGIC, hex('00 00'), zstdBlock(true, 1, 1025), hex('00')]),
        /exceeds the block maximum 1024/,
      ],
      [Buffer.concat([ZSTD_MAGIC, hex('00 00'), zstdBlock(true, 0, 5), hex('0102')]), /raw block is truncated/],
      [Buffer.concat([ZSTD_MAGIC, hex('00 00'), zstdBlock(true, 1, 5)]), /RLE block is truncated/],
      [Buffer.concat([ZSTD_MAGIC, hex('00 00'), zstdBlock(true, 2, 5), hex('01')]), /compressed block is truncated/],
      [Buffer.concat([ZSTD_MAGIC, hex('04 00'), zstdBlock(true, 0, 0)]), /content checksum is truncated/],
      [Buffer.concat([hex('502a4d18'), int32(10), hex('01')]), /skippable frame is truncated/],
      [Buffer.concat([hex('502a4d18'), hex('01')]), /skippable frame size is truncated/],
      [Buffer.concat([ZSTD_MAGIC, hex('00 00'), zstdBlock(true, 0, 0), hex('ff')]), /magic number is truncated/],
    ];
    for (const [bytes, message] of bad) {
      expect(() => zstdDecompressedBound(bytes)).toThrow(message);
    }
  });

  it('rejects actual sizes that differ from the declared size, for every codec', async () => {
    const cases: Array<[number, Buffer]> = [
      [0, inner],
      [1, await snappyCompress(inner)],
      [2, deflateSync(inner)],
      [3, await zstdCompress(inner)],
    ];
    for (const [compressorId, payload] of cases) {
      for (const delta of [-1, 1]) {
        const error = await rejection(
          decompressMessage(opCompressed(payload, { compressorId, uncompressedSize: inner.length + delta }), CAP),
        );
        expect(error.code === ErrorCodes.BadValue || error.code === ErrorCodes.ZLibError).toBe(true);
      }
    }
  });

  it('rejects corrupt zlib and zstd payloads', async () => {
    expect(
      (await rejection(decompressMessage(opCompressed(hex('78 9c ff ff ff'), { compressorId: 2 }), CAP))).code,
    ).toBe(ErrorCodes.ZLibError);
    const zstdGarbage = Buffer.concat([ZSTD_MAGIC, hex('00 00'), zstdBlock(true, 2, 4), hex('ffffffff')]);
    expect((await rejection(decompressMessage(opCompressed(zstdGarbage, { compressorId: 3 }), CAP))).message).toMatch(
      /zstd decompression failed/,
    );
  });

  it('rejects nested OP_COMPRESSED, unknown compressors and lying headers', async () => {
    expect(
      (await rejection(decompressMessage(opCompressed(inner, { originalOpcode: OpCode.OP_COMPRESSED }), CAP))).message,
    ).toMatch(/nested/);
    for (const id of [4, 255]) {
      expect((await rejection(decompressMessage(opCompressed(inner, { compressorId: id }), CAP))).message).toMatch(
        /unknown compressor id/,
      );
    }
    expect((await rejection(decompressMessage(opCompressed(inner, { uncompressedSize: -1 }), CAP))).message).toMatch(
      /negative/,
    );
    const short = frame(OpCode.OP_COMPRESSED, [int32(OpCode.OP_MSG), int32(0)]);
    expect((await rejection(decompressMessage(short, CAP))).message).toMatch(/too short/);
    const wrongOpcode = Buffer.from(opCompressed(inner));
    wrongOpcode.writeInt32LE(OpCode.OP_MSG, 12);
    expect((await rejection(decompressMessage(wrongOpcode, CAP))).message).toMatch(/not OP_COMPRESSED/);
    const wrongLength = Buffer.concat([opCompressed(inner), hex('00')]);
    expect((await rejection(decompressMessage(wrongLength, CAP))).message).toMatch(/does not match/);
  });

  it("still decompresses an OP_QUERY (opcode policing is the caller's job)", async () => {
    const query = frame(OpCode.OP_QUERY, [
      int32(0),
      Buffer.from('admin.$cmd\0'),
      int32(0),
      int32(-1),
      bson({ isMaster: 1 }),
    ]);
    const compressed = await compressMessage(query, 'zlib');
    expect(await decompressMessage(compressed, CAP)).toEqual(query);
  });
});
