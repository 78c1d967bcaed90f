/**
 * Noisy neighbours (issue 15), the circuit breaker: a tenant's oversized insert must not open it
 * (abuse 1), and after an upstream restart it must close as soon as the server answers (abuse 6).
 * Harness and goals: ./harness.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { opMsg } from '../helpers/raw-client.js';
import { startRestartableFerretDB, type RestartableFerretDB } from '../helpers/upstream.js';
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
  P99_ASSERTED,
} from './harness.js';

/** FerretDB's (and MongoDB's) maxMessageSizeBytes. */
const MAX_MESSAGE = 48_000_000;
const BSON_OBJECT_TOO_LARGE = 10334;

let upstream: RestartableFerretDB;
beforeAll(async () => {
  [upstream] = await Promise.all([startRestartableFerretDB(), prepare()]);
}, PREPARE_TIMEOUT_MS);
afterAll(async () => {
  await upstream?.stop();
});

/**
 * An insert of exactly `bytes` bytes (just under the limit) in a document sequence of `docs`
 * documents: the proxy's tenant stamp (~19 bytes a document) pushes it past maxMessageSizeBytes.
 */
function insertOfSize(bytes: number, docs: number): Buffer {
  const build = (lastPad: number, pad: number): Buffer =>
    opMsg(
      { insert: 'oversized', ordered: true, $db: DB },
      {
        sequences: [
          {
            id: 'documents',
            docs: Array.from({ length: docs }, (_, n) => ({ _id: n, pad: 'x'.repeat(n === docs - 1 ? lastPad : pad) })),
          },
        ],
      },
    ).bytes;
  const pad = Math.floor(bytes / docs) - 40;
  const first = build(pad, pad);
  const frame = build(pad + bytes - first.length, pad);
  if (frame.length !== bytes) throw new Error(`built ${frame.length} bytes, not ${bytes}`);
  return frame;
}

describe('noisy neighbours: the circuit breaker', () => {
  it(
    'a repeated insert that the tenant stamp pushes past maxMessageSizeBytes is refused with 10334 and never opens the breaker',
    async ({ task }) => {
      // More than the breaker's failureThreshold: in the small profile the threshold is 2 (three
      // inserts, 144 MB, instead of six past the default 5: each is ~48 MB to receive, validate and
      // stamp, minutes on two loaded cores), at full size the default 5 and twenty inserts.
      const failureThreshold = size(2, 5);
      const repeats = size(3, 20);
      const frame = insertOfSize(MAX_MESSAGE - 30, 1_000);
      const codes = new Tally();
      const row = await runAbuse(task.meta, {
        abuse: '1 oversized insert after stamp',
        upstreamUri: upstream.uri,
        overrides: { upstream: { circuitBreaker: { failureThreshold } } },
        async run(ctx) {
          let client = await ctx.raw();
          for (let i = 0; i < repeats; i++) {
            if (client.closed) client = await ctx.raw();
            sendShared(client, frame);
            codes.add(await replyCode(client, 60_000));
          }
          ctx.notes['repeats'] = repeats;
          ctx.notes['failureThreshold'] = failureThreshold;
          ctx.notes['frameBytes'] = frame.length;
          ctx.notes['replies'] = codes.toString();
        },
      });
      goalsMet(row);
      expect(codes.counts, 'every oversized insert answered BSONObjectTooLarge').toEqual({
        [BSON_OBJECT_TOO_LARGE]: repeats,
      });
    },
    TIMING.testTimeoutMS,
  );

  it(
    'after the upstream restarts, the breaker closes and the bystander is served within 3 s of the server answering',
    async ({ task }) => {
      let restartedAt = 0;
      const row = await runAbuse(task.meta, {
        abuse: '6 upstream restart',
        upstreamUri: upstream.uri,
        async run(ctx) {
          const killedAt = Date.now();
          await upstream.kill();
          await sleep(2_000);
          await upstream.restart(); // resolves once FerretDB answers hello
          restartedAt = Date.now();
          const recovered = await waitForMetric(ctx.proxy, 'circuit_breaker_state', (state) => state === 0, 30_000);
          let readyAfter = -1;
          for (const started = Date.now(); Date.now() - started < 30_000; await sleep(50)) {
            if ((await ctx.proxy.readyz()) === 200) {
              readyAfter = Date.now() - restartedAt;
              break;
            }
          }
          const served = await (async () => {
            for (const started = Date.now(); Date.now() - started < 30_000; await sleep(50)) {
              const at = ctx.bystander.firstSuccessAfter(restartedAt);
              if (at !== undefined) return at - restartedAt;
            }
            return -1;
          })();
          // Errors while the server is down, and until it is back, are the outage's, not a neighbour's.
          ctx.excuse(killedAt, restartedAt + Math.max(served, 0));
          ctx.notes['outageMS'] = restartedAt - killedAt;
          ctx.notes['breakerClosedAfterMS'] = recovered < 0 ? 'never' : recovered;
          ctx.notes['readyzAfterMS'] = readyAfter;
          ctx.notes['bystanderServedAfterMS'] = served;
          // Let the bystander run a while on the recovered upstream: no errors allowed from here on.
          await sleep(TIMING.baselineMS);
        },
      });
      goalsMet(row, { upstreamWentAway: true });
      expect(
        row.notes['bystanderServedAfterMS'],
        'bystander served again (ms after the restart)',
      ).toBeGreaterThanOrEqual(0);
      expect(row.notes['readyzAfterMS'], '/readyz 200 again (ms after the restart)').toBeGreaterThanOrEqual(0);
      // How soon is a time goal, like the p99 ratio: asserted when the suite runs on its own,
      // reported inside npm test (two busy shared cores make any wall-clock bound a coin toss).
      if (P99_ASSERTED) {
        expect(
          row.notes['bystanderServedAfterMS'],
          'bystander served again (ms after the restart)',
        ).toBeLessThanOrEqual(3_000);
        expect(row.notes['readyzAfterMS'], '/readyz 200 again (ms after the restart)').toBeLessThanOrEqual(3_000);
      }
    },
    TIMING.testTimeoutMS,
  );
});
