/**
 * Compression codecs for OP_COMPRESSED (spec: mongodb/specifications
 * source/compression/OP_COMPRESSED.md): snappy (raw format), zlib (RFC 1950) and zstd.
 *
 * Decompression is bomb-proof: no codec may produce more than a bound fixed before it runs.
 *   zlib:   inflate with maxOutputLength = the declared size.
 *   snappy: the raw format starts with a varint of the uncompressed length; it must equal the
 *           declared size, and the decoder allocates exactly that.
 *   zstd:   @mongodb-js/zstd takes no output cap, so the frame and block headers are walked
 *           first (RFC 8878) to bound the output; anything unbounded or unusual is refused.
 *           Its own encoder writes no Frame_Content_Size, so a compressed block can only be
 *           bounded by Block_Maximum_Size (128 KiB) and the bound is held to the cap, not to
 *           the declared size; the exact size is checked after decoding.
 */

import { promisify } from 'node:util';
import { deflate, inflate } from 'node:zlib';
import type * as ZstdModule from '@mongodb-js/zstd';
import type * as SnappyModule from 'snappy';
import { ErrorCodes, WireProtocolError } from '../errors.js';
import { CompressorId, type CompressorIdValue } from './constants.js';
import { readInt32LE } from './header.js';
import { onFirstUse } from './lazy-module.js';

export type CompressorName = keyof typeof CompressorId;

const inflateAsync = promisify(inflate);
const deflateAsync = promisify(deflate);

/**
 * The native codecs are loaded on first use, not at import (issue 16: ~6 MiB of RSS a proxy
 * without compression never needs); `loadCodecs` loads the configured ones at start and reload,
 * so a broken install still fails there.
 */
const snappy = onFirstUse<typeof SnappyModule>('snappy');
const zstd = onFirstUse<typeof ZstdModule>('@mongodb-js/zstd');

/** Loads the native codecs among `compressors` (zlib is Node's own); throws when one cannot load. */
export function loadCodecs(compressors: readonly CompressorName[]): void {
  if (compressors.includes('snappy')) snappy();
  if (compressors.includes('zstd')) zstd();
}

export function compressorIdOf(name: string): CompressorIdValue | null {
  return Object.hasOwn(CompressorId, name) ? CompressorId[name as CompressorName] : null;
}

export function compressorNameOf(id: number): CompressorName | null {
  for (const [name, value] of Object.entries(CompressorId)) if (value === id) return name as CompressorName;
  return null;
}

function fail(message: string, code: number = ErrorCodes.ProtocolError, cause?: unknown): never {
  throw new WireProtocolError(code, message, true, cause === undefined ? {} : { cause });
}

