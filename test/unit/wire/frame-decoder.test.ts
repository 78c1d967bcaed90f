import { describe, expect, it } from 'vitest';
import { WireProtocolError } from '../../../src/errors.js';
import { ASSEMBLE_MIN_BYTES, FrameDecoder } from '../../../src/wire/frame-decoder.js';
import { deflateSync } from 'node:zlib';
import { bson, cstring, frame, int32, kind0, kind1, opMsg } from './fixtures.js';

const msgA = opMsg(0, [kind0(bson({ ping: 1, $db: 'admin' }))], { requestId: 1 });
const msgB = opMsg(0, [kind0(bson({ find: 'c', filter: { a: 'x'.repeat(40) }, $db: 't' }))], { requestId: 2 });
const tiny = frame(2013, [], { requestId: 3 }); // a bare 16-byte header is a valid frame
const withSequence = opMsg(2, [
  kind0(bson({ insert: 'c', $db: 'd' })),
  kind1('documents', [bson({ a: 1 }), bson({ b: 2 })]),
]);
const legacyQuery = frame(2004, [int32(0), cstring('admin.$cmd'), int32(0), int32(-1), bson({ isMaster: 1 })]);
const compressed = frame(2012, [
  int32(2013),
  int32(msgA.length - 16),
  Buffer.from([2]),
  deflateSync(msgA.subarray(16)),
]);
const fixtures = [msgA, msgB, tiny, withSequence, legacyQuery, compressed];

function collect(decoder: FrameDecoder, chunks: Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  for (const chunk of chunks) decoder.push(chunk, (f) => out.push(Buffer.from(f)));
  return out;
}

function fatalError(run: () => void): WireProtocolError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(WireProtocolError);
    expect((error as WireProtocolError).fatal).toBe(true);
    return error as WireProtocolError;
  }
  throw new Error('expected a WireProtocolError');
}

