/**
 * Splits a byte stream into whole wire messages.
 *
 * Chunks are kept in a list and never concatenated speculatively: the int32 length is read in
 * place (a length split across chunks costs a 4-byte copy), a frame that lies inside one chunk
 * is handed out as a `subarray` of it, and a frame spanning chunks is copied once into a buffer
 * of exactly its size. The length is checked against [16, maxMessageSize] as soon as its four
 * bytes arrive, so a lying client can make us hold at most maxMessageSize bytes.
 *
 * A big frame that spans chunks gets its own buffer once a sixteenth of it (at least
 * ASSEMBLE_MIN_BYTES) has arrived, and each further chunk is copied in as it arrives instead of being kept until the frame is
 * whole: socket chunks are small allocations (a partial read is copied to an exact-size buffer
 * by Node) that land in the C allocator's main heap, and holding thousands of them for big
 * frames grew that heap by hundreds of MiB it never gave back; one big buffer per frame is
 * mmapped and returned to the system when freed.
 *
 * Frames handed to `onFrame` may alias the pushed chunk. The caller owns the chunk after
 * `push` (a socket never reuses the Buffers it emits), so the frame stays valid afterwards.
 *
 * `pushTransient` takes bytes that are only valid during the call (a socket reading into one
 * reused buffer, `net` `onread`): nothing of the view is kept. A frame at a frame boundary is
 * copied once into a buffer of exactly its size, at once when it is whole or when a sixteenth of
 * it has arrived (the same bound as above: a lying length reserves at most 16 times what was
 * received), the rest of it copied in as it arrives; anything else (a length split across reads,
 * the start of a frame below its sixteenth) is copied and held as `push` holds chunks, until the
 * frame can have its buffer.
 */

import { ErrorCodes, WireProtocolError } from '../errors.js';
import { HEADER_LENGTH } from './constants.js';

/** A frame is assembled in its own buffer once this much of it (and a sixteenth) has arrived. */
export const ASSEMBLE_MIN_BYTES = 64 * 1024;

export class FrameDecoder {
  #maxMessageSize = 0;
  readonly #chunks: Buffer[] = [];
  /** The big frame being assembled (its chunks already copied in), and how much of it is filled. */
  #assembling: Buffer | undefined;
  #filled = 0;
  /** Bytes copied out of pushed chunks into frames of their own since the last `takeCopiedBytes`. */
  #copied = 0;
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

  /**
   * Bytes copied out of pushed chunks (into a frame spanning chunks) since the last call: the
   * chunks they came from are garbage, which a memory budget may want to count as it happens.
   */
  takeCopiedBytes(): number {
    const copied = this.#copied;
    this.#copied = 0;
    return copied;
  }

  /** Bytes received but not yet handed out as a frame. */
  get bufferedBytes(): number {
    return this.#buffered;
  }

  /** Bytes of memory held for frames not yet handed out: what is buffered, or the size of the frame being assembled. */
  get reservedBytes(): number {
    return this.#assembling === undefined ? this.#buffered : this.#assembling.length;
  }

