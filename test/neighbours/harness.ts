/**
 * The noisy-neighbour harness (issue 15, "Proof"): one proxy in a child process (so its RSS is its
 * own) with a listener per tenant, in front of a FerretDB of the test file's own (an abuse must not
 * slow the rest of the run's tests), a well-behaved bystander tenant running a closed-loop driver
 * workload the whole time, and one abuse run by the noisy tenant in the middle:
 *
 *   start proxy → bystander warm-up → baseline → abuse (noisy tenant) → abusers gone → recovery
 *
 * Measured: the bystander's latencies (baseline vs under abuse, same run) and errors, `/readyz`
 * polled throughout, circuit breaker openings (metrics), the proxy's RSS (baseline, peak as VmHWM,
 * after the abuse). goalsMet() asserts the Goals (the p99 ratio only where P99_ASSERTED; the
 * row is attached to the test for test/neighbours/reporter.ts either way).
 *
 * Sizes: MTP_NEIGHBOURS=full runs the sizes (`npm run test:neighbours`); the default
 * (`small`) keeps each abuse short enough for `npm test` on two loaded cores, where it runs.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { MongoClient } from 'mongodb';
import { expect, type TaskMeta } from 'vitest';
import { defaultConfig } from '../../src/config/index.js';
import type { HostPort, ProxyConfig } from '../../src/config/types.js';
import { builtDist, spawnCli, type CliProcess } from '../helpers/cli-process.js';
import { parseSamples, sumSamples } from '../helpers/metrics.js';
import { RawClient, replyDocument } from '../helpers/raw-client.js';
import { sleep, until, withDeadline } from '../helpers/wait.js';

export const MiB = 1024 * 1024;

export type ProfileName = 'small' | 'full';
export const PROFILE: ProfileName = process.env.MTP_NEIGHBOURS === 'full' ? 'full' : 'small';

/** The value for the running size profile. */
export function size<T>(small: T, full: T): T {
  return PROFILE === 'full' ? full : small;
}

/** Phase lengths and bystander concurrency of the profile. */
export const TIMING = {
  warmupMS: size(300, 2_000),
  baselineMS: size(1_500, 5_000),
  /** How long a timed abuse lasts (abuses of a fixed amount of work take what they take). */
  abuseMS: size(2_500, 15_000),
  /**
   * The quiet window measured again once the abusers are gone and memory came back: the baseline
   * is the bystander's latencies before and after the abuse together, so a machine whose load
   * changes during the run (other processes on two shared cores) weighs on both sides of the ratio.
   */
  quietAfterMS: size(1_500, 5_000),
  /** Longest wait for the proxy's memory to come back after the abuse. */
  recoveryMS: size(15_000, 60_000),
  bystanderWorkers: size(2, 4),
  /** A test's own time limit. */
  testTimeoutMS: size(120_000, 600_000),
};

/**
 * For each file's beforeAll: the run's one build of src/ for the child proxies (tsc: 15 s of CPU,
 * minutes on loaded cores), so no test's own time limit pays for it.
 */
export async function prepare(): Promise<void> {
  await builtDist();
}
export const PREPARE_TIMEOUT_MS = 600_000;

export const NOISY = 'noisy';
export const BYSTANDER = 'bystander';
/** The one database both tenants use (shared collections: each sees its own documents only). */
export const DB = 'neighbours';
/**
 * MTP_NEIGHBOURS_CONTROL=1: a second bystander, the control, runs the same workload straight
 * against the upstream (no proxy; collection CONTROL_COLLECTION of the same database, so it meets
 * the same upstream locks and files as the proxied one) in the same windows. Its p99 ratio is what
 * the abuse does to the machine and the upstream alone: the proxy's share of the bystander's
 * ratio is the difference. Reported, never asserted; off by default (it doubles the bystander's
 * load on the upstream).
 */
const CONTROL = process.env['MTP_NEIGHBOURS_CONTROL'] === '1';
const CONTROL_COLLECTION = 'bystander_control';

/**
 * The buffered-bytes budget the suite configures (`limits.maxBufferedBytes`, when the build has it)
 * and the headroom the RSS limit adds on top of the idle proxy: the runtime, the one message being
 * decoded and rewritten (a 48 MB insert exists twice while it is stamped), allocator slack.
 */
