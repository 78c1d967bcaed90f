/**
 * Turns of the event loop shared between tenants (src/server/turn-share.ts, issue 15
 * "connection flood"): under its share of the turn a tenant never waits; past it its requests
 * queue and are served round-robin with other tenants' queued ones, at most a turn's work at a
 * time, each tenant's in its own order, every one eventually (work-conserving).
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
  if (!share.mayRunNow(account)) await share.wait(account);
  const started = share.now();
  clock.ms += ms;
  ran.push(name);
  share.note(account, share.now() - started);
}

describe('TurnShare', () => {
  it("lets a tenant's requests run at once while it has work left in the turn and none of its own waits", async () => {
    const m = manual(4);
    const ran: string[] = [];
    for (let i = 0; i < 3; i++) await request(m, 'a', 1, ran, `a${i}`);
    expect(ran).toEqual(['a0', 'a1', 'a2']);
    expect(m.share.mayRunNow('a')).toBe(true);
    await request(m, 'a', 1, ran, 'a3');
    // 4 ms spent: a's next waits for the end of the turn, which gives the turn back; b is not held.
    expect(m.share.mayRunNow('a')).toBe(false);
    expect(m.share.mayRunNow('b')).toBe(true);
    expect(await m.endTurn()).toBe(true);
    expect(m.share.mayRunNow('a')).toBe(true);
    expect(m.share.queued).toBe(0);
  });

  it("a flooding tenant's requests past its share wait; a bystander's run at once, never behind them", async () => {
    const m = manual(4);
    const ran: string[] = [];
    const pending: Array<Promise<void>> = [];
    // The flood spends its share of the turn, then queues 100 more; the bystander's request arrives after them.
    for (let i = 0; i < 104; i++) pending.push(request(m, 'noisy', 1, ran, `n${i}`));
    pending.push(request(m, 'bystander', 1, ran, 'b'));
    expect(ran).toEqual(['n0', 'n1', 'n2', 'n3', 'b']);
    expect(m.share.waiting).toBe(100);
    await m.endTurn();
    // One turn: at most 4 ms of the queued work.
    expect(ran.slice(5)).toEqual(['n4', 'n5', 'n6', 'n7']);
    while (await m.endTurn());
    await Promise.all(pending);
    // Every request ran, in its tenant's order.
    expect(ran.filter((name) => name.startsWith('n'))).toEqual(Array.from({ length: 104 }, (_, i) => `n${i}`));
    expect(m.share.waiting).toBe(0);
    expect(m.share.queued).toBe(100);
    expect(m.share.mayRunNow('noisy')).toBe(true);
  });

  it('serves the queues of two tenants over their share round-robin', async () => {
    const m = manual(2);
    const ran: string[] = [];
    const pending: Array<Promise<void>> = [];
    for (let i = 0; i < 6; i++) pending.push(request(m, 'a', 1, ran, `a${i}`));
    for (let i = 0; i < 6; i++) pending.push(request(m, 'b', 1, ran, `b${i}`));
    expect(ran).toEqual(['a0', 'a1', 'b0', 'b1']);
    await m.endTurn();
    expect(ran.slice(4)).toEqual(['a2', 'b2']);
    while (await m.endTurn());
    await Promise.all(pending);
    expect(ran.slice(6)).toEqual(['a3', 'b3', 'a4', 'b4', 'a5', 'b5']);
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

  it("a tenant's request arriving while its others wait queues behind them, even in a fresh turn", async () => {
    const m = manual(2);
    const ran: string[] = [];
    const pending = [request(m, 'a', 2, ran, 'a0'), request(m, 'a', 1, ran, 'a1'), request(m, 'a', 1, ran, 'a2')];
    expect(ran).toEqual(['a0']);
    // A new turn has begun for the counts, but a1 and a2 still wait: a3 goes behind them.
    m.share.note('other', 0);
    pending.push(request(m, 'a', 1, ran, 'a3'));
    expect(ran).toEqual(['a0']);
    while (await m.endTurn());
    await Promise.all(pending);
    expect(ran).toEqual(['a0', 'a1', 'a2', 'a3']);
  });
});
