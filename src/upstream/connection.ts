/**
 * One socket to one upstream server, carrying one request at a time.
 *
 * - The connection numbers its own requests (a per-connection int32 counter) and overwrites the
 *   header of the frame it is given; replies are matched on `responseTo`. An exhaust reply with
 *   moreToCome is followed by another reply answering *that reply's* requestId
 *   (OP_MSG.md, "moreToCome"), so the expected id moves along the stream.
 * - OP_COMPRESSED replies are decompressed before delivery; requests are compressed with the
 *   compressor the hello negotiated, except the commands OP_COMPRESSED.md forbids.
 * - Writes respect backpressure (wait for 'drain'); reads can be paused by the consumer.
 * - Any framing or socket failure is fatal for the connection: the pending request is rejected
 *   with an UpstreamError labelled NetworkError and 'close' is emitted once.
 * - The bytes of a reply still being read (a frame being assembled, a compressed one being
 *   decompressed) are charged to the request's `replyCharge` (the requester's share of the
 *   proxy's byte budget), and handed over with the reply when it is delivered, or released when
 *   the connection fails or closes first.
 *
 * Nothing here knows about hello or authentication (handshake.ts) or pooling (upstream.ts).
 */

import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { Logger } from 'pino';
import type { CompressorName, HostPort } from '../config/types.js';
import { ErrorCodes, ProxyError, UpstreamError } from '../errors.js';
import { firstElement } from '../wire/bson-scan.js';
import {
  DEFAULT_MAX_MESSAGE_SIZE_BYTES,
  HEADER_LENGTH,
  OpCode,
  OpMsgFlag,
  SectionKind,
  UNCOMPRESSIBLE_COMMANDS,
} from '../wire/constants.js';
import { ASSEMBLE_MIN_BYTES, FrameDecoder } from '../wire/frame-decoder.js';
import { readInt32LE, setRequestId } from '../wire/header.js';
import { compressMessage, decompressMessage } from '../wire/op-compressed.js';
import { formatAddress } from './uri.js';

/** The label drivers and our retry layer key on for transport failures. */
export const NETWORK_ERROR_LABEL = 'NetworkError';

export interface ConnectOptions {
  address: HostPort;
  /** Present for TLS; built once per Upstream by loadTlsOptions (tls-options.ts). */
  tls?: tls.ConnectionOptions | undefined;
  /** 0: no timeout. Covers TCP connect plus the TLS handshake. */
  connectTimeoutMS: number;
  /** Largest reply frame accepted before the hello tells us the server's own limit. */
  maxMessageSize?: number;
  logger?: Logger | undefined;
}

export type ReplyHandler = (reply: Buffer, moreToCome: boolean) => void;

/**
 * Where the bytes of a reply still being read off the upstream are charged: the requester's
 * account in the proxy's byte budget (a client connection passes itself; src/server's budget is
 * not imported here). One object per requester, bound once, not a closure per reply.
 *
 * Every byte charged is, exactly once, either handed over (its reply is delivered: the charge is
 * the consumer's now, to keep or release) or released (the reply was dropped: the connection
 * failed, closed or timed out first). After `chargeReply` returned false nothing more is charged,
 * handed over or released for that request: the requester was shed (its account closed, its
 * bytes already taken back), and its leaving (the forward's signal) closes or drains the
 * connection; the reply is read on uncharged, never half-read into the pool (see `busy`).
 */
export interface ReplyCharge {
  /** `bytes` more of a reply are held; false: the requester was shed for them. */
  chargeReply(bytes: number): boolean;
  /** `bytes` of what was charged are freed (the reply was dropped). */
  releaseReply(bytes: number): void;
  /** `bytes` of what was charged go with the reply being delivered now (the consumer's charge from now on). */
  handOverReply(bytes: number): void;
}

/**
 * The bytes a reply must hold in the decoder before they are charged: below it, nothing is
 * charged (replies that arrive in one read never are: the decoder holds nothing after it). The
 * decoder gives a frame its own buffer from this size on (ASSEMBLE_MIN_BYTES), so what it holds
 * below it is a few small chunks. docs/deploy.md, Memory, has the measured cost.
 */