export const BUFFER_BUDGET = 256 * MiB;
export const RSS_HEADROOM = 128 * MiB;
/** "Memory returns to within 20% of baseline after the abuse stops." */
export const RSS_RECOVERY_FACTOR = 1.2;

// ------------------------------------------------------------------------------------------------
// The proxy in a child process

export interface ChildProxy {
  pid: number;
  config: ProxyConfig;
  address(listener: string): HostPort;
  /** A driver URI of the listener. */
  uri(listener: string): string;
  metricsText(): Promise<string>;
  readyz(): Promise<number>;
  /** The address of `/readyz`. */
  readonly readyzUrl: string;
  /** Resident set size now and its high-water mark, bytes (/proc/<pid>/status). */
  memory(): { rss: number; hwm: number };
  /**
   * Resident MiB by kind of mapping (/proc/<pid>/smaps): files, glibc's main heap, anonymous
   * mappings by size (V8 pages and glibc's mmapped chunks are small, arenas 64 MiB). Diagnosis only.
   */
  memoryMap(): Record<string, number>;
  /** The child's heap and buffers before and after a forced full GC (diagnosis only, never asserted). */
  memoryReport(): Promise<{ before: NodeJS.MemoryUsage; after: NodeJS.MemoryUsage }>;
  /** Log lines (warn and above) the proxy wrote. */
  readonly lines: Array<Record<string, unknown>>;
  stop(): Promise<void>;
}

/** MALLOC_MMAP_THRESHOLD_ as the image sets it; `MALLOC_MMAP_THRESHOLD_=unset` runs glibc's dynamic threshold. */
function mmapThreshold(): Record<string, string> {
  const value = process.env['MALLOC_MMAP_THRESHOLD_'] ?? '65536';
  return value === 'unset' ? {} : { MALLOC_MMAP_THRESHOLD_: value };
}

const childScript = fileURLToPath(new URL('./proxy-child.mjs', import.meta.url));

/** True when the build's configuration has `limits.<key>` (a setting a fix branch adds). */
export function hasLimit(key: string): boolean {
  return key in defaultConfig().limits;
}

export interface NeighbourListener {
  name: string;
  /** A static tenant; null: a listener with no identity method (connections stay unauthenticated). */
  tenant: string | null;
}

/** Settings shaped like the configuration file (`listen` as "host:port"), merged key by key. */
export type FileSettings = Record<string, unknown>;

