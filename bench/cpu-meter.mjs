/**
 * In-process measurement of what the per-tenant CPU budget (limits.cpuMillisPerSecondPerTenant,
 * issue 15) adds to a small command's handle path: best of N, steadier than the interleaved bench
 * on a shared machine. Runs against `dist/` (`npm run build` first).
 *
 * Two measurements:
 * - the meter alone: the clock read at the end of a request's work plus the charge
 *   (TenantLimits.now + chargeCpu), per call, best of BENCH_REQUEST_ROUNDS rounds of 1e6 calls;
 * - the whole handle path of a small command: a ClientConnection over an in-memory duplex, its
 *   static tenant's `find` (admission, decode, route, rewrite, forward to an upstream that
 *   answers at once, the reply written) and a `ping` (answered by the proxy), one at a time,
 *   with the CPU budget off (0) and on (1,000,000 ms/s: metered, never over; BENCH_REQUEST_ON), rounds interleaved,
 *   best of 4 x BENCH_REQUEST_ROUNDS (30) rounds of BENCH_REQUEST_ITERATIONS (2,000) commands each.
 *
 *   node bench/cpu-meter.mjs
 *   BENCH_REQUEST_OFF=1000000 node bench/cpu-meter.mjs   # A/A control: both connections metered
 */
import { duplexPair } from 'node:stream';
import { Long, serialize } from 'bson';
import { pino } from 'pino';

const dist = new URL('../dist/', import.meta.url);
const load = (path) => import(new URL(path, dist).href);

const rounds = Number(process.env.BENCH_REQUEST_ROUNDS ?? 30);
const iterations = Number(process.env.BENCH_REQUEST_ITERATIONS ?? 2000);

const { configFromObject } = await load('config/index.js');
const { ProxyMetrics } = await load('observability/metrics.js');
const { CursorRegistry } = await load('policy/cursors.js');
const { IsolationEngine } = await load('rewrite/engine.js');
const { BufferBudget } = await load('server/buffer-budget.js');
const { ClientConnection } = await load('server/client-connection.js');
const { createConnectionObserver } = await load('server/connection-observer.js');
const { TenantLimits } = await load('server/tenant-limits.js');
const { UpstreamSession } = await load('upstream/upstream.js');
const { createFailureThrottle } = await load('identity/throttle.js');
const { encodeOpMsg } = await load('wire/op-msg.js');

const SERVER = {
  kind: 'standalone',
  minWireVersion: 0,
  maxWireVersion: 21,
  maxBsonObjectSize: 16 * 1024 * 1024,
  maxMessageSizeBytes: 48_000_000,
  maxWriteBatchSize: 100_000,
  logicalSessionTimeoutMinutes: 30,
};

const upstreamReply = encodeOpMsg({
  requestId: 500,
  responseTo: 0,
  body: serialize({ cursor: { id: Long.fromNumber(0), ns: 'app.orders', firstBatch: [] }, ok: 1 }),
});

/** Answers every forwarded command at once with an empty, exhausted cursor. */
const upstream = {
  openSession: () => new UpstreamSession(),
  endSession: () => undefined,
  forward(request) {
    request.onReply(Buffer.from(upstreamReply), false, {});
    return Promise.resolve({ attempts: 1 });
  },
};

