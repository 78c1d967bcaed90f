// The proxy of a noisy-neighbour test in its own process, so its RSS is the proxy's alone (the test
// process holds drivers, abusers and vitest). Runs the run's build of src/ (test/helpers/cli-process.ts
// builtDist): `node proxy-child.mjs <dist directory>` with settings shaped like the configuration
// file as JSON in MTP_NEIGHBOURS_SETTINGS, loaded by the product's own loader (defaults, validation,
// derived limits). Writes JSON lines to stdout: the proxy's own log (at the settings' level), then
// one `{"msg":"neighbours-ready",…}` line with the listener and metrics addresses and the effective
// configuration.
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import pino from 'pino';

const dist = process.argv[2];
if (dist === undefined) throw new Error('usage: proxy-child.mjs <dist directory>');
const settings = JSON.parse(process.env.MTP_NEIGHBOURS_SETTINGS ?? '{}');
const { configFromObject } = await import(pathToFileURL(path.join(dist, 'config', 'index.js')).href);
const { startProxy } = await import(pathToFileURL(path.join(dist, 'main.js')).href);
const config = configFromObject(settings, 'MTP_NEIGHBOURS_SETTINGS');
const logger = pino({ level: config.log.level });
const proxy = await startProxy(config, { logger, auditStream: { write: () => true } });
process.stdout.write(
  `${JSON.stringify({ msg: 'neighbours-ready', addresses: proxy.addresses, metricsAddress: proxy.metricsAddress, config })}\n`,
);
// For a report when memory did not come back: the heap and buffers before and after a full garbage
// collection (gc() exists when the harness starts the child with --expose-gc), to tell garbage not yet
// collected from memory the proxy still holds.
let memoryReports = 0;
process.on('SIGUSR2', async () => {
  const before = process.memoryUsage();
  // Buffers' backing stores are freed after the collection that finds them dead (by the sweeper and
  // finalizers), so one gc() read at once still counts them: collect a few times, yielding between.
  for (let i = 0; i < 3; i++) {
    globalThis.gc?.();
    await new Promise((resolve) => setImmediate(resolve));
  }
  const after = process.memoryUsage();
  process.stdout.write(`${JSON.stringify({ msg: 'neighbours-memory', n: ++memoryReports, before, after })}\n`);
});
// MTP_NEIGHBOURS_TRACE=<file>: the process's memory every 100 ms, one JSON line each (diagnosis only).
if (process.env.MTP_NEIGHBOURS_TRACE) {
  const { appendFileSync } = await import('node:fs');
  const { monitorEventLoopDelay, performance, PerformanceObserver } = await import('node:perf_hooks');
  const file = process.env.MTP_NEIGHBOURS_TRACE;
  // Also where the event loop stalled: its longest delay (lag, ms) and the time spent in garbage
  // collections (gc, ms: the longest one, and all of them) since the previous line.
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  let gcMax = 0;
  let gcSum = 0;
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      gcMax = Math.max(gcMax, entry.duration);
      gcSum += entry.duration;
      // A collection long enough to be a bystander's slow operation gets a line of its own: when it
      // started (ms epoch), how long, V8's kind (1 minor, 4 major...) and flags (4: forced by gc(), 32: external memory pressure).
      if (entry.duration >= 5) {
        const { kind, flags } = entry.detail ?? {};
        appendFileSync(
          file,
          `${JSON.stringify({ t: Math.round(performance.timeOrigin + entry.startTime), gcMS: Math.round(entry.duration), kind, flags })}\n`,
        );
      }
    }
  }).observe({ entryTypes: ['gc'] });
  // The young generation's committed size (V8 grows it to 32 MiB under allocation; part of heapTotal).
  const { getHeapSpaceStatistics } = await import('node:v8');
  const youngBytes = () => getHeapSpaceStatistics().find((space) => space.space_name === 'new_space')?.space_size ?? 0;
  setInterval(() => {
    const m = process.memoryUsage();
    const mb = (n) => Math.round(n / 1048576);
    const lag = Math.round(delay.max / 1e6);
    delay.reset();
    const gc = `${Math.round(gcMax)}/${Math.round(gcSum)}`;
    gcMax = gcSum = 0;
    appendFileSync(
      file,
      `${JSON.stringify({ t: Date.now(), rss: mb(m.rss), heap: mb(m.heapUsed), heapTotal: mb(m.heapTotal), young: mb(youngBytes()), ext: mb(m.external), ab: mb(m.arrayBuffers), budget: mb(proxy.metrics.bufferedBytes?.() ?? 0), lag, gc })}\n`,
    );
  }, 100).unref();
}
const stop = () => {
  proxy.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
