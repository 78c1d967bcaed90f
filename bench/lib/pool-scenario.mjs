// The connection-pooling scenario (`pool-500`): many client connections over a small upstream
// pool. A proxy child of its own runs with `upstream.maxPoolSize` set (when the build has that
// option) and its metrics endpoint on; one driver opens BENCH_POOL_CLIENTS connections to it
// (minPoolSize) and runs find-one by _id with that many concurrent workers. Reported: throughput,
// p50/p99, the proxy's CPU per op, and the client:upstream connection ratio read from the proxy's
// own gauges (mongo_tenant_proxy_client_connections and mongo_tenant_proxy_upstream_connections,
// sampled every 200 ms during the measurement).
import { MongoClient } from 'mongodb';
import { PROXY_RUNTIME, TargetChild, cpuMicros } from './child.mjs';
import { deepMerge } from './merge.mjs';
import { closedLoop, round, summarize } from './stats.mjs';
import { FIND_COLLECTION, seededId } from './workloads.mjs';

export const POOL_SCENARIO_NAME = 'pool-500';
const SAMPLE_EVERY_MS = 200;

/**
 * Whether the build in dist/ knows `upstream.maxPoolSize` (added with the multiplexed pool). The
 * runtime configuration is not validated against the schema, so an unknown key would simply be
 * ignored: check the defaults instead and say so in the report.
 */
async function poolOptionAvailable() {
  try {
    const { defaultConfig } = await import('../../dist/config/index.js');
    return typeof defaultConfig === 'function' && Object.hasOwn(defaultConfig().upstream ?? {}, 'maxPoolSize');
  } catch {
    return false;
  }
}

/** Sums every sample of a metric family in a Prometheus text exposition. */
function metricSum(text, name) {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `))
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

async function connectionCounts(metricsUrl) {
  const response = await fetch(metricsUrl);
  if (!response.ok) throw new Error(`GET ${metricsUrl} answered ${response.status}`);
  const text = await response.text();
  return {
    clients: metricSum(text, 'mongo_tenant_proxy_client_connections'),
    upstream: metricSum(text, 'mongo_tenant_proxy_upstream_connections'),
  };
}

/**
 * @param {{
 *   upstreamUri: string, database: string, proxyScript: string, overrides: object | null,
 *   clients: number, poolSize: number, ops: number, findDocs: number, log: (message: string) => void,
 * }} options
 */
export async function runPoolScenario({
  upstreamUri,
  database,
  proxyScript,
  overrides,
  clients,
  poolSize,
  ops,
  findDocs,
  log,
}) {
  const poolOption = await poolOptionAvailable();
  const note = poolOption
    ? null
    : 'pool option not available (upstream.maxPoolSize unknown to this build): measured without it';
  if (note) log(note);
  const child = await TargetChild.start(
    'proxy (pool)',
    proxyScript,
    {
      upstreamUri,
      // One tenant behind all the clients: the per-tenant limits (issue 15; by default a tenant may
      // have maxPoolSize commands in flight and half the pool) would refuse or halve the scenario.
      overrides: deepMerge(overrides ?? {}, {
        // 500 requests queue for 10 connections: behind a slow upstream (FerretDB scanning under a
        // loaded machine) the default 10 s wait for a connection runs out, which is not what this measures.
        upstream: poolOption
          ? { maxPoolSize: poolSize, maxPoolConnectionsPerTenant: poolSize, waitQueueTimeoutMS: 120_000 }
          : {},
        limits: { maxInFlightPerTenant: clients },
        metrics: { listen: { host: '127.0.0.1', port: 0 } },
      }),
    },
    { runtime: PROXY_RUNTIME },
  );
  const metricsAddress = child.info?.metricsAddress;
  let client;
  try {
    if (!metricsAddress) throw new Error('the proxy child reported no metrics address');
    const metricsUrl = `http://${metricsAddress.host}:${metricsAddress.port}/metrics`;
    const { host, port } = child.address;
    client = new MongoClient(`mongodb://${host}:${port}/?directConnection=true`, {
      maxPoolSize: clients,
      minPoolSize: clients,
      maxConnecting: 50,
      serverSelectionTimeoutMS: 15_000,
      appName: 'mtp-bench-pool',
    });
    await client.connect();
    const collection = client.db(database).collection(FIND_COLLECTION);
    const lookup = (count, offset) =>
      closedLoop(count, clients, async (i) => {
        const id = seededId(((i + offset) * 7_919) % findDocs);
        const doc = await collection.findOne({ _id: id });
        if (doc?._id !== id) throw new Error(`findOne({_id: '${id}'}) returned ${JSON.stringify(doc)}`);
      });

    // Every client connection open (minPoolSize fills in the background), then a warm-up pass.
    const deadline = Date.now() + 120_000;
    for (;;) {
      const { clients: open } = await connectionCounts(metricsUrl);
      if (open >= clients) break;
      if (Date.now() > deadline) throw new Error(`only ${open} of ${clients} client connections opened in 120 s`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    await lookup(Math.min(ops, clients), 1); // one operation per worker: every connection used once
    log(`${POOL_SCENARIO_NAME}: ${clients} client connections open; measuring ${ops} find-one operations`);

    const samples = [];
    let sampling = Promise.resolve();
    const sampler = setInterval(() => {
      sampling = sampling.then(async () => samples.push(await connectionCounts(metricsUrl))).catch(() => {});
    }, SAMPLE_EVERY_MS);
    const before = await child.sample();
    let result;
    try {
      result = await lookup(ops, 0);
    } finally {
      clearInterval(sampler);
      await sampling;
    }
    const after = await child.sample();
    if (samples.length === 0) samples.push(await connectionCounts(metricsUrl));

    const clientPeak = Math.max(...samples.map((sample) => sample.clients));
    const upstreamPeak = Math.max(...samples.map((sample) => sample.upstream));
    const upstreamMean = samples.reduce((sum, sample) => sum + sample.upstream, 0) / samples.length;
    const seconds = result.wallNs / 1e9;
    return {
      name: POOL_SCENARIO_NAME,
      label: `find-one by _id, ${clients} client connections, upstream pool ${poolOption ? poolSize : 'n/a'}`,
      clients,
      poolSize: poolOption ? poolSize : null,
      poolOption,
      note,
      ops,
      wallMs: round(result.wallNs / 1e6, 1),
      throughput: round(ops / seconds, 1),
      latencyUs: summarize(result.latenciesNs),
      cpuUsPerOp: round(cpuMicros(before.cpu, after.cpu) / ops, 2),
      rssBytes: after.rss,
      connections: {
        samples: samples.length,
        clientPeak,
        upstreamPeak,
        upstreamMean: round(upstreamMean, 1),
        /** Client connections (the driver's monitoring one included) per upstream connection, at the peaks. */
        ratio: upstreamPeak > 0 ? round(clientPeak / upstreamPeak, 1) : null,
      },
    };
  } finally {
    await client?.close();
    await child.stop();
  }
}
