/**
 * Validation of large requests in slices (src/server/validation-scheduler.ts, issue 15 "CPU
 * floods"): a message validated in slices, however small, is refused exactly as the whole check
 * refuses it (same error, same message) or parsed to the same result; slices are shared fairly
 * between tenants, and a cancelled message stops.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DocumentValidation, validateDocumentFacts } from '../../../src/wire/bson-scan.js';
import { opMsgValidations, parseOpMsgFacts, type ParseOpMsgOptions } from '../../../src/wire/op-msg.js';
import { ValidationScheduler } from '../../../src/server/validation-scheduler.js';
import { TenantLimits } from '../../../src/server/tenant-limits.js';
import type { CopyJob } from '../../../src/wire/copy-job.js';
import { bson, kind0, kind1, opMsg } from '../wire/fixtures.js';

/** What a call did: its result, or its error's class, code, message and fatality. */
function outcome(run: () => unknown): unknown {
  try {
    return { ok: run() };
  } catch (error) {
    const e = error as Error & { code?: number; fatal?: boolean; offset?: number };
    return { error: e.constructor.name, code: e.code, message: e.message, fatal: e.fatal, offset: e.offset };
  }
}

/** Runs the scheduler's turns synchronously (defer runs at once, later, in order). */
function manualScheduler(
  options: { turnBytes?: number; sliceBytes?: number; cpu?: TenantLimits; onPassedOver?: (n: number) => void } = {},
): {
  scheduler: ValidationScheduler;
  turns: () => number;
  runAll: () => Promise<void>;
} {
  const queue: Array<() => void> = [];
  let turns = 0;
  const scheduler = new ValidationScheduler({ ...options, defer: (run) => void queue.push(run) });
  return {
    scheduler,
    turns: () => turns,
    async runAll() {
      for (let run = queue.shift(); run !== undefined; run = queue.shift()) {
        turns++;
        run();
        await Promise.resolve();
      }
    },
  };
}

const opts: ParseOpMsgOptions = { maxBsonDepth: 5 };

const validMessages = [
  opMsg(0, [kind0(bson({ ping: 1, $db: 'admin' }))]),
  opMsg(0, [
    kind0(bson({ find: 'c', filter: { tags: { $in: Array.from({ length: 300 }, (_, n) => `t${n}`) } }, $db: 'd' })),
  ]),
  opMsg(2, [
    kind0(bson({ insert: 'c', $db: 'd' })),
    kind1('documents', [bson({ a: 1 }), bson({ b: [1, { c: 'x', d: { $x: 1 } }] }), bson({ e: 'é', f: null })]),
  ]),
  opMsg(0, [kind1('updates', [bson({ q: {}, u: { $set: { a: 1 } } })]), kind0(bson({ update: 'c', $db: 'd' }))]),
];

/** A valid message with random byte edits (the header's length kept right), as the wire fuzz test makes them. */
const mutatedMessage = fc
  .tuple(
    fc.constantFrom(...validMessages),
    fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
  )
  .map(([base, edits]) => {
    const bytes = Buffer.from(base);
    for (const [at, value] of edits) bytes[16 + (at % (bytes.length - 16))] = value;
    return bytes;
  });

/** parseOpMsgFacts with the message first validated in slices of `slice` bytes by the scheduler. */
async function slicedParse(frame: Buffer, slice: number): Promise<unknown> {
  const { scheduler, runAll } = manualScheduler({ sliceBytes: slice, turnBytes: slice * 2 });
  const validating = scheduler.validate('t', frame, opts);
  await runAll();
  const prevalidated = await validating;
  return outcome(() => parseOpMsgFacts(frame, { ...opts, prevalidated }));
}

describe('DocumentValidation', () => {
  it('in steps of any size: the same facts or the same error as the whole check', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...validMessages),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 3 }),
        fc.integer({ min: 1, max: 64 }),
        (base, edits, step) => {
          // The message's body (or first document) with random edits.
          const doc = Buffer.from(base.subarray(21));
          for (const [at, value] of edits) doc[4 + (at % Math.max(1, doc.length - 4))] = value;
          const options = { maxDepth: 3, rejectDuplicateKeys: true };
          const whole = outcome(() => validateDocumentFacts(doc, 0, options));
          const stepped = outcome(() => {
            const validation = new DocumentValidation(doc, 0, options);
            while (!validation.step(step));
            return validation.facts;
          });
          expect(stepped).toEqual(whole);
        },
      ),
      { numRuns: 2_000 },
    );
  });

  it('stops at element boundaries and resumes where it stopped', () => {
    const doc = bson({ a: 'x'.repeat(100), b: { c: 1, d: [1, 2, 3] }, e: 2 });
    const validation = new DocumentValidation(doc, 0, { maxDepth: 5, rejectDuplicateKeys: true });
    const positions: number[] = [];
    while (!validation.step(1)) positions.push(validation.position);
    expect(positions.length).toBeGreaterThan(5);
    expect(validation.position).toBe(doc.length);
    expect(validation.end).toBe(doc.length);
  });
});