describe('FrameDecoder', () => {
  it('assembles big frames in their own buffer, whatever the chunking, with the next frames intact', () => {
    const big = opMsg(0, [kind0(bson({ insert: 'c', $db: 'd', pad: 'p'.repeat(40 * ASSEMBLE_MIN_BYTES) }))], {
      requestId: 7,
    });
    const stream = Buffer.concat([msgA, big, msgB, big, tiny]);
    for (const size of [1_000, 4_093, 65_536, 100_003, stream.length]) {
      const decoder = new FrameDecoder(64 * 1024 * 1024);
      const chunks: Buffer[] = [];
      for (let at = 0; at < stream.length; at += size) chunks.push(stream.subarray(at, at + size));
      const out = collect(decoder, chunks);
      // Compared with Buffer.equals: deep equality of MiB-sized buffers is slow.
      const expected = [msgA, big, msgB, big, tiny];
      expect(out.length, `chunks of ${size}`).toBe(expected.length);
      expect(
        out.every((f, i) => f.equals(expected[i]!)),
        `chunks of ${size}`,
      ).toBe(true);
      expect(decoder.bufferedBytes).toBe(0);
      // Every byte of a frame that spanned chunks was copied once (the chunks are garbage).
      if (size < big.length) expect(decoder.takeCopiedBytes()).toBeGreaterThanOrEqual(2 * big.length);
      expect(decoder.takeCopiedBytes()).toBe(0);
    }
    // Part of a big frame: counted as buffered while it is assembled.
    const decoder = new FrameDecoder(64 * 1024 * 1024);
    const half = Math.floor(big.length / 2);
    collect(decoder, [big.subarray(0, half)]);
    expect(decoder.bufferedBytes).toBe(half);
  });

  it('emits a frame pushed whole as a view of the chunk (no copy)', () => {
    const decoder = new FrameDecoder(1024);
    const seen: Buffer[] = [];
    decoder.push(msgA, (f) => seen.push(f));
    expect(seen).toHaveLength(1);
    expect(seen[0]).toEqual(msgA);
    expect(seen[0]?.buffer).toBe(msgA.buffer);
    expect(decoder.bufferedBytes).toBe(0);
  });

  it('reassembles a message split at every byte offset', () => {
    for (const message of fixtures) {
      for (let cut = 0; cut <= message.length; cut++) {
        const decoder = new FrameDecoder(1024);
        const out = collect(decoder, [message.subarray(0, cut), message.subarray(cut)]);
        expect(out).toEqual([message]);
        expect(decoder.bufferedBytes).toBe(0);
      }
    }
  });

  it('reassembles two messages split at every pair of offsets', () => {
    const stream = Buffer.concat([msgA, tiny, msgB]);
    for (let i = 0; i <= stream.length; i += 3) {
      for (let j = i; j <= stream.length; j += 5) {
        const decoder = new FrameDecoder(1024);
        const out = collect(decoder, [stream.subarray(0, i), stream.subarray(i, j), stream.subarray(j)]);
        expect(out).toEqual([msgA, tiny, msgB]);
      }
    }
  });

  it('handles one byte at a time', () => {
    const stream = Buffer.concat(fixtures);
    const decoder = new FrameDecoder(1024);
    const chunks = [...stream].map((b) => Buffer.from([b]));
    expect(collect(decoder, chunks)).toEqual(fixtures);
  });

  it('emits many frames from one chunk, in order, and keeps a trailing partial frame', () => {
    const decoder = new FrameDecoder(1024);
    const partial = msgB.subarray(0, 10);
    const seen: Buffer[] = [];
    decoder.push(Buffer.concat([msgA, msgB, tiny, msgA, partial]), (f) => seen.push(f));
    expect(seen).toEqual([msgA, msgB, tiny, msgA]);
    expect(decoder.bufferedBytes).toBe(10);
    decoder.push(msgB.subarray(10), (f) => seen.push(f));
    expect(seen[4]).toEqual(msgB);
    expect(decoder.bufferedBytes).toBe(0);
  });

  it('copies a frame spanning chunks into a buffer of exactly its size', () => {
    const decoder = new FrameDecoder(1024);
    const seen: Buffer[] = [];
    decoder.push(msgA.subarray(0, 7), (f) => seen.push(f));
    decoder.push(msgA.subarray(7), (f) => seen.push(f));
    expect(seen[0]?.length).toBe(msgA.length);
    expect(seen[0]).toEqual(msgA);
  });

  it('ignores empty chunks', () => {
    const decoder = new FrameDecoder(1024);
    expect(collect(decoder, [Buffer.alloc(0), msgA, Buffer.alloc(0)])).toEqual([msgA]);
  });

  it('accepts exactly maxMessageSize and rejects one byte more before buffering the body', () => {
    const exact = frame(2013, [Buffer.alloc(84)]);
    expect(collect(new FrameDecoder(100), [exact])).toEqual([exact]);
    const decoder = new FrameDecoder(99);
    const error = fatalError(() => decoder.push(exact.subarray(0, 4), () => {}));
    expect(error.message).toMatch(/exceeds maxMessageSizeBytes \(99\)/);
  });

  it('rejects lengths below the header size, zero and negative', () => {
    for (const length of [15, 0, 4, -1, -0x80000000]) {
      const decoder = new FrameDecoder(1024);
      const error = fatalError(() => decoder.push(int32(length), () => {}));
      expect(error.message).toMatch(length < 0 ? /negative/ : /shorter than the 16-byte header/);
    }
  });

  it('checks a length split across chunks as soon as its 4 bytes arrive', () => {
    const decoder = new FrameDecoder(1024);
    decoder.push(Buffer.from([0xff, 0xff]), () => {});
    expect(decoder.bufferedBytes).toBe(2);
    fatalError(() => decoder.push(Buffer.from([0xff, 0x7f, 1, 2, 3]), () => {}));
  });

  it('stays failed after a fatal error and drops what it held', () => {
    const decoder = new FrameDecoder(1024);
    fatalError(() => decoder.push(Buffer.concat([msgA, int32(5)]), () => {}));
    expect(decoder.bufferedBytes).toBe(0);
    const again = fatalError(() => decoder.push(msgA, () => {}));
    expect(again.message).toMatch(/invalid message length 5/);
  });

  it('discard (the stream closed) drops a big frame being assembled and the chunks held, and refuses more', () => {
    const big = frame(2013, [Buffer.alloc(200_000, 7)]);
    const decoder = new FrameDecoder(1_000_000);
    decoder.push(big.subarray(0, 100_000), () => expect.fail('no frame yet'));
    expect(decoder.reservedBytes).toBe(big.length);
    decoder.discard();
    expect([decoder.bufferedBytes, decoder.reservedBytes]).toEqual([0, 0]);
    expect(fatalError(() => decoder.push(big.subarray(100_000), () => expect.fail('discarded'))).message).toMatch(
      /closed/,
    );
  });

  it('delivers frames before a bad one in the same chunk', () => {
    const decoder = new FrameDecoder(1024);
    const seen: Buffer[] = [];
    fatalError(() => decoder.push(Buffer.concat([msgA, int32(-7)]), (f) => seen.push(f)));
    expect(seen).toEqual([msgA]);
  });

  it('applies a lowered maxMessageSize to the next frame', () => {
    const decoder = new FrameDecoder(1024);
    decoder.push(msgA, () => {});
    decoder.maxMessageSize = 20;
    expect(decoder.maxMessageSize).toBe(20);
    fatalError(() => decoder.push(msgA, () => {}));
  });

  it('validates maxMessageSize', () => {
    expect(() => new FrameDecoder(15)).toThrow(RangeError);
    expect(() => new FrameDecoder(1.5)).toThrow(RangeError);
    expect(() => new FrameDecoder(2 ** 31)).toThrow(RangeError);
  });

  it('stays consistent when the callback throws', () => {
    const decoder = new FrameDecoder(1024);
    expect(() =>
      decoder.push(Buffer.concat([msgA, msgB]), () => {
        throw new Error('boom');
      }),
    ).toThrow('boom');
    const rest: Buffer[] = [];
    decoder.push(Buffer.alloc(0), (f) => rest.push(f));
    expect(rest).toEqual([msgB]);
  });

  it('reassembles a large frame from many small chunks', () => {
    const big = frame(2013, [Buffer.alloc(200_000, 7)]);
    const decoder = new FrameDecoder(1_000_000);
    const chunks: Buffer[] = [];
    for (let i = 0; i < big.length; i += 1000) chunks.push(big.subarray(i, i + 1000));
    expect(collect(decoder, chunks)).toEqual([big]);
  });
});

