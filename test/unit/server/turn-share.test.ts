/**
 * Turns of the event loop shared between tenants (src/server/turn-share.ts, issue 15
 * "connection flood"): under the turn's share nothing waits; past it requests queue per tenant
 * and are served round-robin, at most a turn's work at a time, each tenant's in its own order,
 * every one eventually (work-conserving).
 */
import { describe, expect, it } from 'vitest';
import { TurnShare } from '../../../src/server/turn-share.js';

/** A share with a fake clock and turns run by hand. */
function manual(turnMS = 4): {
  share: TurnShare;
  clock: { ms: number };
  endTurn: () => Promise<boolean>;
} {
  const clock = { ms: 0 };
  const ends: Array<() => void> = [];
  const share = new TurnShare({ turnMS, now: () => clock.ms, defer: (run) => void ends.push(run) });
  return {
    share,
    clock,
    /** Runs the end of the turn if one is scheduled, and what it lets run; false when none was. */
    async endTurn() {
      const run = ends.shift();
      if (run === undefined) return false;
      run();
      for (let i = 0; i < 100; i++) await Promise.resolve();
      return true;
    },
  };
}

/** A request of `account` that waits if it must, then costs `ms` of work. */
async function request(
  { share, clock }: { share: TurnShare; clock: { ms: number } },
  account: string,
  ms: number,
  ran: string[],
  name: string,
): Promise<void> {
  if (!share.mayRunNow) await share.wait(account);
  const started = share.now();
  clock.ms += ms;
  ran.push(name);
  share.note(share.now() - started);
}

describe('TurnShare', () => {
  it('lets requests run at once while the turn has work left and no one waits', async () => {
    const m = manual(4);
    const ran: string[] = [];
    for (let i = 0; i < 3; i++) await request(m, 'a', 1, ran, `a${i}`);
    expect(ran).toEqual(['a0', 'a1', 'a2']);
    expect(m.share.mayRunNow).toBe(true);
    await request(m, 'a', 1, ran, 'a3');
    // 4 ms spent: the next waits for the end of the turn, which gives the turn back.
    expect(m.share.mayRunNow).toBe(false);
    expect(await m.endTurn()).toBe(true);
    expect(m.share.mayRunNow).toBe(true);
    expect(m.share.queued).toBe(0);
  });

  it("serves waiting tenants round-robin: a bystander's request waits for one of the flood's, not all", async () => {
    const m = manual(4);
    const ran: string[] = [];
    const pending: Array<Promise<void>> = [];
    // The flood spends the turn, then queues 100 more; the bystander's request arrives after them.
    for (let i = 0; i < 104; i++) pending.push(request(m, 'noisy', 1, ran, `n${i}`));
    pending.push(request(m, 'bystander', 1, ran, 'b'));
    expect(ran).toHaveLength(4);
    expect(m.share.waiting).toBe(101);
    await m.endTurn();
    // One turn: at most 4 ms of work, the bystander's second.
    expect(ran.slice(4)).toEqual(['n4', 'b', 'n5', 'n6']);
    while (await m.endTurn());
    await Promise.all(pending);
    // Every request ran, each tenant's in its own order.
    expect(ran.filter((name) => name.startsWith('n'))).toEqual(Array.from({ length: 104 }, (_, i) => `n${i}`));
    expect(m.share.waiting).toBe(0);
    expect(m.share.queued).toBe(101);
    expect(m.share.mayRunNow).toBe(true);
  });

  it('serves at least one request per turn, whatever it costs (a zero share queues every request)', async () => {
    const m = manual(0);
    const ran: string[] = [];
    const pending = [request(m, 'a', 10, ran, 'a0'), request(m, 'a', 10, ran, 'a1'), request(m, 'b', 10, ran, 'b0')];
    expect(ran).toEqual([]);
    await m.endTurn();
    expect(ran).toEqual(['a0']);
    await m.endTurn();
    expect(ran).toEqual(['a0', 'b0']);
    while (await m.endTurn());
    await Promise.all(pending);
    expect(ran).toEqual(['a0', 'b0', 'a1']);
  });

  it('a request arriving while others wait queues behind them in its own tenant', async () => {
    const m = manual(2);
    const ran: string[] = [];
    const pending = [request(m, 'a', 2, ran, 'a0'), request(m, 'a', 1, ran, 'a1')];
    expect(ran).toEqual(['a0']);
    await m.endTurn();
    // The turn is fresh but a1 was served at the end of the last: a new arrival runs now only if no one waits.
    expect(ran).toEqual(['a0', 'a1']);
    pending.push(request(m, 'b', 1, ran, 'b0'));
    expect(ran).toEqual(['a0', 'a1', 'b0']);
    await Promise.all(pending);
  });
});
