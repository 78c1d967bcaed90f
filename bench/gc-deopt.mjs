/**
 * Which hot functions V8 deoptimizes at a full collection because maps they were compiled against
 * died ("weak objects"; issue 16, src/wire/retained-shapes.ts). Runs the request path of a
 * 1,000-document insert (decode, route, forward frame) and the reply path of a 1,000-document
 * getMore batch (reply scan, tenant field cut) for BENCH_GC_ROUNDS (6) rounds of 100, with a full
 * collection (`gc()`, which like the proxy's memory-pressure collections does not keep unused
 * maps) after each, and prints each function deoptimized that way after the first round (the
 * first collection also finds the start-up's dead maps, such as the configuration schema's).
 * Against `dist/` (`npm run build` first). Expected output: none listed.
 *
 *   node bench/gc-deopt.mjs
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { tenantRouteState } from './lib/route-state.mjs';

if (process.env.GC_DEOPT_CHILD !== '1') {
  const run = spawnSync(process.execPath, ['--expose-gc', '--trace-deopt', fileURLToPath(import.meta.url)], {
    env: { ...process.env, GC_DEOPT_CHILD: '1' },
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  });
  if (run.status !== 0) {
    process.stderr.write(run.stderr);
    process.exit(run.status ?? 1);
  }
  let round = -1;
  const deopted = new Map(); // function → rounds
  for (const line of run.stdout.split('\n')) {
    const mark = /^ROUND (\d+) (.*)$/.exec(line);
    if (mark) {
      round = Number(mark[1]);
      console.log(`round ${round}: ${mark[2]}`);
      continue;
    }
    const weak = /reason: weak objects/.test(line) ? /SharedFunctionInfo ([^>]*)>/.exec(line) : null;
    if (weak && round >= 1) deopted.set(weak[1], (deopted.get(weak[1]) ?? 0) + 1);
  }
  if (deopted.size === 0) console.log('no function deoptimized for dead maps after the first collection');
  for (const [name, times] of deopted)
    console.log(`deoptimized for dead maps: ${name} (${times} of the later collections)`);
  process.exit(0);
}

const { serialize, Long } = await import('bson');
const load = (path) => import(new URL(`../dist/${path}`, import.meta.url).href);
const { decodeCommand } = await load('server/command-view.js');
const { forwardFrame } = await load('server/frames.js');
const { route } = await load('server/route.js');
const { encodeOpMsg } = await load('wire/op-msg.js');
const { scanReply } = await load('wire/reply-scan.js');
const { hideTenantField } = await load('rewrite/tenant-field.js');
const { makeDoc } = await import('./lib/workloads.mjs');

const state = await tenantRouteState(load, 'bench');
const docs = Array.from({ length: 1_000 }, (_, i) => makeDoc(i));
const insert = encodeOpMsg({
  requestId: 7,
  responseTo: 0,
  body: serialize({ insert: 'c', documents: docs, ordered: true, $db: 'app' }),
});
const replyBody = serialize({ cursor: { nextBatch: docs, id: Long.fromNumber(42), ns: 'app.c' }, ok: 1 });
const reply = encodeOpMsg({ requestId: 9, responseTo: 7, body: replyBody });

function once() {
  const frame = Buffer.from(insert); // a fresh frame, as read off a socket
  const command = decodeCommand(frame, { maxBsonDepth: 200 });
  const next = route(command, state);
  forwardFrame(frame, command.msg, next.plan.rewrite);
  scanReply(Buffer.from(reply)).isOk();
  hideTenantField(replyBody, 'tenantId', { in: 'cursor' });
}

const rounds = Number(process.env.BENCH_GC_ROUNDS ?? 6);
for (let round = 0; round < rounds; round++) {
  const started = process.cpuUsage();
  for (let i = 0; i < 100; i++) once();
  const used = process.cpuUsage(started);
  console.log(`ROUND ${round} ${Math.round((used.user + used.system) / 100)} µs CPU per insert and reply`);
  globalThis.gc();
}