  /**
   * Appends `chunk` and calls `onFrame` for every complete message, in order. Throws a fatal
   * WireProtocolError on an impossible length; the decoder then stays failed (the stream can
   * no longer be framed) and drops what it held.
   */
  push(chunk: Buffer, onFrame: (frame: Buffer) => void): void {
    if (this.#failure !== null) throw this.#failure;
    const assembling = this.#assembling;
    if (assembling !== undefined) {
      const n = Math.min(assembling.length - this.#filled, chunk.length);
      chunk.copy(assembling, this.#filled, 0, n);
      this.#filled += n;
      this.#copied += n;
      this.#buffered += n;
      if (this.#filled < assembling.length) return;
      this.#assembling = undefined;
      this.#filled = 0;
      this.#buffered -= assembling.length;
      onFrame(assembling);
      if (n === chunk.length) return;
      chunk = chunk.subarray(n);
    }
    if (chunk.length > 0) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
    }
    while (this.#buffered >= 4) {
      const length = this.#peekLength();
      if (length < HEADER_LENGTH || length > this.#maxMessageSize) this.#fail(length);
      if (this.#buffered < length) {
        // Once a sixteenth has arrived: a client lying about a length cannot make the proxy reserve
        // more than 16 times what it actually sent (and was charged for).
        if (this.#buffered >= ASSEMBLE_MIN_BYTES && this.#buffered >= length / 16) this.#startAssembling(length);
        return;
      }
      // Consume before the callback so a throwing callback leaves the decoder consistent.
      onFrame(this.#take(length));
    }
  }

  /**
   * `push` for a view that is only valid during this call (a reused read buffer): whatever is
   * kept is copied, frames handed to `onFrame` never alias `view`. Same checks, same failures.
   * A callback that throws loses the rest of `view` (the caller closes the stream anyway).
   */
  pushTransient(view: Buffer, onFrame: (frame: Buffer) => void): void {
    if (this.#failure !== null) throw this.#failure;
    let at = 0;
    const end = view.length;
    while (at < end) {
      const assembling = this.#assembling;
      if (assembling !== undefined) {
        const n = Math.min(assembling.length - this.#filled, end - at);
        view.copy(assembling, this.#filled, at, at + n);
        this.#filled += n;
        this.#buffered += n;
        at += n;
        if (this.#filled < assembling.length) return;
        this.#assembling = undefined;
        this.#filled = 0;
        this.#buffered -= assembling.length;
        onFrame(assembling);
        continue;
      }
      const available = end - at;
      if (this.#buffered > 0) {
        // Bytes held from an earlier read: first complete the length (a few bytes, held too).
        if (this.#buffered < 4) {
          const n = Math.min(4 - this.#buffered, available);
          this.push(Buffer.from(view.subarray(at, at + n)), onFrame);
          at += n;
          continue;
        }
        // Then, once the frame is whole or a sixteenth of it is here, it gets its buffer and
        // this read is copied straight in; before that, this read is held as well.
        const held = this.#peekLength();
        if (this.#buffered + available < held && this.#buffered + available < held / 16) {
          this.push(Buffer.from(view.subarray(at, end)), onFrame);
          return;
        }
        this.#startAssembling(held);
        continue;
      }
      if (available < 4) {
        this.push(Buffer.from(view.subarray(at, end)), onFrame);
        return;
      }
      const length = view.readInt32LE(at);
      if (length < HEADER_LENGTH || length > this.#maxMessageSize) this.#fail(length);
      if (available < length && available < length / 16) {
        this.push(Buffer.from(view.subarray(at, end)), onFrame);
        return;
      }
      const frame = Buffer.allocUnsafe(length);
      const n = Math.min(length, available);
      view.copy(frame, 0, at, at + n);
      at += n;
      if (n < length) {
        this.#assembling = frame;
        this.#filled = n;
        this.#buffered += n;
        return;
      }
      onFrame(frame);
    }
  }

  /** Moves what is buffered (the start of one frame of `length`) into that frame's own buffer. */
  #startAssembling(length: number): void {
    const frame = Buffer.allocUnsafe(length);
    let filled = 0;
    for (const chunk of this.#chunks) {
      filled += chunk.copy(frame, filled, this.#headOffset);
      this.#headOffset = 0;
    }
    this.#chunks.length = 0;
    this.#assembling = frame;
    this.#filled = filled;
    this.#copied += filled;
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
    this.#copied += length;
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

  /**
   * Drops everything held (the stream is closed): a partly received big frame and its chunks are
   * garbage at once, not when the connection object is. Later pushes are refused.
   */
  discard(): void {
    this.#failure ??= new WireProtocolError(ErrorCodes.ProtocolError, 'the stream was closed', true);
    this.#chunks.length = 0;
    this.#headOffset = 0;
    this.#buffered = 0;
    this.#assembling = undefined;
    this.#filled = 0;
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
    this.#assembling = undefined;
    this.#filled = 0;
    throw this.#failure;
  }
}