export async function startChildProxy(
  upstreamUri: string,
  options: { listeners?: NeighbourListener[]; overrides?: FileSettings } = {},
): Promise<ChildProxy> {
  const wanted = options.listeners ?? [
    { name: NOISY, tenant: NOISY },
    { name: BYSTANDER, tenant: BYSTANDER },
  ];
  const overrides = options.overrides ?? {};
  const section = (name: string): Record<string, unknown> => (overrides[name] ?? {}) as Record<string, unknown>;
  // Loaded in the child by the product's own loader (validation, defaults, limits derived from the
  // global ones), as a configuration file would be. maxBufferedBytes only where the build knows it:
  // the schema refuses unknown settings.
  const settings: FileSettings = {
    ...overrides,
    listeners: wanted.map(({ name, tenant }) => ({
      name,
      listen: '127.0.0.1:0',
      ...(tenant === null ? { methods: [] } : { methods: ['static'], staticTenant: tenant }),
    })),
    upstream: { connectTimeoutMS: 5_000, ...section('upstream'), uri: upstreamUri },
    metrics: { listen: '127.0.0.1:0' },
    limits: { ...(hasLimit('maxBufferedBytes') ? { maxBufferedBytes: BUFFER_BUDGET } : {}), ...section('limits') },
    log: { level: 'warn' },
  };
  const dist = await builtDist();
  const child: CliProcess = spawnCli(childScript, [dist], {
    MTP_NEIGHBOURS_SETTINGS: JSON.stringify(settings),
    // As the container image runs the proxy (Dockerfile, docs/deploy.md "Memory"): gc() exposed, so
    // the proxy collects once a burst is over (and memoryReport() can force one); glibc's per-thread
    // arenas and dynamic mmap threshold would otherwise keep the native memory of freed big buffers.
    NODE_OPTIONS: '--expose-gc',
    MALLOC_ARENA_MAX: process.env['MALLOC_ARENA_MAX'] ?? '2',
    ...mmapThreshold(),
    // Diagnosis: the child's memory every 100 ms as JSON lines in this file (proxy-child.mjs).
    ...(process.env['MTP_NEIGHBOURS_TRACE'] !== undefined
      ? { MTP_NEIGHBOURS_TRACE: process.env['MTP_NEIGHBOURS_TRACE'] }
      : {}),
  });
  let memoryReports = 0;
  let ready: Record<string, unknown>;
  try {
    ready = await child.waitForLine((line) => line['msg'] === 'neighbours-ready', 60_000);
  } catch (error) {
    child.child.kill('SIGKILL');
    throw error;
  }
  const addresses = ready['addresses'] as Record<string, HostPort>;
  const metrics = ready['metricsAddress'] as HostPort;
  const base = `http://${metrics.host}:${metrics.port}`;
  const pid = child.child.pid!;
  const address = (listener: string): HostPort => {
    const found = addresses[listener];
    if (found === undefined) throw new Error(`no listener ${listener}`);
    return found;
  };
  return {
    pid,
    config: ready['config'] as ProxyConfig,
    address,
    uri: (listener) => `mongodb://${address(listener).host}:${address(listener).port}/?directConnection=true`,
    lines: child.lines,
    metricsText: async () => (await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(10_000) })).text(),
    readyzUrl: `${base}/readyz`,
    readyz: async () => {
      try {
        return (await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(5_000) })).status;
      } catch {
        return 0; // no answer in time counts as not ready
      }
    },
    memory: () => {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
      return { rss: kb('VmRSS') * 1024, hwm: kb('VmHWM') * 1024 };
    },
    memoryMap: () => {
      const groups: Record<string, number> = {};
      let kind = '';
      for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
        const mapping = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
        if (mapping !== null) {
          const sizeMiB = (parseInt(mapping[2]!, 16) - parseInt(mapping[1]!, 16)) / MiB;
          const name = mapping[3] ?? '';
          kind = name.startsWith('/')
            ? 'files'
            : name !== ''
              ? name
              : sizeMiB < 1
                ? 'anon<1M'
                : sizeMiB < 60
                  ? 'anon<60M'
                  : 'anon>=60M';
          continue;
        }
        const rss = /^Rss:\s+(\d+) kB/.exec(line);
        if (rss !== null) groups[kind] = (groups[kind] ?? 0) + Number(rss[1]) / 1024;
      }
      return Object.fromEntries(
        Object.entries(groups)
          .filter(([, v]) => v >= 0.5)
          .map(([k, v]) => [k, Math.round(v)]),
      );
    },
    async memoryReport() {
      const n = ++memoryReports;
      child.child.kill('SIGUSR2');
      const line = await child.waitForLine((l) => l['msg'] === 'neighbours-memory' && l['n'] === n, 10_000);
      return line as unknown as { before: NodeJS.MemoryUsage; after: NodeJS.MemoryUsage };
    },
    async stop() {
      if (child.child.exitCode !== null) return;
      child.child.kill('SIGTERM');
      const exited = await Promise.race([child.exited.then(() => true), sleep(10_000).then(() => false)]);
      if (!exited) {
        child.child.kill('SIGKILL');
        await child.exited;
      }
    },
  };
}

// ------------------------------------------------------------------------------------------------
// The bystander

interface Sample {
  at: number;
  ms: number;
}

interface BystanderError {
  at: number;
  message: string;
}

/**
 * The well-behaved tenant: `workers` closed loops of small reads, writes and a cursor read with
 * getMores over one driver client; with `newConnections`, every fourth operation is a fresh
 * client's connect + ping (the victim of connection floods). Every operation has a 30 s deadline.
 *
 * It runs in a process of its own (bystander-child.mjs), like a real tenant's service: in the test
 * process its driver shared the event loop (and the garbage collections) with the abusers, which
 * build 48 MB messages and open thousands of sockets there, so their work counted as the proxy's.
 * Each operation's end time and duration come back over IPC, measured in the child.
 */
export class Bystander {
  readonly samples: Sample[] = [];
  readonly errors: BystanderError[] = [];
  private readonly child: ChildProcess;
  private readonly exited: Promise<void>;
  /** The answer awaited from the child ('seeded' or 'stopped'), if any. */
  private waiting: { key: 'seeded' | 'stopped'; resolve: () => void; reject: (error: Error) => void } | undefined;

