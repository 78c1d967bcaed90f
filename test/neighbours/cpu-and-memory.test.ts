/**
 * Noisy neighbours (issue 15), CPU and memory: 8-12 connections flooding ~14.5 MB finds that are
 * refused for their `$where` (never forwarded, so only a budget counting refused requests and bytes
 * can slow them; abuse 4), and three ~48 MB inserts whose buffers must be given back (abuse 5).
 * Harness and goals: ./harness.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { opMsg, type RawClient } from '../helpers/raw-client.js';
import { startFerretDB, type FerretDBInstance } from '../helpers/upstream.js';
import { sleep } from '../helpers/wait.js';
import {
  DB,
  goalsMet,
  MiB,
  replyCode,
  runAbuse,
  sendShared,
  size,
  Tally,
  TIMING,
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

describe('noisy neighbours: CPU and memory', () => {
  it(
    '8-12 connections flooding ~14.5 MB finds refused for $where: the bystander is unaffected',
    async ({ task }) => {
      const connections = size(8, 12);
      // Many small array elements make the proxy walk the whole message before it finds `$where` last.
      const tags = Array.from({ length: 690_000 }, (_, n) => `t${n.toString(36).padStart(7, '0')}`);
      const frame = opMsg({ find: 'flood', filter: { tags: { $in: tags }, $where: 'true' }, $db: DB }).bytes;
      const outcomes = new Tally();
      let sent = 0;
      const row = await runAbuse(task.meta, {
        abuse: '4 CPU flood of refused $where',
        upstreamUri: upstream.uri,
        async run(ctx) {
          const flood = async (): Promise<void> => {
            let client: RawClient | undefined;
            while (Date.now() < ctx.until) {
              if (client === undefined || client.closed) {
                client = await ctx.raw().catch(() => undefined);
                if (client === undefined) {
                  await sleep(100);
                  continue;
                }
              }
              sendShared(client, frame);
              sent++;
              outcomes.add(await replyCode(client, Math.max(1, ctx.until - Date.now() + 5_000)));
            }
          };
          await Promise.all(Array.from({ length: connections }, flood));
          ctx.notes['connections'] = connections;
          ctx.notes['frameMiB'] = Math.round((frame.length / MiB) * 10) / 10;
          ctx.notes['sent'] = sent;
          ctx.notes['replies'] = outcomes.toString();
        },
      });
      goalsMet(row);
      expect(outcomes.counts['0'] ?? 0, 'no $where find was answered ok').toBe(0);
    },
    TIMING.testTimeoutMS,
  );

  it(
    '~48 MB inserts (three; one in the small profile): memory returns to within 20% of the baseline and the bystander is unaffected',
    async ({ task }) => {
      const inserts = size(1, 3);
      const docs = 470;
      const pad = 'm'.repeat(100_000);
      const outcomes = new Tally();
      const row = await runAbuse(task.meta, {
        abuse: '5 ~48 MB inserts',
        upstreamUri: upstream.uri,
        async run(ctx) {
          const client = await ctx.raw();
          for (let i = 0; i < inserts; i++) {
            const frame = opMsg(
              { insert: 'big', ordered: true, $db: DB },
              {
                sequences: [
                  { id: 'documents', docs: Array.from({ length: docs }, (_, n) => ({ _id: `${i}-${n}`, pad })) },
                ],
              },
            ).bytes;
            ctx.notes['insertMiB'] = Math.round((frame.length / MiB) * 10) / 10;
            sendShared(client, frame);
            outcomes.add(await replyCode(client, 120_000));
          }
          ctx.notes['inserts'] = inserts;
          ctx.notes['replies'] = outcomes.toString();
        },
      });
      goalsMet(row);
    },
    TIMING.testTimeoutMS,
  );
});
