/**
 * In-process measurement of the proxy's request path for one command (issue 16): best of N, CPU
 * time, steadier than the interleaved bench on a shared machine. Runs against `dist/` (`npm run
 * build` first; BENCH_DIST=<dir> for another build).
 *
 * One iteration is what the proxy does from a client's frame to the frame written upstream: the
 * command decoded once (decodeCommand), routed through the isolation engine (route: checks,
 * tenant predicate, namespace mapping, traits for the forwarding layer) and the forwarded frame
 * built (forwardFrame). Commands: a ping and an insertOne with a session id and cluster time (as
 * drivers send them), a findOne on `_id`, a find with a 1 MiB filter, an updateOne. Then the reply
 * side (BENCH_REQUEST_ONLY=reply): a ping's and a findOne's reply, read and passed through the plan.
 *
 *   node bench/request-path.mjs     # BENCH_REQUEST_ROUNDS (30) rounds of BENCH_REQUEST_ITERATIONS (2,000)
 *                                   # BENCH_REQUEST_ONLY=findOne: the commands whose name contains it
 */
import { Binary, Timestamp, serialize } from 'bson';
import { tenantRouteState } from './lib/route-state.mjs';

const dist = new URL(process.env.BENCH_DIST ? `file://${process.env.BENCH_DIST}/` : '../dist/', import.meta.url);
const load = (path) => import(new URL(path, dist).href);

const rounds = Number(process.env.BENCH_REQUEST_ROUNDS ?? 30);
const iterations = Number(process.env.BENCH_REQUEST_ITERATIONS ?? 2000);

const { decodeCommand } = await load('server/command-view.js');
const { forwardFrame } = await load('server/frames.js');
const { route } = await load('server/route.js');
const { encodeOpMsg } = await load('wire/op-msg.js');

const state = await tenantRouteState(load, 'acme');

const frameOf = (body) => encodeOpMsg({ requestId: 7, responseTo: 0, body: serialize(body) });
// What a driver adds to every command: a session id and (against a replica set) a cluster time.
const session = {
  lsid: { id: new Binary(Buffer.alloc(16, 7), Binary.SUBTYPE_UUID) },
  $clusterTime: {
    clusterTime: new Timestamp({ t: 1, i: 1 }),
    signature: { hash: new Binary(Buffer.alloc(20)), keyId: 0 },
  },
};
const commands = {
  'ping, session': frameOf({ ping: 1, ...session, $db: 'admin' }),
  'insertOne, session': frameOf({
    insert: 'orders',
    documents: [{ _id: 'o-1', n: 1 }],
    ordered: true,
    ...session,
    $db: 'app',
  }),
  'findOne _id': frameOf({ find: 'orders', filter: { _id: 'o-123' }, limit: 1, singleBatch: true, $db: 'app' }),
  'find, 1 MiB filter': frameOf({ find: 'orders', filter: { pad: { $ne: 'z'.repeat(1 << 20) } }, $db: 'app' }),
  updateOne: frameOf({ update: 'orders', updates: [{ q: { _id: 'o-1' }, u: { $set: { n: 1 } } }], $db: 'app' }),
};

function once(frame) {
  const command = decodeCommand(frame, { maxBsonDepth: 200 });
  const next = route(command, state);
  if (next.action !== 'forward') throw new Error(`unexpected ${next.action}`);
  return forwardFrame(frame, command.msg, next.plan.rewrite);
}

const only = process.env.BENCH_REQUEST_ONLY; // e.g. "findOne": the commands whose name contains it
for (const [name, frame] of Object.entries(commands)) {
  if (only !== undefined && !name.includes(only)) continue;
  const n = name.includes('MiB') ? Math.max(1, Math.floor(iterations / 100)) : iterations;
  for (let i = 0; i < n; i++) once(frame); // warm-up
  let best = Infinity;
  for (let round = 0; round < rounds; round++) {
    const started = process.cpuUsage();
    for (let i = 0; i < n; i++) once(frame);
    const used = process.cpuUsage(started);
    best = Math.min(best, (used.user + used.system) / n);
  }
  console.log(`${name.padEnd(20)} ${best.toFixed(2)} µs CPU per command (best of ${rounds} x ${n})`);
}

// The reply side of one command (BENCH_REQUEST_ONLY=reply for only this): what the proxy does with
// each upstream reply before writing it, from a fresh frame (as read off the socket): its facts
// read (cursor homes, retry decision, `ok`) and the engine's reply plan (replyAfterPlan). A build
// whose scanReply memoizes per frame (before issue 16's round 4) asks it once per consumer; a
// build that scans once hands the scan along.
if (only === undefined || only === 'reply') {
  const { scanReply } = await load('wire/reply-scan.js');
  const { replyAfterPlan } = await load('server/frames.js');
  const { CursorHomes } = await load('upstream/pins.js');
  const { EventEmitter } = await import('node:events');
  const { Long } = await import('bson');
  const memoized = (() => {
    const probe = frameOf({ ok: 1 });
    return scanReply(probe) === scanReply(probe);
  })();
  const homes = new CursorHomes();
  const connection = new EventEmitter();
  const replyOf = (body) => encodeOpMsg({ requestId: 9, responseTo: 7, body: serialize(body) });
  const routed = (frame) => route(decodeCommand(frame, { maxBsonDepth: 200 }), state).plan;
  const findRoute = { plan: routed(commands['findOne _id']) };
  const pingPlan = routed(commands['ping, session']);
  const replies = {
    'reply: ping': { frame: replyOf({ ok: 1 }), traits: pingPlan.traits, plan: pingPlan.reply },
    'reply: findOne': {
      frame: replyOf({
        cursor: { firstBatch: [{ _id: 'o-123', tenantId: 'acme', n: 1 }], id: Long.fromNumber(0), ns: 'app.orders' },
        ok: 1,
      }),
      traits: findRoute.plan.traits,
      plan: findRoute.plan.reply,
    },
  };
  const replyOnce = ({ frame, traits, plan }) => {
    const reply = Buffer.from(frame);
    if (memoized) {
      homes.observe(traits, reply, connection);
      void scanReply(reply).error; // execute's retry decision
      const out = plan === undefined ? reply : replyAfterPlan(state.engine, plan, reply);
      return scanReply(reply).isOk() && out;
    }
    const scan = scanReply(reply);
    homes.observe(traits, scan, connection);
    void scan.error;
    const out = plan === undefined ? reply : replyAfterPlan(state.engine, plan, reply, scan);
    return scan.isOk() && out;
  };
  for (const [name, reply] of Object.entries(replies)) {
    for (let i = 0; i < iterations; i++) replyOnce(reply); // warm-up
    let best = Infinity;
    for (let round = 0; round < rounds; round++) {
      const started = process.cpuUsage();
      for (let i = 0; i < iterations; i++) replyOnce(reply);
      const used = process.cpuUsage(started);
      best = Math.min(best, (used.user + used.system) / iterations);
    }
    console.log(`${name.padEnd(20)} ${best.toFixed(2)} µs CPU per reply (best of ${rounds} x ${iterations})`);
  }
}