  /** The polls of the proxy's `/readyz` (when given its address): when asked, the status (0: no answer in 5 s), ms. */
  readonly readyz: Array<{ at: number; status: number; ms: number }> = [];

  constructor(
    uri: string,
    workers: number,
    newConnections = false,
    collection = 'bystander',
    readyzUrl: string | undefined = undefined,
  ) {
    this.child = fork(bystanderScript, [], {
      env: bystanderEnv(collection, JSON.stringify({ uri, db: DB, collection, workers, newConnections, readyzUrl })),
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.child.on('message', (message: BystanderMessage) => this.onMessage(message));
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.waiting?.reject(new Error(`bystander process exited (${code ?? signal})`));
        this.waiting = undefined;
        resolve();
      });
    });
  }

  /** Seeds the bystander's documents (through the proxy, so they carry its tenant). */
  seed(): Promise<void> {
    return this.ask('seed', 'seeded');
  }

  start(): void {
    this.child.send({ do: 'start' });
  }

  /** Stops the loops, closes the child's client and waits for the child to exit (at most 40 s). */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null || !this.child.connected) {
      return this.exited;
    }
    try {
      await withDeadline(this.ask('stop', 'stopped'), 40_000, 'bystander stop');
    } finally {
      if (this.child.exitCode === null) this.child.kill('SIGKILL');
      await this.exited;
    }
  }

  /** The end time of the first successful operation that ended after `since` (ms epoch), or undefined. */
  firstSuccessAfter(since: number): number | undefined {
    return this.samples.find((sample) => sample.at >= since)?.at;
  }

  private ask(what: 'seed' | 'stop', key: 'seeded' | 'stopped'): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting = { key, resolve, reject };
      this.child.send({ do: what });
    });
  }

  private onMessage(message: BystanderMessage): void {
    if (message.sample !== undefined) {
      this.samples.push({ at: message.sample[0], ms: message.sample[1] });
    } else if (message.readyz !== undefined) {
      this.readyz.push({ at: message.readyz[0], status: message.readyz[1], ms: message.readyz[2] });
    } else if (message.error !== undefined) {
      this.errors.push({ at: message.error[0], message: message.error[1] });
    } else if (message.failed !== undefined) {
      this.waiting?.reject(new Error(`bystander: ${message.failed}`));
      this.waiting = undefined;
    } else if (this.waiting !== undefined && message[this.waiting.key] === true) {
      this.waiting.resolve();
      this.waiting = undefined;
    }
  }
}

/** What bystander-child.mjs sends. */
interface BystanderMessage {
  sample?: [at: number, ms: number];
  error?: [at: number, message: string];
  readyz?: [at: number, status: number, ms: number];
  failed?: string;
  seeded?: boolean;
  stopped?: boolean;
}

/** The child's environment: the trace is the proxied bystander's only (the control's operations would mix into it). */
function bystanderEnv(collection: string, settings: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, MTP_BYSTANDER: settings };
  if (collection !== 'bystander') delete env['MTP_NEIGHBOURS_TRACE'];
  return env;
}

const bystanderScript = fileURLToPath(new URL('./bystander-child.mjs', import.meta.url));

// ------------------------------------------------------------------------------------------------
// Raw abusers

/**
 * A frame that can be sent many times without copying its payload: each send writes a fresh
 * 16-byte header (new requestId) then the shared rest, so thousands of pending writes of a 14 MB
 * message hold one buffer in the test process.
 */
let nextRequestId = 5_000_000;
export function sendShared(client: RawClient, frame: Buffer): number {
  const requestId = ++nextRequestId;
  const header = Buffer.from(frame.subarray(0, 16));
  header.writeInt32LE(requestId, 4);
  client.socket.write(header);
  client.socket.write(frame.subarray(16));
  return requestId;
}

/** The reply's code (0 when ok: 1), or 'closed' / 'timeout'. */
export async function replyCode(client: RawClient, timeoutMS: number): Promise<number | 'closed' | 'timeout'> {
  try {
    const frame = await client.readFrame(timeoutMS);
    if (frame === null) return 'closed';
    const reply = replyDocument(frame);
    return reply['ok'] === 1 ? 0 : Number(reply['code'] ?? -1);
  } catch {
    return client.closed ? 'closed' : 'timeout';
  }
}

