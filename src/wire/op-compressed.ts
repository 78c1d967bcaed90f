/**
 * OP_COMPRESSED (opcode 2012). Spec: mongodb/specifications source/compression/OP_COMPRESSED.md.
 *
 *   header | int32 originalOpcode | int32 uncompressedSize | uint8 compressorId | compressed bytes
 *
 * uncompressedSize counts the original message without its 16-byte header. Every failure is a
 * fatal WireProtocolError: the inner message is unreadable, so there is nothing to answer.
 */

import { ErrorCodes, WireProtocolError } from '../errors.js';
import { type CompressorName, compressBytes, compressorIdOf, decompressBytes } from './compression.js';
import { HEADER_LENGTH, OpCode } from './constants.js';
import { readHeader, readInt32LE, writeHeader, writeInt32LE } from './header.js';

export { type CompressorName, compressorIdOf, compressorNameOf } from './compression.js';

/** Bytes between the header and the compressed payload. */
const COMPRESSION_HEADER_LENGTH = 9;

export interface OpCompressedHeader {
  requestId: number;
  responseTo: number;
  originalOpcode: number;
  uncompressedSize: number;
  compressorId: number;
}

function fatal(message: string, code: number = ErrorCodes.ProtocolError): never {
  throw new WireProtocolError(code, message, true);
}

/** Reads and checks the OP_COMPRESSED fields (not the payload). */
export function readOpCompressedHeader(frame: Uint8Array): OpCompressedHeader {
  const header = readHeader(frame);
  if (header.opCode !== OpCode.OP_COMPRESSED) fatal(`opCode ${header.opCode} is not OP_COMPRESSED`);
  if (header.messageLength !== frame.length) {
    fatal(`messageLength ${header.messageLength} does not match the ${frame.length}-byte frame`);
  }
  if (frame.length < HEADER_LENGTH + COMPRESSION_HEADER_LENGTH) fatal('OP_COMPRESSED too short for its header');
  const originalOpcode = readInt32LE(frame, HEADER_LENGTH);
  const uncompressedSize = readInt32LE(frame, HEADER_LENGTH + 4);
  const compressorId = frame[HEADER_LENGTH + 8] as number;
  if (originalOpcode === OpCode.OP_COMPRESSED) fatal('nested OP_COMPRESSED is not allowed');
  if (uncompressedSize < 0) fatal(`negative uncompressedSize ${uncompressedSize}`);
  return { requestId: header.requestId, responseTo: header.responseTo, originalOpcode, uncompressedSize, compressorId };
}

/**
 * Decompresses an OP_COMPRESSED frame and returns the original message as a whole frame: a
 * header with the original opcode, the same requestId and responseTo, and its own length.
 * The declared uncompressedSize (the body, without the 16-byte header) must be at most
 * `maxUncompressedSize`; that is checked before any decompression.
 */
export async function decompressMessage(frame: Buffer, maxUncompressedSize: number): Promise<Buffer> {
  const info = readOpCompressedHeader(frame);
  if (info.uncompressedSize > maxUncompressedSize) {
    fatal(
      `uncompressedSize ${info.uncompressedSize} exceeds the limit of ${maxUncompressedSize} bytes`,
      ErrorCodes.BadValue,
    );
  }
  const payload = frame.subarray(HEADER_LENGTH + COMPRESSION_HEADER_LENGTH);
  const body = await decompressBytes(info.compressorId, payload, info.uncompressedSize, maxUncompressedSize);
  const out = Buffer.allocUnsafe(HEADER_LENGTH + body.length);
  body.copy(out, HEADER_LENGTH);
  writeHeader(out, {
    messageLength: out.length,
    requestId: info.requestId,
    responseTo: info.responseTo,
    opCode: info.originalOpcode,
  });
  return out;
}

/**
 * Wraps `frame` (a whole message) in OP_COMPRESSED with the same requestId and responseTo.
 * The caller decides whether the message may be compressed (UNCOMPRESSIBLE_COMMANDS).
 */
export async function compressMessage(frame: Buffer, compressor: CompressorName, zlibLevel?: number): Promise<Buffer> {
  const header = readHeader(frame);
  if (header.messageLength !== frame.length) {
    throw new RangeError(`messageLength ${header.messageLength} does not match the ${frame.length}-byte frame`);
  }
  if (header.opCode === OpCode.OP_COMPRESSED) throw new RangeError('message is already OP_COMPRESSED');
  const compressorId = compressorIdOf(compressor);
  if (compressorId === null) throw new RangeError(`unknown compressor ${String(compressor)}`);
  const compressed = await compressBytes(frame.subarray(HEADER_LENGTH), compressor, zlibLevel);
  const out = Buffer.allocUnsafe(HEADER_LENGTH + COMPRESSION_HEADER_LENGTH + compressed.length);
  writeInt32LE(out, HEADER_LENGTH, header.opCode);
  writeInt32LE(out, HEADER_LENGTH + 4, frame.length - HEADER_LENGTH);
  out[HEADER_LENGTH + 8] = compressorId;
  compressed.copy(out, HEADER_LENGTH + COMPRESSION_HEADER_LENGTH);
  writeHeader(out, {
    messageLength: out.length,
    requestId: header.requestId,
    responseTo: header.responseTo,
    opCode: OpCode.OP_COMPRESSED,
  });
  return out;
}