describe('sliced validation of a message', () => {
  it('refuses exactly what the whole check refuses, and parses the rest to the same result', async () => {
    await fc.assert(
      fc.asyncProperty(mutatedMessage, fc.integer({ min: 1, max: 48 }), async (frame, slice) => {
        const whole = outcome(() => parseOpMsgFacts(frame, opts));
        expect(await slicedParse(frame, slice)).toEqual(whole);
      }),
      { numRuns: 600 },
    );
  });

  it('covers every document parseOpMsgFacts validates, in the views it validates them in', () => {
    const frame = validMessages[2]!;
    const documents = [...opMsgValidations(frame, opts)];
    expect(documents.map((d) => d.offset)).toEqual([21, expect.any(Number), expect.any(Number), expect.any(Number)]);
    expect(documents[0]!.sectionEnd).toBe(frame.length);
  });

  it('the outcome of a different view is not taken', () => {
    const frame = validMessages[0]!;
    // A forged outcome for the body, recorded for another view: ignored, the body is validated.
    const prevalidated = new Map([[21, { sectionEnd: 5, facts: 0, error: new Error('not this view') }]]);
    expect(outcome(() => parseOpMsgFacts(frame, { ...opts, prevalidated }))).toEqual(
      outcome(() => parseOpMsgFacts(frame, opts)),
    );
  });
});

describe('ValidationScheduler', () => {
  it('shares turns between tenants: a small message is not behind a big one of another tenant', async () => {
    const big = opMsg(0, [
      kind0(
        bson({ find: 'c', filter: { tags: { $in: Array.from({ length: 20_000 }, (_, n) => `t${n}`) } }, $db: 'd' }),
      ),
    ]);
    const small = validMessages[1]!;
    const { scheduler, turns, runAll } = manualScheduler({ sliceBytes: 1024, turnBytes: 2048 });
    const order: string[] = [];
    const done: Promise<unknown>[] = [];
    for (let i = 0; i < 3; i++) done.push(scheduler.validate('noisy', big, opts).then(() => void order.push('noisy')));
    done.push(scheduler.validate('bystander', small, opts).then(() => void order.push('bystander')));
    await runAll();
    await Promise.all(done);
    expect(order[0]).toBe('bystander');
    expect(turns()).toBeGreaterThan((3 * big.length) / 2048);
    expect(scheduler.pending).toBe(0);
    // Every byte but each body's length field.
    expect(scheduler.validatedBytes).toBe(3 * (big.length - 21 - 4) + (small.length - 21 - 4));
  });

  it('drops a cancelled message at its next slice', async () => {
    const big = opMsg(0, [kind0(bson({ a: Array.from({ length: 5_000 }, (_, n) => n) }))]);
    const { scheduler, runAll } = manualScheduler({ sliceBytes: 512, turnBytes: 512 });
    let cancelled = false;
    const validating = scheduler.validate('noisy', big, opts, () => cancelled);
    cancelled = true;
    await runAll();
    await validating;
    expect(scheduler.pending).toBe(0);
    expect(scheduler.validatedBytes).toBe(0);
  });

  it('settles cancelled work wherever it waits in line, at the next turn (it holds its request until then)', async () => {
    const big = opMsg(0, [kind0(bson({ a: Array.from({ length: 5_000 }, (_, n) => n) }))]);
    const { scheduler } = manualScheduler({ sliceBytes: 512, turnBytes: 512 });
    const settled: string[] = [];
    let left = false;
    // A long message first in the tenant's line, then two of a client that leaves, then a copy of it.
    const head = scheduler.validate('noisy', big, opts).then(() => void settled.push('head'));
    const behind = [1, 2].map((n) =>
      scheduler.validate('noisy', big, opts, () => left).then(() => void settled.push(`left ${n}`)),
    );
    const copy = scheduler
      .copy('noisy', { finished: false, step: () => 512 } as unknown as CopyJob, () => left)
      .then((copied) => void settled.push(`copy ${copied}`));
    // The turns, by hand: one runs, then the client leaves, then the next settles what it left behind.
    const turn = (): void => (scheduler as unknown as { turn(): void }).turn();
    turn();
    left = true;
    turn();
    await Promise.all([...behind, copy]);
    expect(settled).toEqual(['left 1', 'left 2', 'copy false']);
    expect(scheduler.pending).toBe(1);
    while (scheduler.pending > 0) turn();
    await head;
    expect(settled.at(-1)).toBe('head');
  });
});