export const REPLY_CHARGE_MIN_BYTES = ASSEMBLE_MIN_BYTES;

export interface RequestOptions {
  /**
   * Fail the request (and close the connection) when no reply arrives for this long: a
   * half-open upstream would otherwise hold the request, and its pool slot, forever. Restarts
   * with every reply of an exhaust stream; suspended while the consumer has paused reading.
   * 0 or absent: no limit.
   */
  replyTimeoutMS?: number | undefined;
  /** Where the bytes of its replies are charged while they are read (none: uncharged). */
  replyCharge?: ReplyCharge | undefined;
}

interface PendingRequest {
  expectedResponseTo: number;
  onReply: ReplyHandler;
  resolve: () => void;
  reject: (error: Error) => void;
  replyTimeoutMS: number;
}

interface ConnectionEvents {
  /** Emitted once; `error` is set when the connection died rather than being closed. */
  close: [error: Error | undefined];
}

let nextConnectionId = 1;

/**
 * What plain-TCP upstream sockets read into (`net` `onread`), one buffer for all of them: Node
 * reads one socket at a time and the decoder copies out what it keeps before the next read, so a
 * reply costs one allocation (its frame) instead of a 64 KiB chunk per read, each its own (often
 * mmapped) allocation to fault in, free and collect. Allocated on the first connection.
 */
const READ_BUFFER_BYTES = 256 * 1024;
let readBuffer: Buffer | undefined;

/**
 * The bytes of a socket reading into the shared buffer, until the connection exists (an upstream
 * speaks only when asked, but whatever arrives early is kept, copied, in order).
 */
class ReadSink {
  target: ((view: Buffer) => void) | undefined;
  early: Buffer[] = [];

  read(view: Buffer): void {
    if (this.target !== undefined) this.target(view);
    else this.early.push(Buffer.from(view));
  }
}

export class UpstreamConnection extends EventEmitter<ConnectionEvents> {
  /** Process-wide id for logs. */
  readonly id: number;
  readonly address: string;
  readonly #socket: net.Socket;
  readonly #decoder: FrameDecoder;
  readonly #logger: Logger | undefined;
  #requestCounter = 0;
  #pending: PendingRequest | undefined;
  /** The pending request's reply timer (one per connection: see `#armReplyTimer`), its duration, whether it counts. */
  #replyTimer: NodeJS.Timeout | undefined;
  #replyTimerMS = 0;
  #replyTimerArmed = false;
  #closed = false;
  #closeError: Error | undefined;
  /** Serializes writes (compression is async; a write may wait for 'drain'). */
  #writeChain: Promise<void> = Promise.resolve();
  /** Writes on `#writeChain` not yet settled (a drain wait counts as one): 0 lets a write go straight out. */
  #queuedWrites = 0;
  /** Replies still being decompressed; later replies wait behind them to keep their order. */
  #inboundChain: Promise<void> | undefined;
  #inboundQueued = 0;
  #compressor: CompressorName | undefined;
  /** The consumer paused reading (a slow client); the reply timer does not run meanwhile. */
  #paused = false;
  #zlibLevel: number | undefined;
  /** When the connection last finished a request (for idle reaping by the pool). */
  lastUsed = Date.now();
  /**
   * Where the current request's reply bytes are charged, until the request ends and nothing
   * charged is left (undefined also once the requester was shed: see ReplyCharge).
   */
  #replyCharge: ReplyCharge | undefined;
  /** Charged for bytes in the decoder (a reply frame being assembled). */
  #decoderCharged = 0;
  /** Charged for whole frames out of the decoder not yet delivered (being decompressed). */
  #queuedCharged = 0;

