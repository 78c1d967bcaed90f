/**
 * A deliberately dumb wire client for hostile-input tests: it writes whatever bytes it is given
 * and reads back whole frames. Frames are built here by hand (not with the proxy's encoder) so
 * the proxy is never its own oracle.
 */
import { connect } from 'node:net';
import type { Duplex } from 'node:stream';
import { serialize, deserialize, type Document } from 'bson';

/** How long a read waits by default before calling the proxy hung: generous, never a speed bound. */
const HANG_MS = 60_000;

export const OP_REPLY = 1;
export const OP_QUERY = 2004;
export const OP_COMPRESSED = 2012;
export const OP_MSG = 2013;

let requestCounter = 1000;

function header(length: number, requestId: number, responseTo: number, opCode: number): Buffer {
  const h = Buffer.alloc(16);
  h.writeInt32LE(length, 0);
  h.writeInt32LE(requestId, 4);
  h.writeInt32LE(responseTo, 8);
  h.writeInt32LE(opCode, 12);
  return h;
}

export interface BuiltFrame {
  bytes: Buffer;
  requestId: number;
}

/**
 * OP_MSG with one body and optional kind-1 sequences; `flags` as given (no checksum appended).
 * `responseTo` makes it a reply (the fake upstream's).
 */
export function opMsg(
  body: Document | Buffer,
  options: {
    flags?: number;
    sequences?: { id: string; docs: Document[] }[];
    requestId?: number;
    responseTo?: number;
  } = {},
): BuiltFrame {
  const requestId = options.requestId ?? ++requestCounter;
  const parts: Buffer[] = [];
  const flags = Buffer.alloc(4);
  flags.writeUInt32LE(options.flags ?? 0, 0);
  parts.push(flags, Buffer.from([0]), Buffer.isBuffer(body) ? body : Buffer.from(serialize(body)));
  for (const sequence of options.sequences ?? []) {
    const docs = sequence.docs.map((d) => Buffer.from(serialize(d)));
    const id = Buffer.from(`${sequence.id}\0`, 'utf8');
    const size = Buffer.alloc(4);
    size.writeInt32LE(4 + id.length + docs.reduce((n, d) => n + d.length, 0), 0);
    parts.push(Buffer.from([1]), size, id, ...docs);
  }
  const payload = Buffer.concat(parts);
  const responseTo = options.responseTo ?? 0;
  return { bytes: Buffer.concat([header(16 + payload.length, requestId, responseTo, OP_MSG), payload]), requestId };
}

/** Legacy OP_QUERY as drivers send the first handshake. */
export function opQuery(collection: string, query: Document, requestId = ++requestCounter): BuiltFrame {
  const flags = Buffer.alloc(4);
  const name = Buffer.from(`${collection}\0`, 'utf8');
  const skipReturn = Buffer.alloc(8);
  skipReturn.writeInt32LE(0, 0);
  skipReturn.writeInt32LE(-1, 4);
  const payload = Buffer.concat([flags, name, skipReturn, Buffer.from(serialize(query))]);
  return { bytes: Buffer.concat([header(16 + payload.length, requestId, 0, OP_QUERY), payload]), requestId };
}

/** Any opcode with an arbitrary payload (for removed and unknown opcodes). */
export function rawFrame(opCode: number, payload: Buffer, requestId = ++requestCounter): BuiltFrame {
  return { bytes: Buffer.concat([header(16 + payload.length, requestId, 0, opCode), payload]), requestId };
}

export interface ReceivedFrame {
  length: number;
  requestId: number;
  responseTo: number;
  opCode: number;
  bytes: Buffer;
}

/** The first document of an OP_MSG (kind 0 first) or OP_REPLY frame. */
export function replyDocument(frame: ReceivedFrame): Document {
  if (frame.opCode === OP_MSG) {
    const length = frame.bytes.readInt32LE(21);
    return deserialize(frame.bytes.subarray(21, 21 + length));
  }
  if (frame.opCode === OP_REPLY) {
    const start = 16 + 20;
    const length = frame.bytes.readInt32LE(start);
    return deserialize(frame.bytes.subarray(start, start + length));
  }
  throw new Error(`unexpected opcode ${frame.opCode}`);
}

export class RawClient {
  private buffered = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  closed = false;
  /** `Date.now()` when the connection was established and when it closed (undefined while open). */
  readonly connectedAt = Date.now();
  closedAt: number | undefined;

  private constructor(readonly socket: Duplex) {
    socket.on('data', (chunk: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.closedAt = Date.now();
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  static async connect(host: string, port: number): Promise<RawClient> {
    const socket = connect({ host, port });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawClient(socket);
  }

  /** Over any duplex stream (an in-memory pair in unit tests). */
  static over(stream: Duplex): RawClient {
    return new RawClient(stream);
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /**
   * Resolves with the next frame, or `null` if the proxy closes the connection first. The default
   * wait only makes a hang visible (a 5 s default failed healthy tests on a loaded CI machine: a 16 MiB insert, catalogue 51; 8 concurrent workers, catalogue 58);
   * a test proving that nothing comes passes its own short wait.
   */
  async readFrame(timeoutMs = HANG_MS): Promise<ReceivedFrame | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.buffered.length >= 4) {
        const length = this.buffered.readInt32LE(0);
        if (this.buffered.length >= length) {
          const bytes = this.buffered.subarray(0, length);
          this.buffered = this.buffered.subarray(length);
          return {
            length,
            requestId: bytes.readInt32LE(4),
            responseTo: bytes.readInt32LE(8),
            opCode: bytes.readInt32LE(12),
            bytes,
          };
        }
      }
      if (this.closed) return null;
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error('timed out waiting for a frame');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Sends a command and returns the reply document. */
  async command(frame: BuiltFrame): Promise<Document> {
    this.write(frame.bytes);
    const reply = await this.readFrame();
    if (reply === null) throw new Error('connection closed instead of a reply');
    return replyDocument(reply);
  }

  /** Resolves true once the proxy has closed the connection (within the timeout). */
  async waitClosed(timeoutMs = HANG_MS): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) {
      try {
        await this.readFrame(Math.max(1, deadline - Date.now()));
      } catch {
        break;
      }
    }
    return this.closed;
  }

  close(): void {
    this.socket.destroy();
  }
}