describe('ValidationScheduler and the CPU budget', () => {
  /** TenantLimits with only a CPU budget of `rate` ms/s, on a fake clock. */
  function cpuBudget(rate: number): { limits: TenantLimits; clock: { now: number } } {
    const clock = { now: 1_000 };
    const limits = new TenantLimits(
      {
        maxConnectionsPerTenant: 0,
        maxInFlightPerTenant: 0,
        operationsPerSecondPerTenant: 0,
        operationsBurstPerTenant: 0,
        cpuMillisPerSecondPerTenant: rate,
      },
      { now: () => clock.now },
    );
    return { limits, clock };
  }

  /** A copy job of `slices` slices of `sliceBytes`, each costing `ms` on the fake clock and logged under `name`. */
  function job(
    name: string,
    slices: number,
    sliceBytes: number,
    ms: number,
    clock: { now: number },
    log: string[],
  ): CopyJob {
    let left = slices;
    return {
      get finished() {
        return left === 0;
      },
      step(bytes: number): number {
        if (left === 0) return 0;
        expect(bytes).toBeGreaterThanOrEqual(sliceBytes);
        left -= 1;
        clock.now += ms;
        log.push(name);
        return sliceBytes;
      },
    } as unknown as CopyJob;
  }

  it('charges each slice its measured time, to its tenant', async () => {
    const { limits, clock } = cpuBudget(100);
    const { scheduler, runAll } = manualScheduler({ sliceBytes: 1024, turnBytes: 2048, cpu: limits });
    const log: string[] = [];
    const done = [
      scheduler.copy('noisy', job('noisy', 15, 1024, 10, clock, log)),
      scheduler.copy('bystander', job('bystander', 1, 1024, 10, clock, log)),
    ];
    await runAll();
    expect(await Promise.all(done)).toEqual([true, true]);
    // 150 ms at 100 ms/s is half a second past the allowance; 10 ms is well under it.
    expect(limits.overCpuBudget('noisy', clock.now - 150)).toBe(true);
    expect(limits.overCpuBudget('bystander', clock.now)).toBe(false);
    expect(limits.admitRequest('noisy', 0, true)).toMatchObject({ delayedBy: 'cpu' });
    expect(limits.admitRequest('bystander', 0, true)).toMatchObject({ delayMS: 0 });
  });

  it('under budget, nobody waits: slices alternate round-robin', async () => {
    const { limits, clock } = cpuBudget(1_000_000);
    const passed: number[] = [];
    const { scheduler, runAll } = manualScheduler({
      sliceBytes: 1024,
      turnBytes: 2048,
      cpu: limits,
      onPassedOver: (n) => passed.push(n),
    });
    const log: string[] = [];
    const done = [
      scheduler.copy('noisy', job('noisy', 3, 1024, 10, clock, log)),
      scheduler.copy('bystander', job('bystander', 3, 1024, 10, clock, log)),
    ];
    await runAll();
    await Promise.all(done);
    expect(log).toEqual(['noisy', 'bystander', 'noisy', 'bystander', 'noisy', 'bystander']);
    expect(passed).toEqual([]);
    expect(scheduler.passedOver).toBe(0);
  });

  it('a tenant over its budget waits behind one under it, and is served when nobody else has work', async () => {
    const { limits, clock } = cpuBudget(100);
    // The noisy tenant already spent 200 ms: a second past its allowance.
    limits.chargeCpu('noisy', 200);
    const passed: number[] = [];
    const { scheduler, runAll } = manualScheduler({
      sliceBytes: 1024,
      turnBytes: 2048,
      cpu: limits,
      onPassedOver: (n) => passed.push(n),
    });
    const log: string[] = [];
    // The noisy tenant queued first: round-robin alone would serve it first.
    const done = [
      scheduler.copy('noisy', job('noisy', 3, 1024, 1, clock, log)),
      scheduler.copy('bystander', job('bystander', 3, 1024, 1, clock, log)),
    ];
    await runAll();
    expect(await Promise.all(done)).toEqual([true, true]);
    expect(log).toEqual(['bystander', 'bystander', 'bystander', 'noisy', 'noisy', 'noisy']);
    expect(scheduler.passedOver).toBe(3);
    expect(passed.reduce((a, b) => a + b, 0)).toBe(3);
  });

  it('a bystander that goes over its budget too takes turns again with the noisy tenant', async () => {
    const { limits, clock } = cpuBudget(100);
    limits.chargeCpu('noisy', 200);
    const { scheduler, runAll } = manualScheduler({ sliceBytes: 1024, turnBytes: 1024, cpu: limits });
    const log: string[] = [];
    // Each bystander slice costs 60 ms: over its allowance (100 ms) after two.
    const done = [
      scheduler.copy('noisy', job('noisy', 3, 1024, 60, clock, log)),
      scheduler.copy('bystander', job('bystander', 4, 1024, 60, clock, log)),
    ];
    await runAll();
    await Promise.all(done);
    expect(log.slice(0, 2)).toEqual(['bystander', 'bystander']);
    expect(log.filter((name) => name === 'noisy')).toHaveLength(3);
    expect(log.filter((name) => name === 'bystander')).toHaveLength(4);
  });
});
