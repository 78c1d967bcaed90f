/**
 * The 16-byte standard message header: int32 messageLength, requestID, responseTo, opCode,
 * all little-endian. Spec: manual, "MongoDB Wire Protocol", Standard Message Header.
 */

import { ErrorCodes, WireProtocolError } from '../errors.js';
import { HEADER_LENGTH } from './constants.js';

export interface MessageHeader {
  messageLength: number;
  requestId: number;
  responseTo: number;
  opCode: number;
}

/** Reads the header at `offset`. Throws a fatal WireProtocolError if fewer than 16 bytes remain. */
export function readHeader(frame: Uint8Array, offset = 0): MessageHeader {
  if (offset < 0 || frame.length - offset < HEADER_LENGTH) {
    throw new WireProtocolError(
      ErrorCodes.ProtocolError,
      `message header needs ${HEADER_LENGTH} bytes, ${Math.max(0, frame.length - offset)} available`,
      true,
    );
  }
  return {
    messageLength: readInt32LE(frame, offset),
    requestId: readInt32LE(frame, offset + 4),
    responseTo: readInt32LE(frame, offset + 8),
    opCode: readInt32LE(frame, offset + 12),
  };
}

/** Writes all four header fields at `offset` (ids are stored as int32, wrapping like the server). */
export function writeHeader(frame: Uint8Array, header: MessageHeader, offset = 0): void {
  writeInt32LE(frame, offset, header.messageLength);
  writeInt32LE(frame, offset + 4, header.requestId);
  writeInt32LE(frame, offset + 8, header.responseTo);
  writeInt32LE(frame, offset + 12, header.opCode);
}

export function setRequestId(frame: Buffer, id: number): void {
  writeInt32LE(frame, 4, id);
}

export function setResponseTo(frame: Buffer, id: number): void {
  writeInt32LE(frame, 8, id);
}

// Shifts instead of Buffer/DataView methods: works on any Uint8Array view and ignores no byteOffset.
export function readInt32LE(buf: Uint8Array, offset: number): number {
  return (
    (buf[offset] as number) |
    ((buf[offset + 1] as number) << 8) |
    ((buf[offset + 2] as number) << 16) |
    ((buf[offset + 3] as number) << 24)
  );
}

export function writeInt32LE(buf: Uint8Array, offset: number, value: number): void {
  if (offset < 0 || offset + 4 > buf.length) throw new RangeError(`int32 write at ${offset} out of bounds`);
  buf[offset] = value & 0xff;
  buf[offset + 1] = (value >>> 8) & 0xff;
  buf[offset + 2] = (value >>> 16) & 0xff;
  buf[offset + 3] = (value >>> 24) & 0xff;
}
