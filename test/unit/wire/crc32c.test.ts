import { crc32c as reference } from '@node-rs/crc32';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { computeChecksum, crc32c, hasValidChecksum, storedChecksum, writeChecksum } from '../../../src/wire/crc32c.js';

describe('crc32c', () => {
  it('matches the standard check value', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(0))).toBe(0);
  });

  it('continues a running checksum', () => {
    const data = Buffer.from('hello, world');
    expect(crc32c(data.subarray(5), crc32c(data.subarray(0, 5)))).toBe(crc32c(data));
  });

  it('agrees with @node-rs/crc32 and is always unsigned', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const ours = crc32c(bytes);
        expect(ours).toBe(reference(bytes) >>> 0);
        expect(ours).toBeGreaterThanOrEqual(0);
      }),
    );
  });

  it('writes, reads and verifies the trailing checksum', () => {
    const message = Buffer.concat([Buffer.from('some message bytes'), Buffer.alloc(4)]);
    expect(hasValidChecksum(message)).toBe(false);
    writeChecksum(message);
    expect(storedChecksum(message)).toBe(reference(message.subarray(0, message.length - 4)) >>> 0);
    expect(computeChecksum(message)).toBe(storedChecksum(message));
    expect(hasValidChecksum(message)).toBe(true);
    expect(hasValidChecksum(new Uint8Array(3))).toBe(false);
    expect(() => storedChecksum(new Uint8Array(3))).toThrow(RangeError);
    expect(() => computeChecksum(new Uint8Array(3))).toThrow(RangeError);
  });
});
