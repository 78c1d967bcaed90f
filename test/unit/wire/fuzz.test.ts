import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ProxyError } from '../../../src/errors.js';
import { validateDocument } from '../../../src/wire/bson-scan.js';
import { FrameDecoder } from '../../../src/wire/frame-decoder.js';
import { decompressMessage } from '../../../src/wire/op-compressed.js';
import { encodeOpMsg, parseOpMsg } from '../../../src/wire/op-msg.js';
import { parseOpQuery, parseOpReply, unwrapLegacyCommand } from '../../../src/wire/op-query.js';
import { bson, frame, int32, kind0, kind1, opMsg, uint32 } from './fixtures.js';

const opts = { maxBsonDepth: 50 };

/** Runs `run`; anything thrown must be a ProxyError (never a TypeError, RangeError...). */
function onlyProxyErrors(run: () => unknown): void {
  try {
    run();
  } catch (error) {
    if (!ProxyError.is(error)) throw error;
  }
}

async function onlyProxyErrorsAsync(run: () => Promise<unknown>): Promise<void> {
  try {
    await run();
  } catch (error) {
    if (!ProxyError.is(error)) throw error;
  }
}

const validMessages = [
  opMsg(0, [kind0(bson({ ping: 1, $db: 'admin' }))]),
  opMsg(2, [
    kind0(bson({ insert: 'c', $db: 'd' })),
    kind1('documents', [bson({ a: 1 }), bson({ b: [1, { c: 'x' }] })]),
  ]),
  opMsg(0, [kind1('updates', [bson({ q: {}, u: { $set: { a: 1 } } })]), kind0(bson({ update: 'c', $db: 'd' }))]),
];

/** A valid message with random byte edits, truncation or extension, header length fixed up. */
const mutatedMessage = fc
  .tuple(
    fc.constantFrom(...validMessages),
    fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
    fc.integer({ min: -8, max: 8 }),
    fc.boolean(),
  )
  .map(([base, edits, resize, keepLength]) => {
    let bytes = Buffer.from(base);
    for (const [at, value] of edits) {
      const i = 16 + (at % (bytes.length - 16));
      bytes[i] = value;
    }
    if (resize < 0) bytes = bytes.subarray(0, Math.max(16, bytes.length + resize));
    else if (resize > 0) bytes = Buffer.concat([bytes, Buffer.alloc(resize, resize)]);
    if (keepLength) bytes.writeInt32LE(bytes.length, 0);
    return Buffer.from(bytes);
  });

describe('fuzz: random bytes never throw anything but ProxyError', () => {
  it('validateDocument', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), fc.boolean(), (bytes, dupes) => {
        const buf = Buffer.from(bytes);
        if (buf.length >= 4) buf.writeInt32LE(buf.length, 0); // get past the length check more often
        onlyProxyErrors(() => validateDocument(buf, 0, { maxDepth: 3, rejectDuplicateKeys: dupes }));
      }),
      { numRuns: 20_000 },
    );
  });

  it('parseOpMsg on random payloads behind a plausible header', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 100 }), fc.boolean(), (payload, fixLength) => {
        const bytes = frame(2013, [Buffer.from(payload)], fixLength ? {} : { length: 16 + payload.length + 1 });
        onlyProxyErrors(() => parseOpMsg(bytes, opts));
      }),
      { numRuns: 20_000 },
    );
  });

  it('parseOpMsg on mutated valid messages; whatever parses re-encodes to an equal parse', () => {
    fc.assert(
      fc.property(mutatedMessage, (bytes) => {
        let parsed;
        try {
          parsed = parseOpMsg(bytes, opts);
        } catch (error) {
          if (!ProxyError.is(error)) throw error;
          return;
        }
        for (const checksum of [false, true]) {
          expect(parseOpMsg(encodeOpMsg({ ...parsed, checksum }), opts)).toEqual(parsed);
        }
      }),
      { numRuns: 20_000 },
    );
  });

  it('parseOpQuery, parseOpReply and unwrapLegacyCommand', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), (payload) => {
        onlyProxyErrors(() => parseOpReply(frame(1, [Buffer.from(payload)]), opts));
        onlyProxyErrors(() => {
          const q = parseOpQuery(
            frame(2004, [int32(0), Buffer.from('admin.$cmd\0'), int32(0), int32(-1), Buffer.from(payload)]),
            opts,
          );
          unwrapLegacyCommand(q.query);
        });
        onlyProxyErrors(() => parseOpQuery(frame(2004, [Buffer.from(payload)]), opts));
      }),
      { numRuns: 10_000 },
    );
  });

  it('FrameDecoder: random streams either frame or throw a fatal ProxyError', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 10 }), (chunks) => {
        const decoder = new FrameDecoder(64);
        onlyProxyErrors(() => {
          for (const chunk of chunks) {
            decoder.push(Buffer.from(chunk), (f) => {
              expect(f.length).toBe(f.readInt32LE(0));
              expect(f.length).toBeGreaterThanOrEqual(16);
              expect(f.length).toBeLessThanOrEqual(64);
            });
          }
        });
      }),
      { numRuns: 10_000 },
    );
  });

  it('FrameDecoder: any chunking of valid frames yields the same frames', () => {
    const stream = Buffer.concat(validMessages);
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: stream.length - 1 }), { maxLength: 20 }), (cuts) => {
        const points = [0, ...cuts.sort((a, b) => a - b), stream.length];
        const decoder = new FrameDecoder(1024);
        const out: Buffer[] = [];
        for (let i = 0; i + 1 < points.length; i++) {
          decoder.push(stream.subarray(points[i], points[i + 1]), (f) => out.push(Buffer.from(f)));
        }
        expect(out).toEqual(validMessages);
      }),
      { numRuns: 2_000 },
    );
  });

  it('decompressMessage with every compressor id on random payloads', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 5 }),
        fc.integer({ min: -2, max: 300 }),
        fc.uint8Array({ maxLength: 64 }),
        async (id, size, payload) => {
          const bytes = frame(2012, [int32(2013), int32(size), Buffer.from([id]), Buffer.from(payload)]);
          await onlyProxyErrorsAsync(() => decompressMessage(bytes, 256));
        },
      ),
      { numRuns: 3_000 },
    );
  });

  it('decompressMessage on zstd-looking random payloads', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 48 }), fc.integer({ min: 0, max: 1000 }), async (tail, size) => {
        const payload = Buffer.concat([Buffer.from('28b52ffd', 'hex'), Buffer.from(tail)]);
        const bytes = frame(2012, [int32(2013), int32(size), Buffer.from([3]), payload]);
        await onlyProxyErrorsAsync(() => decompressMessage(bytes, 4096));
      }),
      { numRuns: 3_000 },
    );
  });

  it('flag bits: anything parsed carries only known bits', () => {
    fc.assert(
      fc.property(fc.nat({ max: 0xffffffff }), (flags) => {
        try {
          const msg = parseOpMsg(opMsg(flags & ~1, [kind0(bson({ ping: 1 }))]), opts);
          expect(msg.flagBits & ~((1 << 1) | (1 << 16))).toBe(0);
        } catch (error) {
          if (!ProxyError.is(error)) throw error;
          expect(flags & 0xfffc).not.toBe(0);
        }
      }),
    );
    expect(uint32(0xffffffff).readUInt32LE(0)).toBe(0xffffffff);
  });
});
