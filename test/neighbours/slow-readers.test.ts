/**
 * Noisy neighbours (issue 15), clients that do not read: many connections of one tenant sending big
 * finds and never reading the replies (abuse 2), huge replies nobody reads, and getMores of huge
 * batches read at a trickle. The proxy must not hold upstream connections or unbounded buffers for
 * them. Harness and goals: ./harness.ts.
 */
import { Long, type Document } from 'bson';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { opMsg, replyDocument, type RawClient } from '../helpers/raw-client.js';
import { startFerretDB, type FerretDBInstance } from '../helpers/upstream.js';
import { sleep } from '../helpers/wait.js';
import {
  DB,
  goalsMet,
  MiB,
  runAbuse,
  sendShared,
  size,
  Tally,
  TIMING,
  type AbuseContext,
  prepare,
  PREPARE_TIMEOUT_MS,
} from './harness.js';

let upstream: FerretDBInstance;
beforeAll(async () => {
  [upstream] = await Promise.all([startFerretDB(), prepare()]);
}, PREPARE_TIMEOUT_MS);
afterAll(async () => {
  await upstream?.stop();
});

/** `count` documents of `bytes` each in the noisy tenant's collection `name` (through the proxy). */
async function seedNoisy(ctx: AbuseContext, name: string, count: number, bytes: number): Promise<void> {
  const client = ctx.noisyClient();
  const collection = client.db(DB).collection<Document>(name);
  await collection.deleteMany({});
  const pad = 'y'.repeat(bytes);
  for (let n = 0; n < count; n += 8) {
    await collection.insertMany(
      Array.from({ length: Math.min(8, count - n) }, (_, i) => ({ _id: (n + i) as never, pad })),
    );
  }
  await client.close();
}

/** Stops reading: the kernel buffers fill, then the proxy's writes to this client block. */
function stopReading(client: RawClient): void {
  client.socket.pause();
}

describe('noisy neighbours: clients that do not read', () => {
  it(
    'many connections each sending three ~10 MB finds without reading: the bystander is unaffected',
    async ({ task }) => {
      const connections = size(20, 200);
      const frame = opMsg({ find: 'unread', filter: { pad: { $ne: 'z'.repeat(10 * MiB) } }, $db: DB }).bytes;
      const row = await runAbuse(task.meta, {
        abuse: '2 big finds, never read',
        upstreamUri: upstream.uri,
        setup: (ctx) => seedNoisy(ctx, 'unread', 4, 256 * 1024),
        async run(ctx) {
          const clients = await ctx.rawMany(connections);
          for (const client of clients) {
            stopReading(client);
            for (let i = 0; i < 3; i++) sendShared(client, frame);
          }
          while (Date.now() < ctx.until) await sleep(100);
          ctx.notes['connections'] = clients.length;
          ctx.notes['closedByProxy'] = clients.filter((client) => client.closed).length;
          ctx.notes['requestMiB'] = Math.round(frame.length / MiB);
        },
      });
      goalsMet(row);
    },
    TIMING.testTimeoutMS,
  );

  it(
    'connections each asking for a ~12 MB first batch and never reading it: the bystander is unaffected',
    async ({ task }) => {
      const connections = size(10, 100);
      const finds = size(1, 3);
      const frame = opMsg({ find: 'huge', filter: {}, batchSize: 1_000, $db: DB }).bytes;
      const row = await runAbuse(task.meta, {
        abuse: 'huge replies, never read',
        upstreamUri: upstream.uri,
        setup: (ctx) => seedNoisy(ctx, 'huge', 24, 512 * 1024),
        async run(ctx) {
          const clients = await ctx.rawMany(connections);
          for (const client of clients) {
            stopReading(client);
            for (let i = 0; i < finds; i++) sendShared(client, frame);
          }
          while (Date.now() < ctx.until) await sleep(100);
          ctx.notes['connections'] = clients.length;
          ctx.notes['findsEach'] = finds;
          ctx.notes['closedByProxy'] = clients.filter((client) => client.closed).length;
        },
      });
      goalsMet(row);
    },
    TIMING.testTimeoutMS,
  );

  it(
    'cursors whose ~12 MB getMore batches are read at a trickle: the bystander is unaffected',
    async ({ task }) => {
      const cursors = size(10, 50);
      const outcomes = new Tally();
      const row = await runAbuse(task.meta, {
        abuse: 'slow getMores of huge batches',
        upstreamUri: upstream.uri,
        setup: (ctx) => seedNoisy(ctx, 'trickle', 24, 512 * 1024),
        async run(ctx) {
          const clients = await ctx.rawMany(cursors);
          const trickles = clients.map(async (client) => {
            const opened = await client.command(opMsg({ find: 'trickle', filter: {}, batchSize: 0, $db: DB }));
            const id = (opened['cursor'] as { id?: Long } | undefined)?.id;
            if (opened['ok'] !== 1 || id === undefined) return outcomes.add(`find:${String(opened['code'])}`);
            stopReading(client);
            client.write(
              opMsg({ getMore: Long.fromValue(id), collection: 'trickle', batchSize: 1_000, $db: DB }).bytes,
            );
            // A few milliseconds of reading every half second until the abuse ends.
            while (Date.now() < ctx.until && !client.closed) {
              await sleep(500);
              client.socket.resume();
              await sleep(5);
              client.socket.pause();
            }
            if (client.closed) return outcomes.add('closed');
            const frame = await client.readFrame(1).catch(() => null);
            outcomes.add(frame === null ? 'unfinished' : `getMore:${String(replyDocument(frame)['ok'])}`);
          });
          await Promise.all(trickles);
          ctx.notes['cursors'] = clients.length;
          ctx.notes['outcomes'] = outcomes.toString();
        },
      });
      goalsMet(row);
    },
    TIMING.testTimeoutMS,
  );
});