/** A connection of static tenant `acme` with the CPU budget at `cpu` ms/s; `send` runs one command. */
function connection(cpu) {
  const config = configFromObject({ limits: { cpuMillisPerSecondPerTenant: cpu } });
  const metrics = new ProxyMetrics({ processMetrics: false, maxTenantLabels: 10 });
  const audit = {
    decision: () => undefined,
    authentication: () => undefined,
    reopen: () => undefined,
    close: async () => undefined,
  };
  const sinks = { metrics, audit, logger: pino({ level: 'silent' }) };
  const listener = {
    name: 'bench',
    listen: { host: '127.0.0.1', port: 0 },
    tls: null,
    methods: ['static'],
    staticTenant: 'acme',
  };
  const [client, proxy] = duplexPair();
  new ClientConnection(
    proxy,
    {
      config,
      upstream,
      server: () => SERVER,
      observe: (fields) => createConnectionObserver(sinks, { ...fields, listener: listener.name }),
      listener,
      identity: {
        throttle: createFailureThrottle(config.identity.failureDelay),
        observer: { authentication: () => undefined },
      },
      peerCertificate: undefined,
      isolation: new IsolationEngine({
        config: config.isolation,
        cursors: new CursorRegistry(),
        sessionKey: Buffer.alloc(32, 7),
        collationSupported: () => false,
      }),
      tenantLimits: new TenantLimits(config.limits),
      bufferBudget: new BufferBudget(config.limits.maxBufferedBytes),
    },
    () => undefined,
  );
  let waiting;
  let buffered = Buffer.alloc(0);
  client.on('data', (chunk) => {
    buffered = Buffer.concat([buffered, chunk]);
    if (buffered.length >= 4 && buffered.length >= buffered.readInt32LE(0)) {
      buffered = buffered.subarray(buffered.readInt32LE(0));
      const resolve = waiting;
      waiting = undefined;
      resolve();
    }
  });
  let id = 1;
  const frame = (document) => encodeOpMsg({ requestId: id++, responseTo: 0, body: serialize(document) });
  const find = frame({ find: 'orders', filter: { status: 'open', qty: { $gt: 5 } }, limit: 10, $db: 'app' });
  const ping = frame({ ping: 1, $db: 'admin' });
  const send = (bytes) =>
    new Promise((resolve) => {
      waiting = resolve;
      client.write(bytes);
    });
  return { find: () => send(find), ping: () => send(ping) };
}

/** One round: `iterations` runs of `run`, µs per command. */
async function round(run) {
  const started = process.hrtime.bigint();
  for (let i = 0; i < iterations; i += 1) await run();
  return Number(process.hrtime.bigint() - started) / 1000 / iterations;
}

// The meter alone: one clock read and the charge, as a request's end does.
const meter = new TenantLimits({
  maxConnectionsPerTenant: 0,
  maxInFlightPerTenant: 0,
  operationsPerSecondPerTenant: 0,
  operationsBurstPerTenant: 0,
  cpuMillisPerSecondPerTenant: 500,
});
let meterBest = Infinity;
for (let r = 0; r < rounds; r += 1) {
  const calls = 1_000_000;
  let started = meter.now();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < calls; i += 1) {
    const now = meter.now();
    meter.chargeCpu('acme', now - started, now);
    started = now;
  }
  meterBest = Math.min(meterBest, Number(process.hrtime.bigint() - t0) / calls);
}
console.log(`meter (clock read + chargeCpu): ${meterBest.toFixed(1)} ns per request (best of ${rounds} x 1e6)`);

// BENCH_REQUEST_OFF=1000000 makes both connections metered: the A/A control of the machine's noise.
const off = connection(Number(process.env.BENCH_REQUEST_OFF ?? 0));
// Metered but never over: one connection running the proxy flat out is over a 500 ms/s budget
// (it would be slowed, as it should), which is not the meter's cost.
const on = connection(Number(process.env.BENCH_REQUEST_ON ?? 1_000_000));
// Warm up both, then alternate so drift on a shared machine hits both alike.
for (let i = 0; i < 5000; i += 1) {
  await off.find();
  await on.find();
  await off.ping();
  await on.ping();
}
const results = { find: { off: Infinity, on: Infinity }, ping: { off: Infinity, on: Infinity } };
// Rounds interleaved (off, on, off, on…), so the machine's drift hits both alike; best of each.
for (let r = 0; r < rounds * 4; r += 1) {
  results.find.off = Math.min(results.find.off, await round(off.find));
  results.find.on = Math.min(results.find.on, await round(on.find));
  results.ping.off = Math.min(results.ping.off, await round(off.ping));
  results.ping.on = Math.min(results.ping.on, await round(on.ping));
}
for (const [name, { off: a, on: b }] of Object.entries(results)) {
  console.log(
    `${name}: CPU budget off ${a.toFixed(2)} µs, on ${b.toFixed(2)} µs per command (${(((b - a) / a) * 100).toFixed(1)}%; best of ${rounds * 4} interleaved rounds of ${iterations})`,
  );
}
process.exit(0);