describe('FrameDecoder.pushTransient (a socket reading into one reused buffer)', () => {
  /**
   * Pushes each chunk through one scratch buffer that is overwritten right after the call, as a
   * reused read buffer is by the next read: a frame that aliased it would come out corrupted.
   * Frames are compared only at the end, uncopied.
   */
  function collectTransient(decoder: FrameDecoder, chunks: Buffer[], scratchSize = 1 << 20): Buffer[] {
    const scratch = Buffer.alloc(scratchSize);
    const out: Buffer[] = [];
    for (const chunk of chunks) {
      for (let at = 0; at < chunk.length || at === 0; at += scratchSize) {
        const piece = chunk.subarray(at, at + scratchSize);
        piece.copy(scratch);
        decoder.pushTransient(scratch.subarray(0, piece.length), (f) => out.push(f));
        scratch.fill(0xee);
        if (chunk.length === 0) break;
      }
    }
    return out;
  }

  function chunked(stream: Buffer, size: number): Buffer[] {
    const chunks: Buffer[] = [];
    for (let at = 0; at < stream.length; at += size) chunks.push(stream.subarray(at, at + size));
    return chunks;
  }

  it('reassembles every fixture (compressed and legacy frames too) split at every byte offset', () => {
    for (const message of fixtures) {
      for (let cut = 0; cut <= message.length; cut++) {
        const decoder = new FrameDecoder(1024);
        const out = collectTransient(decoder, [message.subarray(0, cut), message.subarray(cut)]);
        expect(out).toEqual([message]);
        expect(decoder.bufferedBytes).toBe(0);
        expect(decoder.reservedBytes).toBe(0);
      }
    }
  });

  it('reassembles three messages split at every pair of offsets', () => {
    const stream = Buffer.concat([msgA, tiny, compressed, msgB]);
    for (let i = 0; i <= stream.length; i += 3) {
      for (let j = i; j <= stream.length; j += 5) {
        const decoder = new FrameDecoder(1024);
        const out = collectTransient(decoder, [stream.subarray(0, i), stream.subarray(i, j), stream.subarray(j)]);
        expect(out).toEqual([msgA, tiny, compressed, msgB]);
      }
    }
  });

  it('handles one byte at a time, and many frames in one read', () => {
    const stream = Buffer.concat(fixtures);
    const chunks = [...stream].map((b) => Buffer.from([b]));
    expect(collectTransient(new FrameDecoder(1024), chunks)).toEqual(fixtures);
    expect(collectTransient(new FrameDecoder(1024), [stream])).toEqual(fixtures);
  });

  it('copies every frame out of the read buffer into a buffer of exactly its size', () => {
    const decoder = new FrameDecoder(1024);
    const read = Buffer.concat([msgA, msgB]);
    const seen: Buffer[] = [];
    decoder.pushTransient(read, (f) => seen.push(f));
    read.fill(0xee);
    expect(seen).toEqual([msgA, msgB]);
    expect(seen.map((f) => f.length)).toEqual([msgA.length, msgB.length]);
  });

  it('assembles big frames whatever the read sizes, next to small ones, mixed with owned chunks', () => {
    const big = opMsg(0, [kind0(bson({ insert: 'c', $db: 'd', pad: 'p'.repeat(40 * ASSEMBLE_MIN_BYTES) }))], {
      requestId: 7,
    });
    const stream = Buffer.concat([msgA, big, msgB, big, tiny, compressed]);
    const expected = [msgA, big, msgB, big, tiny, compressed];
    for (const size of [1, 1_000, 4_093, 65_536, 100_003, 262_144, stream.length]) {
      if (size === 1) continue; // byte by byte is covered above; 2.6 MB of it is slow
      const decoder = new FrameDecoder(64 * 1024 * 1024);
      const out = collectTransient(decoder, chunked(stream, size), 262_144);
      expect(out.length, `reads of ${size}`).toBe(expected.length);
      expect(
        out.every((f, i) => f.equals(expected[i]!)),
        `reads of ${size}`,
      ).toBe(true);
      expect(decoder.bufferedBytes).toBe(0);
      expect(decoder.reservedBytes).toBe(0);
    }
    // Transient reads and owned chunks on one decoder (a split length is held as an owned copy).
    let seed = 42;
    const random = (): number => {
      seed = (seed * 1_103_515_245 + 12_345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
    for (let round = 0; round < 20; round++) {
      const decoder = new FrameDecoder(64 * 1024 * 1024);
      const out: Buffer[] = [];
      let at = 0;
      while (at < stream.length) {
        const size = 1 + Math.floor(random() * (random() < 0.5 ? 40 : 300_000));
        const chunk = stream.subarray(at, at + size);
        at += chunk.length;
        if (random() < 0.5) decoder.push(Buffer.from(chunk), (f) => out.push(f));
        else out.push(...collectTransient(decoder, [chunk], 262_144));
      }
      expect(out.length).toBe(expected.length);
      expect(out.every((f, i) => f.equals(expected[i]!))).toBe(true);
      expect(decoder.bufferedBytes).toBe(0);
    }
  });

  it('never reserves more than 16 times what arrived for a frame that is not whole', () => {
    const claimed = 48_000_000;
    const header = Buffer.concat([int32(claimed), int32(1), int32(0), int32(2013)]);
    for (const readSize of [1_000, 65_536, 262_144]) {
      const decoder = new FrameDecoder(claimed);
      let received = 0;
      decoder.pushTransient(header, () => {});
      received += header.length;
      while (received < 4_000_000) {
        decoder.pushTransient(Buffer.alloc(readSize, 1), () => {});
        received += readSize;
        expect(decoder.bufferedBytes).toBe(received);
        expect(decoder.reservedBytes).toBeLessThanOrEqual(Math.max(received, 16 * received));
        if (received < claimed / 16) expect(decoder.reservedBytes).toBe(received);
      }
      // Past a sixteenth the frame has its own buffer of the claimed size.
      expect(decoder.reservedBytes).toBe(claimed);
    }
  });

  it('rejects a length over maxMessageSize or under the header, at a boundary or split, and stays failed', () => {
    const exact = frame(2013, [Buffer.alloc(84)]);
    expect(collectTransient(new FrameDecoder(100), [exact])).toEqual([exact]);
    const over = new FrameDecoder(99);
    expect(fatalError(() => over.pushTransient(exact, () => {})).message).toMatch(/exceeds maxMessageSizeBytes \(99\)/);
    expect(over.bufferedBytes).toBe(0);
    fatalError(() => over.pushTransient(msgA, () => {}));
    for (const length of [15, 0, -1]) {
      const decoder = new FrameDecoder(1024);
      fatalError(() => decoder.pushTransient(int32(length), () => {}));
    }
    const split = new FrameDecoder(99);
    split.pushTransient(exact.subarray(0, 2), () => {});
    expect(split.bufferedBytes).toBe(2);
    fatalError(() => split.pushTransient(exact.subarray(2), () => {}));
    expect(split.bufferedBytes).toBe(0);
    expect(split.reservedBytes).toBe(0);
    // Frames before a bad length in the same read are delivered.
    const seen: Buffer[] = [];
    fatalError(() => new FrameDecoder(1024).pushTransient(Buffer.concat([msgA, int32(-7)]), (f) => seen.push(f)));
    expect(seen).toEqual([msgA]);
    // A big frame over the limit fails before anything of it is reserved.
    const small = new FrameDecoder(64 * 1024);
    const big = frame(2013, [Buffer.alloc(100_000)]);
    fatalError(() => small.pushTransient(big.subarray(0, 70_000), () => {}));
    expect(small.reservedBytes).toBe(0);
  });
});
