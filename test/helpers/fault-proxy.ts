/**
 * A small TCP fault injector for the fault tests (issue 5): it sits between a client (a driver,
 * the proxy under test…) and a target (FerretDB, MongoDB, an echo server), forwards bytes both
 * ways and injects latency, throttling, resets, black holes, half-open connections and cut
 * messages on demand. Every control applies at once to existing connections and to new ones.
 *
 * Loopback only (127.0.0.1, a free port). Memory is bounded: each direction of each connection
 * queues at most HIGH_WATER_MARK bytes; beyond that the reading side is paused until the queue
 * drains, and nothing is written to a side whose write() returned false until its 'drain'.
 *
 *   const faults = await startFaultProxy({ target: targetFromUri(upstreamUri()) });
 *   const client = new MongoClient(faults.uri);
 *   faults.setLatency(100, { jitterMS: 20 });
 *   faults.setMode('half-open');
 *   faults.resetAll();
 *   await faults.close();
 */
import * as net from 'node:net';
import { ConnectionString } from 'mongodb-connection-string-url';

export type FaultMode = 'pass' | 'blackhole' | 'refuse' | 'half-open';

export interface FaultProxyOptions {
  target: { host: string; port: number };
}

export interface FaultProxyStats {
  /** Client connections accepted (not refused) and not yet closed. */
  connectionsOpen: number;
  /** Client connections accepted (not refused) since start. */
  connectionsTotal: number;
  /** Connections closed at once because the mode was 'refuse'. */
  connectionsRefused: number;
  /** Bytes written to the target. */
  bytesClientToUpstream: number;
  /** Bytes written to clients. */
  bytesUpstreamToClient: number;
  /** Bytes read but deliberately never forwarded (blackhole, half-open, after a cut). */
  bytesDropped: number;
  /** Bytes held by the fault proxy right now (its queues plus the sockets' write buffers). */
  bufferedBytes: number;
  /** The most one direction of one connection ever held (queue plus write buffer). */
  peakBufferedBytes: number;
}

export interface FaultProxy {
  readonly host: string;
  readonly port: number;
  /** `mongodb://127.0.0.1:<port>/?directConnection=true` */
  readonly uri: string;
  readonly mode: FaultMode;
  /**
   * `uri` with its host replaced by this proxy's, keeping credentials and options (for a target
   * that needs them, such as MONGODB_URI); sets directConnection=true and drops replicaSet.
   */
  uriFor(targetUri: string): string;
  /** Delays every chunk in each direction by ms + a uniform random 0..jitterMS; order is kept. */
  setLatency(ms: number, options?: { jitterMS?: number }): void;
  /**
   * pass: forward. blackhole: accept and read, never forward or answer (new connections never
   * reach the target). refuse: new connections are reset at once (existing ones keep working).
   * half-open: forward client→target but drop target→client, keeping both sockets open (the
   * target's close is not passed on either). Bytes dropped by blackhole or half-open are gone:
   * switching an existing connection back to 'pass' leaves a MongoDB stream out of step, so follow
   * with resetAll() when the test goes on with the same proxy.
   */
  setMode(mode: FaultMode): void;
  /**
   * Throttles each direction of each connection (not the proxy as a whole) to this rate, sending
   * slices of 1/20 s worth; null removes the limit.
   */
  setBandwidth(bytesPerSecond: number | null): void;
  /**
   * Closes each connection once it has forwarded n client→target bytes, counted from now for
   * existing connections and from their start for new ones: the target receives exactly those n
   * bytes then a FIN (a message cut in the middle), the client's socket is destroyed. null: off.
   */
  cutAfterBytes(n: number | null): void;
  /** Destroys every connection, both sides, with a TCP RST. */
  resetAll(): void;
  stats(): FaultProxyStats;
  /** Stops listening and destroys every connection. Idempotent. */
  close(): Promise<void>;
}

/** Per direction of each connection, the most queued before the reading side is paused. */
export const HIGH_WATER_MARK = 64 * 1024;
const LOW_WATER_MARK = HIGH_WATER_MARK / 2;
/** Bandwidth limiting sends slices of this share of a second's budget. */
const SLICES_PER_SECOND = 20;

