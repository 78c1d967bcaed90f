/**
 * CRC-32C (Castagnoli), the OP_MSG checksum (OP_MSG.md, "checksumPresent"). The checksum covers
 * every byte of the message, header included, except the trailing 4-byte checksum itself.
 */

import type * as Crc32Module from '@node-rs/crc32';
import { readInt32LE, writeInt32LE } from './header.js';
import { onFirstUse } from './lazy-module.js';

const CHECKSUM_LENGTH = 4;

/**
 * The native CRC-32C, loaded with the first checksum rather than at import (issue 16: drivers
 * send checksums rarely, and an idle proxy need not hold the module: ~3 MiB of RSS).
 */
const native = onFirstUse<typeof Crc32Module>('@node-rs/crc32');

/** CRC-32C of `data` as an unsigned 32-bit integer; `initial` continues a running checksum. */
export function crc32c(data: Uint8Array, initial = 0): number {
  return native().crc32c(data, initial) >>> 0;
}

/** The checksum stored in the last 4 bytes of `message` (unsigned). */
export function storedChecksum(message: Uint8Array): number {
  if (message.length < CHECKSUM_LENGTH) throw new RangeError('message too short to hold a checksum');
  return readInt32LE(message, message.length - CHECKSUM_LENGTH) >>> 0;
}

/** The checksum `message` should carry: CRC-32C of all but its last 4 bytes. */
export function computeChecksum(message: Uint8Array): number {
  if (message.length < CHECKSUM_LENGTH) throw new RangeError('message too short to hold a checksum');
  return crc32c(message.subarray(0, message.length - CHECKSUM_LENGTH));
}

export function hasValidChecksum(message: Uint8Array): boolean {
  return message.length >= CHECKSUM_LENGTH && storedChecksum(message) === computeChecksum(message);
}

/** Fills the last 4 bytes of `message` with the checksum of the rest. */
export function writeChecksum(message: Uint8Array): void {
  writeInt32LE(message, message.length - CHECKSUM_LENGTH, computeChecksum(message));
}
