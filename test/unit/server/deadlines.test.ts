/**
 * The shared deadline lists (src/server/deadlines.ts): order, disarming, re-arming, never early.
 * Waits for deadlines to fire; asserts what fired, never how long it took.
 */
import { describe, expect, it } from 'vitest';
import { Deadline, type DeadlineOwner } from '../../../src/server/deadlines.js';

class Recorder {
  readonly fired: Array<{ name: string; kind: number; early: boolean }> = [];
  constructor(private readonly onFired?: () => void) {}

  owner(
    name: string,
    durationMS: number,
  ): { deadline: Deadline; armedAt: () => number; rearm: (kind: number) => void } {
    let armedAt = 0;
    const owner: DeadlineOwner = {
      deadlineExpired: (kind: number): void => {
        this.fired.push({ name, kind, early: performance.now() < armedAt + durationMS });
        this.onFired?.();
      },
    };
    const deadline = new Deadline(owner);
    return {
      deadline,
      armedAt: () => armedAt,
      rearm: (kind) => {
        armedAt = performance.now();
        deadline.arm(durationMS, kind);
      },
    };
  }
}

describe('Deadline', () => {
  it('fires armed deadlines in order, never early, and never a disarmed or replaced one', async () => {
    let resolve!: () => void;
    const done = new Promise<void>((r) => (resolve = r));
    const recorder = new Recorder(() => {
      if (recorder.fired.length === 3) resolve();
    });
    const a = recorder.owner('a', 30);
    const b = recorder.owner('b', 30);
    const c = recorder.owner('c', 30);
    const d = recorder.owner('d', 10);
    a.rearm(1);
    b.rearm(1);
    c.rearm(1);
    d.rearm(1);
    b.deadline.disarm();
    // Re-armed for another kind: only the new one counts, from the tail of its list.
    a.rearm(2);
    expect(a.deadline.isArmed(2)).toBe(true);
    expect(a.deadline.isArmed(1)).toBe(false);
    expect(b.deadline.isArmed(1)).toBe(false);
    await done;
    expect(recorder.fired.map(({ name, kind }) => `${name}${kind}`)).toEqual(['d1', 'c1', 'a2']);
    expect(recorder.fired.some((fired) => fired.early)).toBe(false);
    expect(a.deadline.isArmed(2)).toBe(false);
  });

  it('lets an owner re-arm from its own expiry', async () => {
    let count = 0;
    let resolve!: () => void;
    const done = new Promise<void>((r) => (resolve = r));
    const deadline: Deadline = new Deadline({
      deadlineExpired(kind: number): void {
        count += 1;
        if (count < 3) deadline.arm(5, kind + 1);
        else resolve();
      },
    });
    deadline.arm(5, 1);
    await done;
    expect(count).toBe(3);
    expect(deadline.kind).toBe(3);
  });
});