/** The first host of a MongoDB connection string, for `startFaultProxy({ target })`. */
export function targetFromUri(uri: string): { host: string; port: number } {
  const cs = new ConnectionString(uri);
  if (cs.isSRV) throw new Error('targetFromUri: mongodb+srv URIs name no host and port');
  const first = cs.hosts[0];
  if (first === undefined) throw new Error(`targetFromUri: no host in ${cs.redact().toString()}`);
  const match = /^(?:\[([^\]]+)\]|([^:]+))(?::(\d+))?$/.exec(first);
  if (!match) throw new Error(`targetFromUri: cannot parse host "${first}"`);
  return { host: match[1] ?? match[2] ?? '127.0.0.1', port: match[3] === undefined ? 27017 : Number(match[3]) };
}

/** Sends a RST when it can (connected TCP socket), else just destroys. Never throws. */
function reset(socket: net.Socket | undefined): void {
  if (!socket || socket.destroyed) return;
  try {
    if (socket.connecting) socket.destroy();
    else socket.resetAndDestroy();
  } catch {
    socket.destroy();
  }
}

interface Settings {
  mode: FaultMode;
  latencyMS: number;
  jitterMS: number;
  bytesPerSecond: number | null;
  cutAfter: number | null;
}

interface Counters {
  bytesClientToUpstream: number;
  bytesUpstreamToClient: number;
  bytesDropped: number;
  peakBufferedBytes: number;
}

interface Chunk {
  data: Buffer;
  arrival: number;
  due?: number;
}

type Direction = 'c2u' | 'u2c';

/** Carries one direction of one connection: queue, latency, throttle, backpressure. */
class Pump {
  private readonly queue: Chunk[] = [];
  queued = 0;
  private lastDue = 0;
  private nextFreeAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private waitingDrain = false;
  private pausedByUs = false;
  private sourceEnded = false;
  private stopped = false;
  /** Bytes this direction wrote to its destination. */
  forwarded = 0;

  constructor(
    private readonly conn: Connection,
    private readonly direction: Direction,
    private readonly source: net.Socket,
    private readonly dest: () => net.Socket | undefined,
  ) {}

  private readonly onDrain = (): void => {
    this.waitingDrain = false;
    this.run();
  };

  /** The current mode discards what this direction reads. */
  private drops(): boolean {
    const mode = this.conn.settings.mode;
    if (mode === 'blackhole') return true;
    if (this.direction === 'u2c') return mode === 'half-open';
    return this.dest() === undefined || this.conn.cut;
  }

  onData(data: Buffer): void {
    if (this.stopped) return;
    if (this.drops()) {
      this.conn.counters.bytesDropped += data.length;
      return;
    }
    this.queue.push({ data, arrival: Date.now() });
    this.queued += data.length;
    this.notePeak();
    if (this.queued >= HIGH_WATER_MARK && !this.pausedByUs) {
      this.pausedByUs = true;
      this.source.pause();
    }
    this.run();
  }

  onEnd(): void {
    if (this.sourceEnded) return;
    this.sourceEnded = true;
    this.run();
  }

  /** Settings changed: re-evaluate what is waiting. */
  poke(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.run();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.dest()?.off('drain', this.onDrain);
    this.queue.length = 0;
    this.queued = 0;
  }

  /** Queue plus the destination's write buffer. */
  buffered(): number {
    const dest = this.dest();
    return this.queued + (dest && !dest.destroyed ? dest.writableLength : 0);
  }

  private notePeak(): void {
    const held = this.buffered();
    if (held > this.conn.counters.peakBufferedBytes) this.conn.counters.peakBufferedBytes = held;
  }

