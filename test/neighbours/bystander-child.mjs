// The well-behaved tenant of a noisy-neighbour test in its own process (harness.ts, Bystander). Its
// latencies are the proxy's and the upstream's, not the test process's: there the abusers build
// 48 MB messages, open thousands of sockets and parse their replies on the event loop the
// bystander's driver would otherwise share, and every millisecond of that showed up as the proxy
// slowing the bystander down.
//
// `node bystander-child.mjs` with MTP_BYSTANDER = JSON {uri, db, collection, workers, newConnections}, over an
// IPC channel. Parent to child: {do: 'seed'}, {do: 'start'}, {do: 'stop'}. Child to parent:
// {seeded: true}, {sample: [at, ms]} per operation (end time, ms epoch; duration), {error: [at,
// message]} per failed operation, {readyz: [at, status, ms]} per poll of `readyzUrl` when given
// (0: no answer within 5 s), {stopped: true} once every loop ended and the client closed, then it
// exits. MTP_NEIGHBOURS_TRACE=<file> appends a line per operation there, as before.
import { appendFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { MongoClient } from 'mongodb';

const { uri, db, collection, workers, newConnections, readyzUrl } = JSON.parse(process.env.MTP_BYSTANDER ?? '{}');
const trace = process.env.MTP_NEIGHBOURS_TRACE;
const client = new MongoClient(uri, { serverSelectionTimeoutMS: 10_000, maxPoolSize: workers + 2 });
const items = client.db(db).collection(collection);
let running = false;
let loops = [];
let poller;

/** Every operation has a 30 s deadline (a hung proxy is an error, not a stuck test). */
function withDeadline(promise, ms) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`bystander operation: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

async function operation(worker, i) {
  switch (newConnections ? i % 4 : i % 3) {
    case 0: {
      const doc = await items.findOne({ _id: `b${i % 20}` });
      if (doc?.n !== i % 20) throw new Error(`bystander read the wrong document: ${JSON.stringify(doc?._id)}`);
      return;
    }
    case 1:
      await items.insertOne({ _id: `w${worker}-${i}-${Date.now()}`, kind: 'write' });
      return;
    case 2: {
      // A cursor with getMores (batches of 4 over 20 seeded documents).
      const docs = await items.find({ kind: 'seed' }, { batchSize: 4 }).toArray();
      if (docs.length !== 20) throw new Error(`bystander cursor returned ${docs.length} of 20 documents`);
      return;
    }
    default: {
      const fresh = new MongoClient(uri, { serverSelectionTimeoutMS: 10_000, maxPoolSize: 1 });
      try {
        await fresh.db(db).command({ ping: 1 });
      } finally {
        await fresh.close();
      }
    }
  }
}

/**
 * The proxy's `/readyz` every 250 ms while running, from here rather than from the test process,
 * whose event loop is busy writing the abusers' messages (a poll timed out there at 5 s while the
 * proxy's own event loop never stalled for more than a second).
 */
async function pollReadyz() {
  while (running) {
    const asked = Date.now();
    let status;
    try {
      status = (await fetch(readyzUrl, { signal: AbortSignal.timeout(5_000) })).status;
    } catch {
      status = 0; // no answer in time counts as not ready
    }
    process.send({ readyz: [asked, status, Date.now() - asked] });
    await sleep(250);
  }
}

async function loop(worker) {
  for (let i = 0; running; i++) {
    const started = Date.now();
    try {
      await withDeadline(operation(worker, i), 30_000);
      const at = Date.now();
      process.send({ sample: [at, at - started] });
      if (trace !== undefined)
        appendFileSync(trace, `${JSON.stringify({ t: at, bystander: at - started, op: i % 4 })}\n`);
    } catch (error) {
      process.send({ error: [Date.now(), error instanceof Error ? error.message : String(error)] });
      await sleep(50); // as an application backing off would
    }
  }
}

process.on('message', async (message) => {
  try {
    if (message.do === 'seed') {
      await items.deleteMany({});
      await items.insertMany(Array.from({ length: 20 }, (_, n) => ({ _id: `b${n}`, n, kind: 'seed' })));
      process.send({ seeded: true });
    } else if (message.do === 'start') {
      running = true;
      loops = Array.from({ length: workers }, (_, worker) => loop(worker));
      if (readyzUrl !== undefined) poller = pollReadyz();
    } else if (message.do === 'stop') {
      running = false;
      await Promise.all([...loops, poller]);
      await client.close();
      process.send({ stopped: true }, () => process.exit(0));
    }
  } catch (error) {
    process.send({ failed: error instanceof Error ? error.message : String(error) });
  }
});
// The parent gone (a killed test run): nothing left to measure for.
process.on('disconnect', () => process.exit(0));
