/**
 * Noisy neighbours (issue 15), connections: one tenant opening more connections than the proxy's
 * global limit and churning new ones, and clients that connect and never authenticate (a listener
 * with no identity method). With the default per-tenant and pre-authentication caps, the bystander
 * can still open new connections. The global limit is lowered so the flood stays cheap; every
 * other limit is the product's default. Harness and goals: ./harness.ts.
 */
import { afterAll, beforeAll, describe, it } from 'vitest';
import { opMsg, type RawClient } from '../helpers/raw-client.js';
import { startFerretDB, type FerretDBInstance } from '../helpers/upstream.js';
import { sleep } from '../helpers/wait.js';
import {
  BYSTANDER,
  goalsMet,
  NOISY,
  replyCode,
  runAbuse,
  size,
  Tally,
  TIMING,
  type AbuseContext,
  prepare,
  PREPARE_TIMEOUT_MS,
} from './harness.js';

const MAX_CONNECTIONS = size(300, 2_000);
const PRE_AUTH = 'preauth';

let upstream: FerretDBInstance;
beforeAll(async () => {
  [upstream] = await Promise.all([startFerretDB(), prepare()]);
}, PREPARE_TIMEOUT_MS);
afterAll(async () => {
  await upstream?.stop();
});

/** Opens `count` connections to `listener`, each sending a hello; returns those still open. */
async function holdConnections(ctx: AbuseContext, count: number, listener: string): Promise<RawClient[]> {
  const clients = await ctx.rawMany(count, listener);
  for (const client of clients) client.write(opMsg({ hello: 1, $db: 'admin' }).bytes);
  await sleep(500);
  return clients.filter((client) => !client.closed);
}

describe('noisy neighbours: connections', () => {
  it(
    'a tenant holding more connections than the global limit and churning new ones: the bystander still connects',
    async ({ task }) => {
      const churn = new Tally();
      const row = await runAbuse(task.meta, {
        abuse: 'connection flood',
        upstreamUri: upstream.uri,
        overrides: { limits: { maxConnections: MAX_CONNECTIONS } },
        newConnections: true,
        async run(ctx) {
          const held = await holdConnections(ctx, MAX_CONNECTIONS + 50, NOISY);
          ctx.notes['heldOpen'] = held.length;
          const churner = async (): Promise<void> => {
            while (Date.now() < ctx.until) {
              const client = await ctx.raw().catch(() => undefined);
              if (client === undefined) {
                churn.add('connect-failed');
                await sleep(50);
                continue;
              }
              client.write(opMsg({ ping: 1, $db: 'admin' }).bytes);
              churn.add(await replyCode(client, 5_000));
              client.close();
            }
          };
          await Promise.all(Array.from({ length: 8 }, churner));
          ctx.notes['heldStillOpen'] = held.filter((client) => !client.closed).length;
          ctx.notes['churn'] = churn.toString();
        },
      });
      goalsMet(row);
    },
    TIMING.testTimeoutMS,
  );

  it(
    'connections that never authenticate, more than the global limit: the bystander still connects',
    async ({ task }) => {
      const row = await runAbuse(task.meta, {
        abuse: 'pre-auth connections',
        upstreamUri: upstream.uri,
        listeners: [
          { name: NOISY, tenant: NOISY },
          { name: BYSTANDER, tenant: BYSTANDER },
          { name: PRE_AUTH, tenant: null },
        ],
        overrides: { limits: { maxConnections: MAX_CONNECTIONS } },
        newConnections: true,
        async run(ctx) {
          const held = await holdConnections(ctx, MAX_CONNECTIONS + 50, PRE_AUTH);
          ctx.notes['accepted'] = held.length;
          // Keeps taking every slot that frees up, as a flood would.
          let refills = 0;
          while (Date.now() < ctx.until) {
            const more = await holdConnections(ctx, 20, PRE_AUTH);
            held.push(...more);
            refills += more.length;
          }
          ctx.notes['refills'] = refills;
          ctx.notes['stillOpenAtEnd'] = held.filter((client) => !client.closed).length;
        },
      });
      goalsMet(row);
    },
    TIMING.testTimeoutMS,
  );
});