  private wait(ms: number): void {
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.run();
      },
      Math.max(1, Math.ceil(ms)),
    );
  }

  private run(): void {
    if (this.stopped || this.timer || this.waitingDrain) return;
    const { settings, counters } = this.conn;
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      const dest = this.dest();
      if (this.drops() || !dest || dest.destroyed || dest.writableEnded) {
        counters.bytesDropped += head.data.length;
        this.queued -= head.data.length;
        this.queue.shift();
        continue;
      }
      const now = Date.now();
      if (head.due === undefined) {
        const jitter = settings.jitterMS > 0 ? Math.random() * settings.jitterMS : 0;
        head.due = Math.max(this.lastDue, head.arrival + settings.latencyMS + jitter);
        this.lastDue = head.due;
      }
      if (head.due > now) return this.wait(head.due - now);

      let piece = head.data;
      const bps = settings.bytesPerSecond;
      if (bps !== null) {
        if (this.nextFreeAt > now) return this.wait(this.nextFreeAt - now);
        const slice = Math.max(1, Math.floor(bps / SLICES_PER_SECOND));
        if (piece.length > slice) piece = piece.subarray(0, slice);
        this.nextFreeAt = Math.max(now, this.nextFreeAt) + (piece.length * 1000) / bps;
      }

      let cutNow = false;
      if (this.direction === 'c2u' && settings.cutAfter !== null) {
        const remaining = Math.max(0, settings.cutAfter - (this.forwarded - this.conn.cutBase));
        if (piece.length >= remaining) {
          piece = piece.subarray(0, remaining);
          cutNow = true;
        }
      }

      if (piece.length === head.data.length) this.queue.shift();
      else head.data = head.data.subarray(piece.length);
      this.queued -= piece.length;

      let ok = true;
      if (piece.length > 0) {
        ok = dest.write(piece);
        this.forwarded += piece.length;
        if (this.direction === 'c2u') counters.bytesClientToUpstream += piece.length;
        else counters.bytesUpstreamToClient += piece.length;
        this.notePeak();
      }
      if (cutNow) {
        this.conn.cutConnection();
        return;
      }
      if (!ok) {
        this.waitingDrain = true;
        dest.once('drain', this.onDrain);
        break;
      }
    }
    if (this.pausedByUs && this.queued < LOW_WATER_MARK) {
      this.pausedByUs = false;
      this.source.resume();
    }
    if (this.queue.length === 0 && this.sourceEnded && !this.waitingDrain) this.finish();
  }

  /** The source ended and everything was forwarded: pass the FIN on (unless the mode hides it). */
  private finish(): void {
    const dest = this.dest();
    if (!dest || dest.destroyed || dest.writableEnded) return;
    const mode = this.conn.settings.mode;
    const hidden = mode === 'blackhole' || (this.direction === 'u2c' && mode === 'half-open');
    // Once the client is gone the target always gets its FIN (there is nobody left to hide it from).
    if (hidden && !(this.direction === 'c2u' && this.conn.clientGone)) return;
    dest.end();
  }
}

class Connection {
  upstream: net.Socket | undefined;
  readonly c2u: Pump;
  readonly u2c: Pump;
  /** c2u.forwarded when cutAfterBytes was last set (0 for connections accepted after). */
  cutBase = 0;
  cut = false;
  clientGone = false;
  private done = false;

  constructor(
    readonly client: net.Socket,
    readonly settings: Settings,
    readonly counters: Counters,
    target: { host: string; port: number },
    private readonly onClosed: (conn: Connection) => void,
  ) {
    this.c2u = new Pump(this, 'c2u', client, () => this.upstream);
    this.u2c = new Pump(this, 'u2c', client, () => client); // source replaced below
    client.on('error', () => {});
    client.on('data', (data: Buffer) => this.c2u.onData(data));
    client.on('end', () => this.c2u.onEnd());
    client.on('close', (hadError) => this.onClientClose(hadError));

    if (settings.mode === 'blackhole') return; // a black hole never reaches the target
    const upstream = net.connect({ host: target.host, port: target.port, allowHalfOpen: true });
    upstream.setNoDelay(true);
    this.upstream = upstream;
    this.u2c = new Pump(this, 'u2c', upstream, () => client);
    upstream.on('error', () => {});
    upstream.on('data', (data: Buffer) => this.u2c.onData(data));
    upstream.on('end', () => this.u2c.onEnd());
    upstream.on('close', (hadError) => this.onUpstreamClose(hadError));
  }

  buffered(): number {
    return this.c2u.buffered() + (this.upstream ? this.u2c.buffered() : 0);
  }

  poke(): void {
    this.c2u.poke();
    this.u2c.poke();
  }

  private onClientClose(hadError: boolean): void {
    this.clientGone = true;
    if (!this.done) {
      this.done = true;
      this.onClosed(this);
    }
    if (this.cut) return; // cutConnection ends the upstream itself, after the partial message
    if (hadError) {
      this.stopPumps();
      reset(this.upstream);
    } else {
      // Let what the client sent before closing reach the target, then FIN it.
      this.c2u.onEnd();
      const upstream = this.upstream;
      if (upstream && !upstream.destroyed) {
        if (upstream.writableFinished) upstream.destroy();
        else upstream.once('finish', () => upstream.destroy());
      }
      this.u2c.stop();
    }
  }

  private onUpstreamClose(hadError: boolean): void {
    const mode = this.settings.mode;
    if (this.cut || mode === 'blackhole' || mode === 'half-open') return; // the client must not learn
    if (hadError) {
      this.stopPumps();
      reset(this.client);
    } else {
      this.u2c.onEnd();
    }
  }

