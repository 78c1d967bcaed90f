/**
 * Noisy neighbours (issue 15), open cursors (abuse 3): one tenant opens 100+ cursors with batchSize
 * 1 and holds them (FerretDB v1 keeps an upstream connection per open cursor), then leaves without
 * closing them. The bystander keeps working, and the cursors of the client that left are closed
 * upstream at once, not after the idle timeout. Harness and goals: ./harness.ts.
 */
import type { Document } from 'bson';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sumSamples } from '../helpers/metrics.js';
import { opMsg } from '../helpers/raw-client.js';
import { startFerretDB, type FerretDBInstance } from '../helpers/upstream.js';
import { sleep } from '../helpers/wait.js';
import {
  DB,
  goalsMet,
  replyCode,
  runAbuse,
  sendShared,
  size,
  Tally,
  TIMING,
  waitForMetric,
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

describe('noisy neighbours: open cursors', () => {
  it(
    '100+ cursors with batchSize 1 held open, then the client leaves: the bystander is unaffected and the cursors are closed',
    async ({ task }) => {
      const cursors = size(110, 200);
      const openers = 4;
      const outcomes = new Tally();
      const frame = opMsg({ find: 'many', filter: {}, batchSize: 1, $db: DB }).bytes;
      const row = await runAbuse(task.meta, {
        abuse: '3 open cursors, client leaves',
        upstreamUri: upstream.uri,
        async setup(ctx) {
          const client = ctx.noisyClient();
          const many = client.db(DB).collection<Document>('many');
          await many.deleteMany({});
          await many.insertMany(Array.from({ length: 10 }, (_, n) => ({ _id: n as never })));
          await client.close();
        },
        async run(ctx) {
          const clients = await ctx.rawMany(openers);
          let opened = 0;
          await Promise.all(
            clients.map(async (client) => {
              for (let i = 0; i < cursors / openers && Date.now() < ctx.until; i++) {
                sendShared(client, frame);
                const code = await replyCode(client, Math.max(1, ctx.until - Date.now()));
                outcomes.add(code);
                if (code === 0) opened++;
                if (code === 'closed') return;
              }
            }),
          );
          ctx.notes['cursorsAsked'] = cursors;
          ctx.notes['opened'] = opened;
          ctx.notes['outcomes'] = outcomes.toString();
          ctx.notes['openCursorsBeforeLeaving'] = await metric(ctx.proxy.metricsText(), 'open_cursors');
          while (Date.now() < ctx.until) await sleep(100);
          // The harness now destroys the noisy sockets: a client leaving with its cursors open.
        },
        async after(ctx) {
          const released = await waitForMetric(
            ctx.proxy,
            'open_cursors',
            (open) => open <= TIMING.bystanderWorkers,
            5_000,
          );
          ctx.notes['cursorsReleasedAfterMS'] = released < 0 ? 'not within 5 s' : released;
          ctx.notes['openCursorsAfterLeaving'] = await metric(ctx.proxy.metricsText(), 'open_cursors');
        },
      });
      goalsMet(row);
      expect(row.notes['cursorsReleasedAfterMS'], 'the cursors of the client that left closed within 5 s').not.toBe(
        'not within 5 s',
      );
    },
    TIMING.testTimeoutMS,
  );
});

const metric = async (text: Promise<string>, name: string): Promise<number> => sumSamples(await text, name);