/** Compresses `data` with `compressor`; `noop` returns a copy. */
export async function compressBytes(data: Uint8Array, compressor: CompressorName, zlibLevel?: number): Promise<Buffer> {
  switch (compressor) {
    case 'noop':
      return Buffer.from(data);
    case 'snappy':
      return snappy().compress(data);
    case 'zlib': {
      if (zlibLevel !== undefined && (!Number.isInteger(zlibLevel) || zlibLevel < -1 || zlibLevel > 9)) {
        throw new RangeError(`zlib level must be an integer in [-1, 9], got ${zlibLevel}`);
      }
      return deflateAsync(data, zlibLevel === undefined ? {} : { level: zlibLevel });
    }
    case 'zstd':
      return zstd().compress(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    default:
      throw new RangeError(`unknown compressor ${String(compressor)}`);
  }
}

/**
 * Decompresses `data` that must inflate to exactly `expectedSize` bytes (already checked against
 * the caller's cap, `outputCap`). zlib and snappy are held to `expectedSize` itself. zstd frames
 * without a content size can only be bounded block by block (128 KiB per compressed block), so
 * their bound is held to `outputCap` plus one block of rounding slack; the exact size is checked
 * afterwards. Throws a fatal WireProtocolError on any mismatch or malformed input.
 */
export async function decompressBytes(
  compressorId: number,
  data: Uint8Array,
  expectedSize: number,
  outputCap: number = expectedSize,
): Promise<Buffer> {
  const input = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  let output: Buffer;
  switch (compressorId) {
    case CompressorId.noop:
      output = input;
      break;
    case CompressorId.snappy: {
      const claimed = snappyUncompressedLength(input);
      if (claimed !== expectedSize) {
        fail(`snappy stream claims ${claimed} bytes, OP_COMPRESSED declared ${expectedSize}`, ErrorCodes.BadValue);
      }
      const { uncompress } = snappy();
      output = await codec('snappy', () => uncompress(input, { asBuffer: true }) as Promise<Buffer>);
      break;
    }
    case CompressorId.zlib:
      // maxOutputLength makes inflate stop (and throw) as soon as the output passes the declared size.
      output = await codec('zlib', () => inflateAsync(input, { maxOutputLength: Math.max(1, expectedSize) }));
      break;
    case CompressorId.zstd: {
      const bound = zstdDecompressedBound(input);
      if (bound.exact !== null && bound.exact !== expectedSize) {
        fail(`zstd frames declare ${bound.exact} bytes, OP_COMPRESSED declared ${expectedSize}`, ErrorCodes.BadValue);
      }
      if (bound.max > Math.max(outputCap, expectedSize) + ZSTD_BLOCK_MAX) {
        fail(
          `zstd frames may inflate to ${bound.max} bytes, more than the ${outputCap}-byte limit`,
          ErrorCodes.BadValue,
        );
      }
      const { decompress } = zstd();
      output = await codec('zstd', () => decompress(input));
      break;
    }
    default:
      fail(`unknown compressor id ${compressorId}`, ErrorCodes.BadValue);
  }
  if (output.length !== expectedSize) {
    fail(`decompressed ${output.length} bytes, OP_COMPRESSED declared ${expectedSize}`, ErrorCodes.BadValue);
  }
  return output;
}

async function codec(name: string, run: () => Promise<Buffer>): Promise<Buffer> {
  try {
    return await run();
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    return fail(
      `${name} decompression failed: ${reason}`,
      name === 'zlib' ? ErrorCodes.ZLibError : ErrorCodes.BadValue,
      error,
    );
  }
}

/** The uncompressed length from the varint preamble of a raw snappy stream (max 2^32-1). */
export function snappyUncompressedLength(input: Uint8Array): number {
  let value = 0;
  for (let i = 0; i < 5; i++) {
    if (i >= input.length) fail('snappy preamble is truncated', ErrorCodes.BadValue);
    const byte = input[i] as number;
    value += (byte & 0x7f) * 2 ** (7 * i);
    if ((byte & 0x80) === 0) {
      if (value > 0xffffffff) break;
      return value;
    }
  }
  return fail('snappy preamble is not a valid 32-bit varint', ErrorCodes.BadValue);
}

// ---------------------------------------------------------------------------------------------
// zstd frame walking (RFC 8878 section 3.1).

const ZSTD_MAGIC = 0xfd2fb528;
const ZSTD_SKIPPABLE_MAGIC_MIN = 0x184d2a50;
const ZSTD_SKIPPABLE_MAGIC_MAX = 0x184d2a5f;
/** Block_Maximum_Size: no block, of any type, may decode to more than 128 KiB. */
const ZSTD_BLOCK_MAX = 128 * 1024;
const ZstdBlockType = { raw: 0, rle: 1, compressed: 2, reserved: 3 } as const;

export interface ZstdBound {
  /** Upper bound of the decompressed size of all frames together. */
  max: number;
  /** Sum of Frame_Content_Size when every frame declares it, else null. */
  exact: number | null;
}

/**
 * Walks every frame and block header of a zstd stream without decompressing, and returns an
 * upper bound of its output. Refuses dictionaries, reserved bits and block types, blocks over
 * 128 KiB, a frame whose blocks could not produce its declared content size, and trailing bytes.
 */
export function zstdDecompressedBound(input: Uint8Array): ZstdBound {
  let pos = 0;
  let max = 0;
  let exact: number | null = 0;
  const need = (n: number, what: string): void => {
    if (pos + n > input.length) fail(`zstd ${what} is truncated`, ErrorCodes.BadValue);
  };
  if (input.length === 0) fail('zstd stream is empty', ErrorCodes.BadValue);

  while (pos < input.length) {
    need(4, 'magic number');
    const magic = readInt32LE(input, pos) >>> 0;
    pos += 4;
    if (magic >= ZSTD_SKIPPABLE_MAGIC_MIN && magic <= ZSTD_SKIPPABLE_MAGIC_MAX) {
      need(4, 'skippable frame size');
      const size = readInt32LE(input, pos) >>> 0;
      pos += 4;
      need(size, 'skippable frame');
      pos += size;
      continue;
    }
    if (magic !== ZSTD_MAGIC) fail(`not a zstd frame (magic 0x${magic.toString(16)})`, ErrorCodes.BadValue);

    need(1, 'frame header');
    const descriptor = input[pos++] as number;
    const fcsFlag = descriptor >> 6;
    const singleSegment = (descriptor & 0x20) !== 0;
    const hasChecksum = (descriptor & 0x04) !== 0;
    const dictIdFlag = descriptor & 0x03;
    if ((descriptor & 0x08) !== 0) fail('zstd frame header has the reserved bit set', ErrorCodes.BadValue);
    if (dictIdFlag !== 0) fail('zstd frames with a dictionary are not supported', ErrorCodes.BadValue);
    let windowSize = Number.POSITIVE_INFINITY;
    if (!singleSegment) {
      need(1, 'window descriptor');
      const windowDescriptor = input[pos++] as number;
      const windowBase = 2 ** (10 + (windowDescriptor >> 3));
      windowSize = windowBase + (windowBase / 8) * (windowDescriptor & 7);
    }
    const fcsSize = fcsFlag === 0 ? (singleSegment ? 1 : 0) : 1 << fcsFlag;
    let contentSize: number | null = null;
    if (fcsSize > 0) {
      need(fcsSize, 'frame content size');
      if (fcsSize === 1) contentSize = input[pos] as number;
      else if (fcsSize === 2) contentSize = ((input[pos] as number) | ((input[pos + 1] as number) << 8)) + 256;
      else if (fcsSize === 4) contentSize = readInt32LE(input, pos) >>> 0;
      else {
        const high = readInt32LE(input, pos + 4) >>> 0;
        // A frame above 2^53 bytes is far above any cap; saturate rather than lose precision.
        contentSize = high >= 0x200000 ? Number.MAX_SAFE_INTEGER : high * 2 ** 32 + (readInt32LE(input, pos) >>> 0);
      }
      pos += fcsSize;
      // A single-segment frame's window is its content size.
      if (singleSegment) windowSize = contentSize;
    }
    // Block_Maximum_Size: a block never decodes to more than the window or 128 KiB.
    const blockMax = Math.min(windowSize, ZSTD_BLOCK_MAX);

    let blocksMax = 0;
    for (let last = false; !last;) {
      need(3, 'block header');
      const header = (input[pos] as number) | ((input[pos + 1] as number) << 8) | ((input[pos + 2] as number) << 16);
      pos += 3;
      last = (header & 1) !== 0;
      const type = (header >> 1) & 3;
      const size = header >>> 3;
      if (size > blockMax)
        fail(`zstd block of ${size} bytes exceeds the block maximum ${blockMax}`, ErrorCodes.BadValue);
      if (type === ZstdBlockType.raw) {
        need(size, 'raw block');
        pos += size;
        blocksMax += size;
      } else if (type === ZstdBlockType.rle) {
        need(1, 'RLE block');
        pos += 1;
        blocksMax += size;
      } else if (type === ZstdBlockType.compressed) {
        need(size, 'compressed block');
        pos += size;
        blocksMax += blockMax;
      } else {
        fail('zstd block uses the reserved block type', ErrorCodes.BadValue);
      }
    }
    if (hasChecksum) {
      need(4, 'content checksum');
      pos += 4;
    }

    if (contentSize !== null) {
      if (contentSize > blocksMax)
        fail(`zstd frame declares ${contentSize} bytes but its blocks hold at most ${blocksMax}`, ErrorCodes.BadValue);
      // The decoder checks its output against a declared content size, so that is the bound.
      max += contentSize;
      if (exact !== null) exact += contentSize;
    } else {
      max += blocksMax;
      exact = null;
    }
  }
  return { max, exact };
}
