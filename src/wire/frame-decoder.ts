/**
 * Splits a byte stream into whole wire messages.
 *
 * Chunks are kept in a list and never concatenated speculatively: the int32 length is read in
 * place (a length split across chunks costs a 4-byte copy), a frame that lies inside one chunk
 * is handed out as a `subarray` of it, and a frame spanning chunks is copied once into a buffer
 * of exactly its size. The length is checked against [16, maxMessageSize] as soon as its four
 * bytes arrive, so a lying client can make us hold at most maxMessageSize bytes.
 *
 * Frames handed to `onFrame` may alias the pushed chunk. The caller owns the chunk after
 * `push` (a socket never reuses the Buffers it emits), so the frame stays valid afterwards.
 */

import { ErrorCodes, WireProtocolError } from '../errors.js';
import { HEADER_LENGTH } from './constants.js';

export class FrameDecoder {
  #maxMessageSize = 0;
  readonly #chunks: Buffer[] = [];
  /** Bytes of `#chunks[0]` already consumed. */
  #headOffset = 0;
  #buffered = 0;
  #failure: WireProtocolError | null = null;

  constructor(maxMessageSize: number) {
    this.maxMessageSize = maxMessageSize;
  }

  get maxMessageSize(): number {
    return this.#maxMessageSize;
  }

  /** Settable so the limit can follow the upstream's hello (maxMessageSizeBytes). */
  set maxMessageSize(value: number) {
    if (!Number.isSafeInteger(value) || value < HEADER_LENGTH || value > 0x7fffffff) {
      throw new RangeError(`maxMessageSize must be an integer in [${HEADER_LENGTH}, 2^31-1], got ${value}`);
    }
    this.#maxMessageSize = value;
  }

  /** Bytes received but not yet handed out as a frame. */
  get bufferedBytes(): number {
    return this.#buffered;
  }

  /**
   * Appends `chunk` and calls `onFrame` for every complete message, in order. Throws a fatal
   * WireProtocolError on an impossible length; the decoder then stays failed (the stream can
   * no longer be framed) and drops what it held.
   */
  push(chunk: Buffer, onFrame: (frame: Buffer) => void): void {
    if (this.#failure !== null) throw this.#failure;
    if (chunk.length > 0) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
    }
    while (this.#buffered >= 4) {
      const length = this.#peekLength();
      if (length < HEADER_LENGTH || length > this.#maxMessageSize) this.#fail(length);
      if (this.#buffered < length) return;
      // Consume before the callback so a throwing callback leaves the decoder consistent.
      onFrame(this.#take(length));
    }
  }

  #peekLength(): number {
    const head = this.#chunks[0] as Buffer;
    if (head.length - this.#headOffset >= 4) return head.readInt32LE(this.#headOffset);
    const bytes = Buffer.allocUnsafe(4);
    let filled = 0;
    let offset = this.#headOffset;
    for (const chunk of this.#chunks) {
      filled += chunk.copy(bytes, filled, offset, Math.min(chunk.length, offset + 4 - filled));
      offset = 0;
      if (filled === 4) break;
    }
    return bytes.readInt32LE(0);
  }

  #take(length: number): Buffer {
    this.#buffered -= length;
    const head = this.#chunks[0] as Buffer;
    const available = head.length - this.#headOffset;
    if (available >= length) {
      const frame = head.subarray(this.#headOffset, this.#headOffset + length);
      this.#headOffset += length;
      if (this.#headOffset === head.length) this.#shift();
      return frame;
    }
    const frame = Buffer.allocUnsafe(length);
    let filled = 0;
    while (filled < length) {
      const chunk = this.#chunks[0] as Buffer;
      const n = Math.min(chunk.length - this.#headOffset, length - filled);
      chunk.copy(frame, filled, this.#headOffset, this.#headOffset + n);
      filled += n;
      this.#headOffset += n;
      if (this.#headOffset === chunk.length) this.#shift();
    }
    return frame;
  }

  #shift(): void {
    this.#chunks.shift();
    this.#headOffset = 0;
  }

  #fail(length: number): never {
    const why =
      length < 0
        ? 'is negative'
        : length < HEADER_LENGTH
          ? `is shorter than the ${HEADER_LENGTH}-byte header`
          : `exceeds maxMessageSizeBytes (${this.#maxMessageSize})`;
    this.#failure = new WireProtocolError(
      ErrorCodes.ProtocolError,
      `invalid message length ${length}: it ${why}`,
      true,
    );
    this.#chunks.length = 0;
    this.#headOffset = 0;
    this.#buffered = 0;
    throw this.#failure;
  }
}