/** A TCP connection, or an error after `ms` (a proxy that stops accepting must not hang the abuser). */
function connectWithin({ host, port }: HostPort, ms: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no connection within ${ms} ms`));
    }, ms);
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

/** Counts outcomes by name, for the report. */
export class Tally {
  readonly counts: Record<string, number> = {};
  add(outcome: string | number): void {
    const key = String(outcome);
    this.counts[key] = (this.counts[key] ?? 0) + 1;
  }
  toString(): string {
    return Object.entries(this.counts)
      .map(([key, count]) => `${key}:${count}`)
      .join(' ');
  }
}

// ------------------------------------------------------------------------------------------------
// One abuse against the bystander

export interface AbuseContext {
  proxy: ChildProxy;
  bystander: Bystander;
  /** Timed abuses run until then (ms epoch). */
  until: number;
  /** A raw connection to `listener` (default the noisy tenant's); destroyed when the abuse ends. */
  raw(listener?: string): Promise<RawClient>;
  /** Opens `count` raw connections in batches (a full listen backlog is not the abuse); failures are skipped. */
  rawMany(count: number, listener?: string): Promise<RawClient[]>;
  /** A driver client of the noisy tenant; closed when the abuse ends. */
  noisyClient(): MongoClient;
  /** Bystander errors within [from, to] are expected (e.g. while the upstream is down): reported, not asserted. */
  excuse(from: number, to: number): void;
  /** Figures of this abuse for the report (counts, codes seen, times). */
  notes: Record<string, string | number>;
}

export interface Latency {
  n: number;
  p50: number;
  p99: number;
}

/** One line of the report (test/neighbours/reporter.ts). */
export interface NeighbourRow {
  abuse: string;
  profile: ProfileName;
  /** The bystander's latencies in the quiet windows before and after the abuse, together. */
  baseline: Latency;
  /** The same, before the abuse only and after it only (for the report). */
  baselineBefore: Latency;
  baselineAfter: Latency;
  underAbuse: Latency;
  /** underAbuse.p99 / baseline.p99 (the goal is <= 2: goalsMet). */
  p99Ratio: number;
  bystanderOps: number;
  bystanderErrors: number;
  /** Errors in excused windows (upstream down). */
  excusedErrors: number;
  firstError: string | null;
  breakerOpenings: number;
  breakerStateAtEnd: number;
  readyzFailures: number;
  readyzAtEnd: number;
  rssBaselineMiB: number;
  rssPeakMiB: number;
  rssAfterMiB: number;
  rssBudgetMiB: number;
  /** How long the memory took to come back within 20% of baseline (or the whole wait). */
  recoveryMS: number;
  abuseMS: number;
  notes: Record<string, string | number>;
  /** The control bystander straight on the upstream (MTP_NEIGHBOURS_CONTROL=1), in the same windows. */
  control?: { baseline: Latency; underAbuse: Latency; p99Ratio: number; errors: number };
  /** Milliseconds spent in each phase: start, setup, baseline (with warm-up), abuse, recovery, bystanderStop. */
  phasesMS: Record<string, number>;
  /** The effective limits and breaker settings of the proxy (defaults, derived values). */
  settings: { limits: ProxyConfig['limits']; upstream: Partial<ProxyConfig['upstream']> };
}

declare module 'vitest' {
  interface TaskMeta {
    neighbours?: NeighbourRow;
  }
}

export interface AbuseSpec {
  abuse: string;
  upstreamUri: string;
  listeners?: NeighbourListener[];
  overrides?: FileSettings;
  newConnections?: boolean;
  /** Before the bystander starts (seeding the noisy tenant's documents). */
  setup?: (ctx: AbuseContext) => Promise<void>;
  run: (ctx: AbuseContext) => Promise<void>;
  /** After the abusers are gone, before the memory check (e.g. cursors released). */
  after?: (ctx: AbuseContext) => Promise<void>;
}

const mib = (bytes: number): number => Math.round((bytes / MiB) * 10) / 10;

function latency(samples: Sample[]): Latency {
  const sorted = samples.map((sample) => sample.ms).sort((a, b) => a - b);
  const at = (q: number): number =>
    sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  return { n: sorted.length, p50: at(0.5), p99: at(0.99) };
}

/**
 * Runs one abuse against the bystander and returns the measured row, also attached to the test
 * (`meta`) before any assertion so a failing abuse is still reported.
 */
export async function runAbuse(meta: TaskMeta, spec: AbuseSpec): Promise<NeighbourRow> {
  // Where the test's time goes, for the report (phase name → ms).
  const phases: Record<string, number> = {};
  let phaseStart = Date.now();
  const phase = (name: string): void => {
    phases[name] = Date.now() - phaseStart;
    phaseStart = Date.now();
  };
  const proxy = await startChildProxy(spec.upstreamUri, { listeners: spec.listeners, overrides: spec.overrides });
  const raws = new Set<RawClient>();
  const noisyClients = new Set<MongoClient>();
  const excused: Array<[number, number]> = [];
  // The bystander's process also polls /readyz (not the test process, which the abusers keep busy).
  const bystander = new Bystander(
    proxy.uri(BYSTANDER),
    TIMING.bystanderWorkers,
    spec.newConnections,
    'bystander',
    proxy.readyzUrl,
  );
  const control = CONTROL
    ? new Bystander(spec.upstreamUri, TIMING.bystanderWorkers, spec.newConnections, CONTROL_COLLECTION)
    : undefined;
  const dropAbusers = async (): Promise<void> => {
    for (const raw of raws) raw.close();
    raws.clear();
    await Promise.allSettled([...noisyClients].map((client) => client.close()));
    noisyClients.clear();
  };
  const raw = async (listener = NOISY): Promise<RawClient> => {
    const client = RawClient.over(await connectWithin(proxy.address(listener), 5_000));
    raws.add(client);
    return client;
  };
  const ctx: AbuseContext = {
    proxy,
    bystander,
    until: 0,
    raw,
    async rawMany(count, listener) {
      const opened: RawClient[] = [];
      for (let done = 0; done < count; done += 50) {
        const batch = await Promise.allSettled(Array.from({ length: Math.min(50, count - done) }, () => raw(listener)));
        for (const result of batch) if (result.status === 'fulfilled') opened.push(result.value);
      }
      return opened;
    },
    noisyClient() {
      const client = new MongoClient(proxy.uri(NOISY), { serverSelectionTimeoutMS: 10_000 });
      noisyClients.add(client);
      return client;
    },
    excuse: (from, to) => void excused.push([from, to]),
    notes: {},
  };
  try {
    phase('start');
    await spec.setup?.(ctx);
    await bystander.seed();
    await control?.seed();
    phase('setup');
    bystander.start();
    control?.start();
    await sleep(TIMING.warmupMS);
    const baselineStart = Date.now();
    await sleep(TIMING.baselineMS);
    const rssBaseline = proxy.memory().rss;
    const mapBaseline = proxy.memoryMap();
    phase('baseline');
    const abuseStart = Date.now();
    ctx.until = abuseStart + TIMING.abuseMS;
    await spec.run(ctx);
    const abuseEnd = Date.now();
    await dropAbusers();
    await spec.after?.(ctx);
    phase('abuse');
    const recoveryStart = Date.now();
    const budget = rssBaseline + BUFFER_BUDGET + RSS_HEADROOM;
    let rssAfter = proxy.memory().rss;
    while (rssAfter > rssBaseline * RSS_RECOVERY_FACTOR && Date.now() - recoveryStart < TIMING.recoveryMS) {
      await sleep(250);
      rssAfter = proxy.memory().rss;
    }
    const recoveryMS = Date.now() - recoveryStart;
    if (rssAfter > rssBaseline * RSS_RECOVERY_FACTOR) {
      // Diagnosis for the report: is it garbage not yet collected, or memory still held?
      const { before, after } = await proxy.memoryReport();
      ctx.notes['heap/external/arrayBuffers MiB'] =
        `${mib(before.heapUsed)}/${mib(before.external)}/${mib(before.arrayBuffers)}`;
      ctx.notes['after forced gc'] = `${mib(after.heapUsed)}/${mib(after.external)}/${mib(after.arrayBuffers)}`;
      await sleep(500);
      ctx.notes['rssAfterForcedGcMiB'] = mib(proxy.memory().rss);
      const map = proxy.memoryMap();
      ctx.notes['resident MiB by mapping (baseline→after)'] = Object.keys({ ...mapBaseline, ...map })
        .map((kind) => `${kind} ${mapBaseline[kind] ?? 0}→${map[kind] ?? 0}`)
        .join('; ');
    }
    const rssPeak = proxy.memory().hwm;
    // The second quiet window (TIMING.quietAfterMS), then the bystander stops.
    const afterStart = Date.now();
    await sleep(TIMING.quietAfterMS);
    const afterEnd = Date.now();
    const readyzAtEnd = await proxy.readyz();
    phase('recovery');
    await bystander.stop();
    await control?.stop();
    // The polls from the abuse's start to the end of the quiet window after it (start-up is not
    // the abuse's), all of them in once the bystander stopped.
    const readyzFailed = bystander.readyz.filter(
      (poll) => poll.at >= abuseStart && poll.at <= afterEnd && poll.status !== 200,
    );
    const readyzFailures = readyzFailed.length;
    if (readyzFailures > 0)
      ctx.notes['readyz failed'] = readyzFailed
        .slice(0, 4)
        .map((poll) => `${poll.status} in ${poll.ms} ms`)
        .join(', ');
    const metrics = await proxy.metricsText();
    // Where forwarded commands spent their time over the whole row (every tenant's; the abuses
    // send finds or inserts, the bystander all three): the upstream (a pooled connection and the
    // server's answer) or the proxy itself. Diagnosis only.
    for (const command of ['insert', 'find', 'getMore']) {
      const meanMS = (histogram: string): string => {
        const count = sumSamples(metrics, `${histogram}_count`, { command });
        return count === 0 ? '-' : ((sumSamples(metrics, `${histogram}_sum`, { command }) / count) * 1000).toFixed(1);
      };
      ctx.notes[`${command} mean ms upstream/proxy`] =
        `${meanMS('upstream_wait_seconds')}/${meanMS('proxy_overhead_seconds')}`;
    }
    phase('bystanderStop');
    const isExcused = (at: number): boolean => excused.some(([from, to]) => at >= from && at <= to);
    const errors = bystander.errors.filter((error) => !isExcused(error.at));
    const before = bystander.samples.filter((s) => s.at >= baselineStart && s.at < abuseStart);
    const after = bystander.samples.filter((s) => s.at >= afterStart && s.at <= afterEnd);
    const baseline = latency([...before, ...after]);
    const underAbuse = latency(bystander.samples.filter((s) => s.at >= abuseStart && s.at <= abuseEnd));
    const inWindows = (samples: Sample[]): { baseline: Latency; underAbuse: Latency } => ({
      baseline: latency(
        samples.filter((s) => (s.at >= baselineStart && s.at < abuseStart) || (s.at >= afterStart && s.at <= afterEnd)),
      ),
      underAbuse: latency(samples.filter((s) => s.at >= abuseStart && s.at <= abuseEnd)),
    });
    const controlWindows = control === undefined ? undefined : inWindows(control.samples);
    const row: NeighbourRow = {
      abuse: spec.abuse,
      profile: PROFILE,
      baseline,
      baselineBefore: latency(before),
      baselineAfter: latency(after),
      underAbuse,
      p99Ratio: Math.round((underAbuse.p99 / baseline.p99) * 100) / 100,
      bystanderOps: bystander.samples.length,
      bystanderErrors: errors.length,
      excusedErrors: bystander.errors.length - errors.length,
      firstError: errors[0]?.message ?? null,
      breakerOpenings: sumSamples(metrics, 'circuit_breaker_transitions_total', { to: 'open' }),
      breakerStateAtEnd: [...parseSamples(metrics, 'circuit_breaker_state').values()].reduce(
        (a, b) => Math.max(a, b),
        0,
      ),
      readyzFailures,
      readyzAtEnd,
      rssBaselineMiB: mib(rssBaseline),
      rssPeakMiB: mib(rssPeak),
      rssAfterMiB: mib(rssAfter),
      rssBudgetMiB: mib(budget),
      recoveryMS,
      abuseMS: abuseEnd - abuseStart,
      notes: ctx.notes,
      ...(control !== undefined && controlWindows !== undefined
        ? {
            control: {
              ...controlWindows,
              p99Ratio: Math.round((controlWindows.underAbuse.p99 / controlWindows.baseline.p99) * 100) / 100,
              errors: control.errors.length,
            },
          }
        : {}),
      phasesMS: phases,
      settings: {
        limits: proxy.config.limits,
        upstream: {
          maxPoolSize: proxy.config.upstream.maxPoolSize,
          maxPoolConnectionsPerTenant: proxy.config.upstream.maxPoolConnectionsPerTenant,
          circuitBreaker: proxy.config.upstream.circuitBreaker,
        },
      },
    };
    meta.neighbours = row;
    process.stdout.write(`[neighbours] ${JSON.stringify(row)}\n`);
    return row;
  } finally {
    await dropAbusers();
    await bystander.stop().catch(() => undefined);
    await control?.stop().catch(() => undefined);
    const stopping = Date.now();
    await proxy.stop();
    process.stdout.write(`[neighbours] ${spec.abuse}: proxy stopped in ${Date.now() - stopping} ms\n`);
  }
}

/** The goal for the bystander's p99 under abuse over its own baseline p99 (same run). */
export const P99_RATIO_GOAL = 2;

/**
 * Whether goalsMet asserts the p99 goal: when the suite is run on its own (`npm run
 * test:neighbours`, or MTP_NEIGHBOURS set), unless MTP_NEIGHBOURS_P99=report. Inside `npm test`
 * (MTP_NEIGHBOURS unset) the ratios are reported only, as the Proof asks for CI ("report,
 * do not time-assert in CI"): there the other test files share the two cores with the bystander.
 */
export const P99_ASSERTED =
  process.env['MTP_NEIGHBOURS'] !== undefined
    ? process.env['MTP_NEIGHBOURS_P99'] !== 'report'
    : process.env['MTP_NEIGHBOURS_P99'] === 'assert';

/**
 * The Goals for the bystander and the proxy: the bystander's p99 within P99_RATIO_GOAL of
 * its own baseline (quiet windows before and after the abuse; asserted as P99_ASSERTED says),
 * no bystander errors, the breaker never opened and `/readyz` never failed (unless the abuse is the
 * upstream itself going away), RSS under the budget, memory back within 20% of baseline.
 */
export function goalsMet(row: NeighbourRow, options: { upstreamWentAway?: boolean } = {}): void {
  expect.soft(row.bystanderErrors, `bystander errors (first: ${row.firstError})`).toBe(0);
  expect.soft(row.bystanderOps, 'the bystander made progress').toBeGreaterThan(0);
  if (P99_ASSERTED) {
    expect
      .soft(
        row.p99Ratio,
        `bystander p99 under abuse over its baseline p99 (${row.underAbuse.p99}/${row.baseline.p99} ms)`,
      )
      .toBeLessThanOrEqual(P99_RATIO_GOAL);
  }
  if (options.upstreamWentAway !== true) {
    expect.soft(row.breakerOpenings, 'circuit breaker openings').toBe(0);
    expect.soft(row.readyzFailures, '/readyz answers other than 200 during the abuse').toBe(0);
  }
  expect.soft(row.breakerStateAtEnd, 'circuit breaker state at the end (0 closed)').toBe(0);
  expect.soft(row.readyzAtEnd, '/readyz at the end').toBe(200);
  expect.soft(row.rssPeakMiB, 'proxy RSS peak (MiB) within the budget').toBeLessThanOrEqual(row.rssBudgetMiB);
  expect
    .soft(row.rssAfterMiB, 'proxy RSS after the abuse (MiB) within 20% of its baseline')
    .toBeLessThanOrEqual(Math.round(row.rssBaselineMiB * RSS_RECOVERY_FACTOR * 10) / 10);
}

/** Waits for a metric of the proxy to satisfy `condition`; returns how long it took, or -1 on timeout. */
export async function waitForMetric(
  proxy: ChildProxy,
  name: string,
  condition: (value: number) => boolean,
  timeoutMS: number,
): Promise<number> {
  const started = Date.now();
  try {
    await until(async () => condition(sumSamples(await proxy.metricsText(), name)), { timeoutMS, intervalMS: 100 });
    return Date.now() - started;
  } catch {
    return -1;
  }
}
