/**
 * In-process measurement of the proxy's reply path for one cursor batch (issue 16): best of N,
 * CPU time, steadier than the interleaved bench on a shared machine. Runs against `dist/`
 * (`npm run build` first).
 *
 * The batch: a getMore reply of BENCH_REPLY_DOCS (1,000) of the bench's documents
 * (bench/lib/workloads.mjs makeDoc: `tenantId` stamped, string `_id`), as FerretDB sends it.
 * One iteration is what the proxy does from a reply frame read off the upstream socket to the
 * frame handed to the client socket: the copy the frame decoder makes, the forwarding layer's
 * reads of the reply (cursor home, retryable error), the engine's reply plan (cursor ownership,
 * tenant field hidden, names, error scrubbing), the header rewrite and the ok check.
 *
 *   node bench/reply-path.mjs            # BENCH_REPLY_ROUNDS (30) rounds of BENCH_REPLY_ITERATIONS (50)
 */
import { existsSync } from 'node:fs';
import { Long, serialize } from 'bson';
import { makeDoc, seededId } from './lib/workloads.mjs';

const dist = new URL('../dist/', import.meta.url);
const load = (path) => import(new URL(path, dist).href);

const docs = Number(process.env.BENCH_REPLY_DOCS ?? 1000);
const rounds = Number(process.env.BENCH_REPLY_ROUNDS ?? 30);
const iterations = Number(process.env.BENCH_REPLY_ITERATIONS ?? 50);

const { configFromObject } = await load('config/index.js');
const { CursorRegistry } = await load('policy/cursors.js');
const { IsolationEngine, commandInput } = await load('rewrite/engine.js');
const { replyAfterPlan } = await load('server/frames.js');
const { CursorHomes } = await load('upstream/pins.js');
const { commandTraits } = await load('upstream/command-traits.js');
const { encodeOpMsg } = await load('wire/op-msg.js');
const { setRequestId, setResponseTo } = await load('wire/header.js');

// The forwarding layer's reads of a reply (execute.ts: cursor home, retryable error) and the
// client connection's ok check: one scan where the build has it (src/wire/reply-scan.ts), else
// the separate walks of main before it.
const { replyIsOk } = await load('protocol/command.js');
const single = existsSync(new URL('wire/reply-scan.js', dist));
const { upstreamReads, okAfter } = single ? await singleScan() : await separateWalks();

async function singleScan() {
  const { scanReply } = await load('wire/reply-scan.js');
  return {
    upstreamReads: (traits, reply, homes, connection) => {
      homes.observe(traits, reply, connection);
      return scanReply(reply).error;
    },
    // client-connection.ts relayReply: the upstream reply's scan.
    okAfter: (upstreamReply) => replyIsOk(upstreamReply),
  };
}

async function separateWalks() {
  const { replyBody } = await load('protocol/command.js');
  const scan = await load('wire/bson-scan.js');
  // execute.ts's replyError before the scan (not exported), verbatim.
  const replyError = (reply) => {
    const body = replyBody(reply);
    if (body === undefined) return undefined;
    try {
      const ok = scan.findElement(body, 'ok');
      let code;
      if (ok !== null && scan.readNumber(body, ok) !== 1) {
        const codeElement = scan.findElement(body, 'code');
        code = codeElement === null ? undefined : scan.readNumber(body, codeElement);
      } else {
        const wce = scan.findElement(body, 'writeConcernError');
        if (wce === null || wce.type !== scan.BsonType.document) return undefined;
        const doc = scan.subDocument(body, wce);
        const codeElement = scan.findElement(doc, 'code');
        code = codeElement === null ? undefined : scan.readNumber(doc, codeElement);
      }
      const labels = [];
      const labelsElement = scan.findElement(body, 'errorLabels');
      if (labelsElement !== null && labelsElement.type === scan.BsonType.array) {
        const array = scan.subDocument(body, labelsElement);
        for (const item of scan.elements(array))
          if (item.type === scan.BsonType.string) labels.push(scan.readString(array, item));
      }
      return { ...(code === undefined ? {} : { code }), labels, network: false };
    } catch {
      return undefined;
    }
  };
  return {
    upstreamReads: (traits, reply, homes, connection) => {
      homes.observe(traits, reply, connection);
      return replyError(reply);
    },
    // client-connection.ts relayReply before: the reply after the plan, walked again.
    okAfter: (_upstreamReply, out) => replyIsOk(out),
  };
}

const cursors = new CursorRegistry();
const engine = new IsolationEngine({
  config: configFromObject({}).isolation,
  cursors,
  sessionKey: Buffer.alloc(32, 1),
  collationSupported: () => true,
});
const tenant = engine.forTenant('bench');
const id = 4242n;
const forward = (decision) => {
  if (decision.action !== 'forward') throw new Error(`expected forward, got ${decision.action}`);
  return decision.result;
};
// Open the cursor as the proxy would, then plan its getMore.
const find = forward(
  tenant.decide(commandInput('find', 'bench', serialize({ find: 'cursor', $db: 'bench' }), [], false)),
);
const ns = `bench.cursor`;
tenant.reply(find.reply, serialize({ cursor: { firstBatch: [], id: Long.fromBigInt(id), ns }, ok: 1 }));
const getMoreBody = serialize({ getMore: Long.fromBigInt(id), collection: 'cursor', $db: 'bench' });
const getMore = forward(tenant.decide(commandInput('getMore', 'bench', getMoreBody, [], false)));
const traits = commandTraits(getMoreBody);
if (getMore.reply.hideTenantField === undefined) throw new Error('the getMore plan does not hide the tenant field');

const batch = Array.from({ length: docs }, (_, i) => ({ _id: seededId(i), ...makeDoc(i) }));
const recorded = encodeOpMsg({
  requestId: 7,
  responseTo: 3,
  body: serialize({ cursor: { nextBatch: batch, id: Long.fromBigInt(id), ns }, ok: 1 }),
});

const connection = { once() {} };
const homes = new CursorHomes();

function one() {
  // The frame decoder's copy of the reply into a buffer of its own.
  const reply = Buffer.allocUnsafe(recorded.length);
  recorded.copy(reply);
  upstreamReads(traits, reply, homes, connection);
  const out = replyAfterPlan(tenant, getMore.reply, reply);
  setRequestId(out, 9);
  setResponseTo(out, 3);
  return okAfter(reply, out);
}

// The output is checked once: every document without its tenant field.
{
  const reply = Buffer.from(recorded);
  upstreamReads(traits, reply, homes, connection);
  const out = replyAfterPlan(tenant, getMore.reply, reply);
  const { deserialize } = await import('bson');
  const seen = deserialize(out.subarray(21)).cursor.nextBatch;
  if (seen.length !== docs || seen.some((doc) => 'tenantId' in doc)) throw new Error('tenant field not hidden');
}

let best = Infinity;
const all = [];
for (let round = 0; round < rounds; round++) {
  const start = process.cpuUsage();
  for (let i = 0; i < iterations; i++) if (!one()) throw new Error('reply not ok');
  const used = process.cpuUsage(start);
  const perBatch = (used.user + used.system) / iterations;
  all.push(perBatch);
  best = Math.min(best, perBatch);
}
all.sort((a, b) => a - b);
console.log(
  `reply path, ${docs}-doc getMore batch (${(recorded.length / 1024).toFixed(0)} KiB), ${single ? 'single scan' : 'separate walks'}: ` +
    `best ${best.toFixed(1)} µs, median ${all[all.length >> 1].toFixed(1)} µs (${rounds} × ${iterations})`,
);
