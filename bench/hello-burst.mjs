// A burst of handshakes from one tenant, and what a bystander's hello waits meanwhile (issue 15,
// server/turn-share.ts). One tenant holds BURST_CONNECTIONS (3,000) open connections, then sends
// a hello on every one at once, three times 300 ms apart; the bystander sends hellos on its own
// connection throughout, one at a time. Each trial runs a fresh proxy child, with the turn share
// on (the default 4 ms) and, alternated, off (a share no request reaches), BURST_ROUNDS (2) times.
// Reported: the bystander's latency before and during the burst (p50/p99/max, ms). Needs
// FerretDB from `node scripts/setup.mjs --upstreams` (any upstream: hellos are answered locally).
// `npm run build && node bench/hello-burst.mjs`
import { fork } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { serialize } from 'bson';
import { startFerretDB } from '../scripts/ferretdb.mjs';

const CONNECTIONS = Number(process.env.BURST_CONNECTIONS ?? 3_000);
const ROUNDS = Number(process.env.BURST_ROUNDS ?? 2);
const OFF = 1e9;
const child = fileURLToPath(new URL('./hello-burst-child.mjs', import.meta.url));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function hello(requestId) {
  const body = Buffer.from(serialize({ hello: 1, $db: 'admin' }));
  const frame = Buffer.alloc(21 + body.length);
  frame.writeInt32LE(frame.length, 0);
  frame.writeInt32LE(requestId, 4);
  frame.writeInt32LE(2013, 12);
  body.copy(frame, 21);
  return frame;
}

function connect({ host, port }) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, host, () => resolve(socket));
    socket.on('error', reject);
  });
}

const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))].toFixed(1);

async function trial(upstreamUri, turnMS) {
  const proxy = fork(child, [upstreamUri, String(turnMS)]);
  const { addresses } = await new Promise((resolve) => proxy.once('message', resolve));
  const held = [];
  for (let opened = 0; opened < CONNECTIONS; opened += 200) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(200, CONNECTIONS - opened) }, () => connect(addresses.noisy)),
    );
    for (const socket of batch) socket.on('data', () => undefined);
    held.push(...batch);
  }
  const bystander = await connect(addresses.bystander);
  let answered;
  bystander.on('data', () => answered?.());
  const latencies = [];
  let stopping = false;
  const loop = (async () => {
    for (let id = 1; !stopping; id++) {
      const started = performance.now();
      await new Promise((resolve) => {
        answered = resolve;
        bystander.write(hello(id));
      });
      latencies.push(performance.now() - started);
      await sleep(2);
    }
  })();
  await sleep(1_000);
  const before = latencies.length;
  for (let burst = 0; burst < 3; burst++) {
    for (const socket of held) socket.write(hello(1));
    await sleep(300);
  }
  await sleep(1_000);
  stopping = true;
  await loop;
  const base = latencies.slice(0, before).sort((a, b) => a - b);
  const during = latencies.slice(before).sort((a, b) => a - b);
  for (const socket of held) socket.destroy();
  bystander.destroy();
  proxy.send('stop');
  await new Promise((resolve) => proxy.once('exit', resolve));
  return (
    `turn share ${turnMS === OFF ? 'off' : `${turnMS} ms`}: bystander hello before p50/p99 ` +
    `${quantile(base, 0.5)}/${quantile(base, 0.99)} ms; during the burst p50/p99/max ` +
    `${quantile(during, 0.5)}/${quantile(during, 0.99)}/${during.at(-1).toFixed(1)} ms (${during.length} hellos)`
  );
}

const upstream = await startFerretDB();
try {
  for (let round = 0; round < ROUNDS; round++) {
    for (const turnMS of round % 2 === 0 ? [4, OFF] : [OFF, 4]) console.log(await trial(upstream.uri, turnMS));
  }
} finally {
  await upstream.stop();
}