  /** cutAfterBytes reached: the partial bytes already written reach the target, then FIN. */
  cutConnection(): void {
    if (this.cut) return;
    this.cut = true;
    this.c2u.stop();
    this.u2c.stop();
    const upstream = this.upstream;
    if (upstream && !upstream.destroyed) {
      upstream.end();
      upstream.once('finish', () => upstream.destroy());
    }
    this.client.destroy();
  }

  stopPumps(): void {
    this.c2u.stop();
    this.u2c.stop();
  }

  resetBoth(): void {
    this.stopPumps();
    reset(this.client);
    reset(this.upstream);
  }

  destroyBoth(): void {
    this.stopPumps();
    this.client.destroy();
    this.upstream?.destroy();
  }
}

export async function startFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  const target = { host: options.target.host, port: options.target.port };
  const settings: Settings = { mode: 'pass', latencyMS: 0, jitterMS: 0, bytesPerSecond: null, cutAfter: null };
  const counters: Counters = {
    bytesClientToUpstream: 0,
    bytesUpstreamToClient: 0,
    bytesDropped: 0,
    peakBufferedBytes: 0,
  };
  const connections = new Set<Connection>();
  /** Every socket this proxy owns, refused ones included, for close(). */
  const sockets = new Set<net.Socket>();
  let connectionsTotal = 0;
  let connectionsRefused = 0;
  let closing: Promise<void> | undefined;

  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    sockets.add(client);
    client.once('close', () => sockets.delete(client));
    if (closing) {
      client.destroy();
      return;
    }
    if (settings.mode === 'refuse') {
      connectionsRefused++;
      client.on('error', () => {});
      reset(client);
      return;
    }
    connectionsTotal++;
    client.setNoDelay(true);
    const conn = new Connection(client, settings, counters, target, (c) => connections.delete(c));
    connections.add(conn);
    if (conn.upstream) {
      const upstream = conn.upstream;
      sockets.add(upstream);
      upstream.once('close', () => sockets.delete(upstream));
    }
  });
  server.on('error', () => {});

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as net.AddressInfo;
  const host = '127.0.0.1';
  const port = address.port;

  const pokeAll = (): void => {
    for (const conn of connections) conn.poke();
  };

  return {
    host,
    port,
    uri: `mongodb://${host}:${port}/?directConnection=true`,
    get mode() {
      return settings.mode;
    },
    uriFor(targetUri: string): string {
      const cs = new ConnectionString(targetUri);
      if (cs.isSRV) throw new Error('uriFor: mongodb+srv URIs cannot be pointed at the fault proxy');
      cs.hosts = [`${host}:${port}`];
      cs.searchParams.set('directConnection', 'true');
      cs.searchParams.delete('replicaSet');
      return cs.toString();
    },
    setLatency(ms: number, opts: { jitterMS?: number } = {}): void {
      const jitterMS = opts.jitterMS ?? 0;
      if (!(ms >= 0) || !(jitterMS >= 0)) throw new RangeError('setLatency: ms and jitterMS must be >= 0');
      settings.latencyMS = ms;
      settings.jitterMS = jitterMS;
      pokeAll();
    },
    setMode(mode: FaultMode): void {
      settings.mode = mode;
      pokeAll();
    },
    setBandwidth(bytesPerSecond: number | null): void {
      if (bytesPerSecond !== null && !(bytesPerSecond > 0)) throw new RangeError('setBandwidth: must be > 0 or null');
      settings.bytesPerSecond = bytesPerSecond;
      pokeAll();
    },
    cutAfterBytes(n: number | null): void {
      if (n !== null && !(Number.isInteger(n) && n >= 0))
        throw new RangeError('cutAfterBytes: must be an integer >= 0 or null');
      settings.cutAfter = n;
      for (const conn of connections) conn.cutBase = conn.c2u.forwarded;
      pokeAll();
    },
    resetAll(): void {
      for (const conn of [...connections]) conn.resetBoth();
    },
    stats(): FaultProxyStats {
      let bufferedBytes = 0;
      for (const conn of connections) bufferedBytes += conn.buffered();
      return { connectionsOpen: connections.size, connectionsTotal, connectionsRefused, ...counters, bufferedBytes };
    },
    close(): Promise<void> {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const conn of [...connections]) conn.destroyBoth();
        for (const socket of [...sockets]) socket.destroy();
      });
      return closing;
    },
  };
}