  private constructor(
    socket: net.Socket,
    address: string,
    maxMessageSize: number,
    logger: Logger | undefined,
    sink: ReadSink | undefined,
  ) {
    super();
    this.id = nextConnectionId++;
    this.address = address;
    this.#socket = socket;
    this.#decoder = new FrameDecoder(maxMessageSize);
    this.#logger = logger?.child({ upstreamConnection: this.id, address });
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 120_000);
    if (sink === undefined) {
      socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    } else {
      sink.target = (view) => this.#onRead(view);
      for (const chunk of sink.early.splice(0)) this.#onData(chunk);
    }
    socket.on('error', (error: Error) => this.#fail(socketError(error, address)));
    socket.on('close', () => this.#fail(closedError(address)));
    // A half-closed upstream will not answer any more; treat it as closed.
    socket.on('end', () => this.#fail(closedError(address)));
  }

  /** Opens a TCP (or TLS) connection. Rejects with an UpstreamError; never leaves a socket open. */
  static connect(options: ConnectOptions): Promise<UpstreamConnection> {
    const address = formatAddress(options.address);
    return new Promise((resolve, reject) => {
      const { host, port } = options.address;
      let socket: net.Socket;
      let sink: ReadSink | undefined;
      const readyEvent = options.tls === undefined ? 'connect' : 'secureConnect';
      if (options.tls === undefined) {
        const reads = new ReadSink();
        sink = reads;
        readBuffer ??= Buffer.allocUnsafe(READ_BUFFER_BYTES);
        socket = net.connect({
          host,
          port,
          onread: {
            buffer: readBuffer,
            callback: (bytes: number, buffer: Uint8Array): boolean => {
              reads.read(Buffer.from(buffer.buffer, buffer.byteOffset, bytes));
              // Reading is paused, when it is, by pause() (the consumer), not here.
              return true;
            },
          },
        });
      } else {
        socket = tls.connect({
          ...options.tls,
          host,
          port,
          // SNI only for names; RFC 6066 forbids IP literals in server_name.
          ...(net.isIP(host) === 0 && options.tls.servername === undefined ? { servername: host } : {}),
        });
      }
      let timer: NodeJS.Timeout | undefined;
      const cleanup = (): void => {
        if (timer !== undefined) clearTimeout(timer);
        socket.removeListener('error', onError);
        socket.removeListener('close', onClose);
        socket.removeListener(readyEvent, onReady);
      };
      // A peer can hang up during the TLS handshake without an 'error'.
      const onClose = (): void => {
        cleanup();
        reject(closedError(address, 'upstream closed the connection while it was being set up'));
      };
      const onError = (error: Error): void => {
        cleanup();
        socket.destroy();
        reject(socketError(error, address, options.tls !== undefined));
      };
      const onReady = (): void => {
        cleanup();
        resolve(
          new UpstreamConnection(
            socket,
            address,
            options.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE_BYTES,
            options.logger,
            sink,
          ),
        );
      };
      if (options.connectTimeoutMS > 0) {
        timer = setTimeout(() => {
          cleanup();
          socket.destroy();
          reject(
            new UpstreamError(
              ErrorCodes.NetworkTimeout,
              `connecting to upstream ${address} timed out after ${options.connectTimeoutMS} ms`,
              { labels: [NETWORK_ERROR_LABEL] },
            ),
          );
        }, options.connectTimeoutMS);
      }
      socket.once('error', onError);
      socket.once('close', onClose);
      socket.once(readyEvent, onReady);
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Why the connection closed, when it failed rather than being closed on purpose. */
  get closeError(): Error | undefined {
    return this.#closeError;
  }

  /** True while a request awaits its (last) reply. */
  get busy(): boolean {
    return this.#pending !== undefined;
  }

  get compressor(): CompressorName | undefined {
    return this.#compressor;
  }

  /** Set by the handshake once the server has agreed on a compressor. */
  setCompression(compressor: CompressorName | undefined, zlibLevel?: number): void {
    this.#compressor = compressor;
    this.#zlibLevel = zlibLevel === undefined || zlibLevel < 0 ? undefined : zlibLevel;
  }

  /** Follows the server's maxMessageSizeBytes once the hello has been read. */
  setMaxMessageSize(bytes: number): void {
    this.#decoder.maxMessageSize = bytes;
  }

  /**
   * Sends `frame` (a private copy: its requestId is overwritten) and calls `onReply` for every
   * reply, in order, until one arrives without moreToCome. Rejects with an UpstreamError if the
   * connection fails first, or with what `onReply` threw (the connection is then closed, since
   * the rest of an exhaust stream can no longer be consumed).
   */
  request(frame: Buffer, onReply: ReplyHandler, options: RequestOptions = {}): Promise<void> {
    if (this.#pending !== undefined) {
      return Promise.reject(new Error(`upstream connection ${this.id} already has a request in flight`));
    }
    if (this.#closed) return Promise.reject(this.#closedFailure());
    // A pause belongs to the reply stream that asked for it: the last replies of an exhaust
    // stream can arrive in the chunk that carried the paused one, so the stream ends (and the
    // connection is pooled again) while paused. The next request, maybe another client's,
    // must not wait for the slow client's 'drain'.
    this.resume();
    const requestId = this.#nextRequestId();
    setRequestId(frame, requestId);
    // Nothing is charged between requests (an upstream speaks only when asked): never carried
    // over to another requester.
    if (this.#decoderCharged + this.#queuedCharged > 0) this.#releaseCharges();
    this.#replyCharge = options.replyCharge;
    return new Promise<void>((resolve, reject) => {
      const replyTimeoutMS = options.replyTimeoutMS ?? 0;
      this.#pending = {
        expectedResponseTo: requestId,
        onReply,
        resolve,
        reject,
        replyTimeoutMS,
      };
      this.#armReplyTimer();
      this.#enqueueWrite(frame)?.catch((error: unknown) => this.#fail(writeFailure(error, this.address)));
    });
  }

  /** Sends a moreToCome request: the server sends no reply. Failures close the connection. */
  send(frame: Buffer): void {
    if (this.#pending !== undefined) {
      throw new Error(`upstream connection ${this.id} already has a request in flight`);
    }
    if (this.#closed) throw this.#closedFailure();
    setRequestId(frame, this.#nextRequestId());
    this.#enqueueWrite(frame)?.catch((error: unknown) => this.#fail(writeFailure(error, this.address)));
  }

  /** Stops reading from the upstream (the client is slower than the server). */
  pause(): void {
    if (this.#closed) return;
    this.#paused = true;
    this.#socket.pause();
    this.#clearReplyTimer();
  }

  resume(): void {
    if (this.#closed || !this.#paused) return;
    this.#paused = false;
    this.#socket.resume();
    this.#armReplyTimer();
  }

  /**
   * Closes the socket. A pending request is rejected with `error` if given, else with a
   * SocketException. Idempotent.
   */
  close(error?: Error): void {
    if (this.#closed) return;
    this.#shutdown(error, error ?? closedError(this.address, 'upstream connection closed by the proxy'));
  }

  // --- internals -----------------------------------------------------------------------------

  /**
   * (Re)starts the pending request's reply timer, unless reading is paused or it has none. One
   * Timeout per connection, restarted with `refresh()` for each request (none created and cleared
   * per command); clearing only disarms it, and a disarmed timer that fires does nothing.
   */
  #armReplyTimer(): void {
    const pending = this.#pending;
    if (pending === undefined) return;
    this.#replyTimerArmed = false;
    if (pending.replyTimeoutMS <= 0 || this.#paused) return;
    const timeoutMS = pending.replyTimeoutMS;
    this.#replyTimerArmed = true;
    if (this.#replyTimer !== undefined && this.#replyTimerMS === timeoutMS) {
      this.#replyTimer.refresh();
      return;
    }
    if (this.#replyTimer !== undefined) clearTimeout(this.#replyTimer);
    this.#replyTimerMS = timeoutMS;
    this.#replyTimer = setTimeout(() => {
      if (!this.#replyTimerArmed || this.#pending === undefined) return;
      this.#fail(
        new UpstreamError(ErrorCodes.NetworkTimeout, `no reply from upstream ${this.address} within ${timeoutMS} ms`, {
          labels: [NETWORK_ERROR_LABEL],
        }),
      );
    }, timeoutMS);
    this.#replyTimer.unref();
  }

  #clearReplyTimer(): void {
    this.#replyTimerArmed = false;
  }

  #nextRequestId(): number {
    // Positive int32 ids; wrap long before overflow. Ids only need to be unique per connection.
    this.#requestCounter = this.#requestCounter >= 0x7fffffff ? 1 : this.#requestCounter + 1;
    return this.#requestCounter;
  }

  /** Writes `frame` after the writes before it; a promise only when it had to queue (undefined: written). */
  #enqueueWrite(frame: Buffer): Promise<void> | undefined {
    if (this.#queuedWrites === 0 && this.#compressor === undefined) {
      // Nothing before it and nothing to compress: one socket write, no promise chain.
      if (this.#socket.write(frame)) return undefined;
      // The socket is full: later writes wait for its drain.
      this.#queuedWrites++;
      this.#writeChain = this.#drained().then(() => {
        this.#queuedWrites--;
      });
      return undefined;
    }
    this.#queuedWrites++;
    const write = this.#writeChain.then(async () => {
      if (this.#closed) throw this.#closedFailure();
      const out = await this.#maybeCompress(frame);
      if (this.#closed) throw this.#closedFailure();
      if (!this.#socket.write(out)) await this.#drained();
    });
    // The chain itself never rejects, so one failed write cannot poison later ones.
    const settled = (): void => {
      this.#queuedWrites--;
    };
    this.#writeChain = write.then(settled, settled);
    return write;
  }

  #drained(): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.#socket.removeListener('drain', done);
        this.removeListener('close', done);
        resolve();
      };
      this.#socket.once('drain', done);
      // If the socket dies instead, 'close' is emitted and the next write sees #closed.
      this.once('close', done);
    });
  }

  async #maybeCompress(frame: Buffer): Promise<Buffer> {
    const compressor = this.#compressor;
    if (compressor === undefined) return frame;
    const name = requestCommandName(frame);
    // Only OP_MSG with a readable, compressible command; anything else goes as is.
    if (name === undefined || UNCOMPRESSIBLE_COMMANDS.has(name)) return frame;
    return compressMessage(frame, compressor, this.#zlibLevel);
  }

  #onData(chunk: Buffer): void {
    try {
      this.#decoder.push(chunk, (frame) => this.#onFrame(frame));
    } catch (error) {
      this.#fail(protocolFailure(error, this.address));
      return;
    }
    if (this.#replyCharge !== undefined) this.#chargeDecoder(this.#replyCharge);
  }

  /** Bytes in the shared read buffer, valid only during this call. */
  #onRead(view: Buffer): void {
    if (this.#closed) return;
    try {
      this.#decoder.pushTransient(view, (frame) => this.#onFrame(frame));
    } catch (error) {
      this.#fail(protocolFailure(error, this.address));
      return;
    }
    if (this.#replyCharge !== undefined) this.#chargeDecoder(this.#replyCharge);
  }

  /**
   * After a read: the decoder's bytes of the reply being read (the whole frame's buffer once it
   * is being assembled) are charged, from REPLY_CHARGE_MIN_BYTES on. A shed requester is charged
   * no more (see ReplyCharge); its leaving closes or drains this connection.
   */
  #chargeDecoder(charge: ReplyCharge): void {
    if (this.#closed) return;
    let held = this.#decoder.reservedBytes;
    if (held < REPLY_CHARGE_MIN_BYTES) held = 0;
    const more = held - this.#decoderCharged;
    if (more === 0) return;
    if (more < 0) {
      charge.releaseReply(-more);
      this.#decoderCharged = held;
      return;
    }
    if (charge.chargeReply(more)) {
      this.#decoderCharged = held;
      return;
    }
    // Shed: its account let go of everything it held, this connection's charges included.
    this.#replyCharge = undefined;
    this.#decoderCharged = 0;
    this.#queuedCharged = 0;
  }

  #onFrame(frame: Buffer): void {
    // What was charged for this frame while it was assembled goes with it (to its delivery).
    let charged = 0;
    if (this.#decoderCharged > 0) {
      charged = Math.min(this.#decoderCharged, frame.length);
      this.#decoderCharged -= charged;
      this.#queuedCharged += charged;
    }
    const opCode = readInt32LE(frame, 12);
    if (opCode !== OpCode.OP_COMPRESSED && this.#inboundQueued === 0) {
      this.#deliver(frame, charged);
      return;
    }
    // Decompression is async; keep replies in arrival order behind it.
    this.#inboundQueued++;
    const previous = this.#inboundChain ?? Promise.resolve();
    this.#inboundChain = previous.then(async () => {
      try {
        if (this.#closed) return;
        const plain =
          opCode === OpCode.OP_COMPRESSED ? await decompressMessage(frame, this.#decoder.maxMessageSize) : frame;
        if (!this.#closed) this.#deliver(plain, charged);
      } catch (error) {
        this.#fail(protocolFailure(error, this.address));
      } finally {
        this.#inboundQueued--;
        if (this.#inboundQueued === 0) this.#inboundChain = undefined;
      }
    });
  }

  /** Releases whatever is still charged for the request's replies (it ended, or the connection did). */
  #releaseCharges(): void {
    const charge = this.#replyCharge;
    this.#replyCharge = undefined;
    const charged = this.#decoderCharged + this.#queuedCharged;
    this.#decoderCharged = 0;
    this.#queuedCharged = 0;
    if (charge !== undefined && charged > 0) charge.releaseReply(charged);
  }

  /** `charged`: what was charged for `reply` while it was read (handed over with it). */
  #deliver(reply: Buffer, charged: number): void {
    const pending = this.#pending;
    const responseTo = readInt32LE(reply, 8);
    if (pending === undefined) {
      this.#fail(protocolFailure(`unsolicited reply (responseTo ${responseTo})`, this.address));
      return;
    }
    if (responseTo !== pending.expectedResponseTo) {
      this.#fail(
        protocolFailure(`reply answers request ${responseTo}, expected ${pending.expectedResponseTo}`, this.address),
      );
      return;
    }
    const opCode = readInt32LE(reply, 12);
    const moreToCome =
      opCode === OpCode.OP_MSG &&
      reply.length >= HEADER_LENGTH + 4 &&
      (readInt32LE(reply, HEADER_LENGTH) & OpMsgFlag.moreToCome) !== 0;
    this.#clearReplyTimer();
    const charge = this.#replyCharge;
    if (charge !== undefined && charged > 0) {
      // A shed requester's charges were zeroed: only what is still counted here is handed over.
      const handed = Math.min(charged, this.#queuedCharged);
      this.#queuedCharged -= handed;
      if (handed > 0) charge.handOverReply(handed);
    }
    if (moreToCome) {
      // The next reply of the exhaust stream answers this one.
      pending.expectedResponseTo = readInt32LE(reply, 4);
      this.#armReplyTimer();
    } else {
      this.#pending = undefined;
      this.lastUsed = Date.now();
      // The request is over: nothing of it is left to charge (anything still held is released).
      if (charge !== undefined) this.#releaseCharges();
    }
    try {
      pending.onReply(reply, moreToCome);
    } catch (error) {
      // The consumer cannot take the rest of the stream: the connection is no longer usable.
      this.#pending = undefined;
      pending.reject(asError(error));
      this.close();
      return;
    }
    if (!moreToCome) pending.resolve();
  }

  #fail(error: Error): void {
    if (this.#closed) return;
    this.#shutdown(error, error);
  }

  #shutdown(closeError: Error | undefined, requestError: Error): void {
    this.#closed = true;
    this.#closeError = closeError;
    this.#clearReplyTimer();
    if (this.#replyTimer !== undefined) clearTimeout(this.#replyTimer);
    this.#replyTimer = undefined;
    const pending = this.#pending;
    this.#pending = undefined;
    this.#socket.destroy();
    // The reply being read (and any being decompressed) is dropped with the socket.
    this.#releaseCharges();
    if (closeError !== undefined) {
      this.#logger?.debug(
        { err: { message: closeError.message, code: codeOf(closeError) } },
        'upstream connection failed',
      );
    } else {
      this.#logger?.debug('upstream connection closed');
    }
    pending?.reject(requestError);
    this.emit('close', closeError);
  }

  #closedFailure(): UpstreamError {
    const cause = this.#closeError;
    return new UpstreamError(
      cause !== undefined && ProxyError.is(cause) ? cause.code : ErrorCodes.SocketException,
      `upstream connection to ${this.address} is closed${cause !== undefined ? `: ${cause.message}` : ''}`,
      { labels: [NETWORK_ERROR_LABEL], cause },
    );
  }
}

/**
 * The command name of an OP_MSG request (first key of its kind-0 section), or undefined for
 * anything else or anything unexpected; such frames are simply not compressed.
 */
export function requestCommandName(frame: Buffer): string | undefined {
  if (frame.length < HEADER_LENGTH + 5 || readInt32LE(frame, 12) !== OpCode.OP_MSG) return undefined;
  const end = Math.min(frame.length, readInt32LE(frame, 0));
  let pos = HEADER_LENGTH + 4;
  while (pos < end) {
    const kind = frame[pos];
    if (kind === SectionKind.body) {
      if (pos + 5 > end) return undefined;
      const length = readInt32LE(frame, pos + 1);
      if (length < 5 || pos + 1 + length > end) return undefined;
      try {
        return firstElement(frame.subarray(pos + 1, pos + 1 + length))?.name;
      } catch {
        return undefined;
      }
    }
    if (kind !== SectionKind.documentSequence || pos + 5 > end) return undefined;
    const size = readInt32LE(frame, pos + 1);
    if (size < 4) return undefined;
    pos += 1 + size;
  }
  return undefined;
}

const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN']);
const NOT_FOUND_CODES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME']);

/** Maps a socket or TLS error to an UpstreamError with a MongoDB code and the NetworkError label. */
function socketError(error: Error, address: string, tlsHandshake = false): UpstreamError {
  if (ProxyError.is(error)) return error as UpstreamError;
  const code = (error as NodeJS.ErrnoException).code ?? '';
  let mongoCode: number = ErrorCodes.SocketException;
  if (UNREACHABLE_CODES.has(code)) mongoCode = ErrorCodes.HostUnreachable;
  else if (NOT_FOUND_CODES.has(code)) mongoCode = ErrorCodes.HostNotFound;
  else if (code === 'ETIMEDOUT') mongoCode = ErrorCodes.NetworkTimeout;
  const what = tlsHandshake && mongoCode === ErrorCodes.SocketException ? 'TLS handshake with' : 'connection to';
  return new UpstreamError(mongoCode, `upstream ${what} ${address} failed: ${error.message}`, {
    labels: [NETWORK_ERROR_LABEL],
    cause: error,
  });
}

function closedError(address: string, message = 'upstream closed the connection'): UpstreamError {
  return new UpstreamError(ErrorCodes.SocketException, `${message} (${address})`, { labels: [NETWORK_ERROR_LABEL] });
}

function protocolFailure(error: unknown, address: string): UpstreamError {
  const message = error instanceof Error ? error.message : String(error);
  return new UpstreamError(ErrorCodes.ProtocolError, `invalid reply from upstream ${address}: ${message}`, {
    labels: [NETWORK_ERROR_LABEL],
    cause: error instanceof Error ? error : undefined,
  });
}

/** A failed write: socket errors keep their mapping, anything else (a codec bug) is internal. */
function writeFailure(error: unknown, address: string): Error {
  if (ProxyError.is(error)) return error;
  if (error instanceof Error && typeof (error as NodeJS.ErrnoException).code === 'string') {
    return socketError(error, address);
  }
  return new UpstreamError(ErrorCodes.InternalError, `could not send to upstream ${address}: ${String(error)}`, {
    cause: error,
  });
}

function asError(value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value));
}

function codeOf(error: Error): number | string | undefined {
  return ProxyError.is(error) ? error.code : (error as NodeJS.ErrnoException).code;
}
