import { describe, expect, it } from 'vitest';
import { WireProtocolError } from '../../../src/errors.js';
import {
  readHeader,
  readInt32LE,
  setRequestId,
  setResponseTo,
  writeHeader,
  writeInt32LE,
} from '../../../src/wire/header.js';
import { hex } from './fixtures.js';

describe('message header', () => {
  // messageLength 0x15=21, requestId 7, responseTo -1, opCode 2013, then one payload byte.
  const golden = hex('15000000 07000000 ffffffff dd070000 aa');

  it('reads the four little-endian int32 fields', () => {
    expect(readHeader(golden)).toEqual({ messageLength: 21, requestId: 7, responseTo: -1, opCode: 2013 });
  });

  it('reads at an offset and from a plain Uint8Array view', () => {
    const padded = new Uint8Array(Buffer.concat([hex('0102'), golden]));
    expect(readHeader(padded.subarray(1), 1).opCode).toBe(2013);
    expect(readHeader(padded, 2).requestId).toBe(7);
  });

  it('refuses fewer than 16 bytes as a fatal protocol error', () => {
    const error = (() => {
      try {
        readHeader(golden.subarray(0, 15));
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(WireProtocolError);
    expect((error as WireProtocolError).fatal).toBe(true);
    expect(() => readHeader(golden, 6)).toThrow(WireProtocolError);
    expect(() => readHeader(golden, -1)).toThrow(WireProtocolError);
  });

  it('rewrites requestId and responseTo in place', () => {
    const copy = Buffer.from(golden);
    setRequestId(copy, 0x01020304);
    setResponseTo(copy, -2);
    expect(copy.subarray(4, 12)).toEqual(hex('04030201 feffffff'));
    expect(copy.subarray(0, 4)).toEqual(golden.subarray(0, 4));
    expect(copy.subarray(12)).toEqual(golden.subarray(12));
  });

  it('writes a header that reads back, wrapping ids above 2^31 like int32', () => {
    const out = Buffer.alloc(16);
    writeHeader(out, { messageLength: 16, requestId: 0x80000000, responseTo: 3, opCode: 1 });
    expect(out).toEqual(hex('10000000 00000080 03000000 01000000'));
    expect(readHeader(out).requestId).toBe(-0x80000000);
  });

  it('bounds-checks int32 writes', () => {
    expect(() => writeInt32LE(new Uint8Array(3), 0, 1)).toThrow(RangeError);
    expect(readInt32LE(hex('feffffff'), 0)).toBe(-2);
  });
});
