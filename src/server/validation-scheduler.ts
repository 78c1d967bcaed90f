/**
 * Validation of large requests in slices, fair across tenants (issue 15, "CPU floods"): a 14 MB
 * find is tens of milliseconds of BSON validation, and done in one piece it holds the event loop
 * while every other tenant's small request waits. Here each large message's documents are
 * validated in slices (bson-scan's DocumentValidation: the same walk as the whole check, stopped
 * at element boundaries), at most `turnBytes` per turn of the event loop, taken round-robin from
 * the tenants that have work queued: a bystander's request waits for at most one turn's slice,
 * and a tenant flooding big messages gets its share of the validation time, not everyone's.
 * The outcomes (facts, or the error the whole check would throw) go to parseOpMsgFacts as
 * `prevalidated`, which takes them instead of validating again; so a sliced check refuses
 * exactly what the whole check refuses.
 *
 * The rewrite of a large insert is sliced the same way (`copy`): its checks and stamp decisions
 * are made at once (they read each document's top level only, unless validation saw something
 * below it to look at), and the copies proportional to its size (stamped documents spliced
 * together, the array, the forwarded frame: wire/copy-job.ts) run here, in the same turns and
 * the same round-robin, so a bystander waits for one slice, not for a 48 MB copy.
 *
 * CPU budget (issue 15): each slice's time is measured (one clock read per slice, never per
 * element) and charged to its tenant's CPU budget (`cpu`: tenant-limits.ts), and a tenant over its
 * budget waits behind the tenants under it: a turn serves the first tenant in line that is under
 * its budget, and the tenants over theirs only when none under theirs has work queued. A tenant
 * under its budget is never made to wait for one over it (it waits at most for the slice already
 * running).
 *
 * Small messages are not queued (the caller validates them at once). Pure scheduling: no
 * sockets or metrics; `defer` and the CPU budget's clock are injectable for tests.
 */
import { opMsgValidations, type ParseOpMsgOptions, type PrevalidatedDocuments } from '../wire/op-msg.js';
import type { DocumentValidation } from '../wire/bson-scan.js';
import type { CopyJob } from '../wire/copy-job.js';
import type { CpuBudget } from './tenant-limits.js';

export interface ValidationSchedulerOptions {
  /** Bytes validated per turn of the event loop, across all tenants. Default 256 KiB. */
  turnBytes?: number;
  /** Bytes validated per slice of one message before the next tenant's turn. Default 64 KiB. */
  sliceBytes?: number;
  /** Runs the next turn later (default setImmediate: after pending I/O). */
  defer?: (run: () => void) => void;
  /** Where each slice's time is charged, and which tenants are over their CPU budget; absent: neither. */
  cpu?: CpuBudget;
  /** `count` slices of tenants over their CPU budget were passed over for a tenant under it (metrics). */
  onPassedOver?: (count: number) => void;
}

/** Messages at least this long are validated in slices (at ~200 MB/s, under 2 ms in one piece). */
export const SLICED_VALIDATION_MIN_BYTES = 256 * 1024;

/** Copy jobs at least this long run in slices (a copy of 256 KiB is well under a millisecond). */
export const SLICED_COPY_MIN_BYTES = 256 * 1024;

interface Job {
  documents: ReturnType<typeof opMsgValidations>;
  current: { offset: number; sectionEnd: number; validation: DocumentValidation } | undefined;
  outcomes: PrevalidatedDocuments;
  cancelled: () => boolean;
  resolve: (outcomes: PrevalidatedDocuments) => void;
}

/** One queued piece of work: a message to validate, or a rewrite's copies. */
interface Task {
  /** Does up to `bytes` of the work; returns the bytes it went through. */
  run(bytes: number): number;
  /** After a run: true when the work is over (its promise resolved). */
  settle(): boolean;
  /** Its client left: the task is dropped without running (`settle` then resolves it). */
  cancelled(): boolean;
}

export class ValidationScheduler {
  /** Queued work per tenant (FIFO), in the order tenants take turns. */
  private readonly queues = new Map<string, Task[]>();
  private scheduled = false;
  private readonly turnBytes: number;
  private readonly sliceBytes: number;
  private readonly defer: (run: () => void) => void;
  private readonly cpu: CpuBudget | undefined;
  private readonly onPassedOver: ((count: number) => void) | undefined;
  /** Slices of tenants over their CPU budget passed over for one under it, since start (for tests). */
  passedOver = 0;
  /** Bytes validated or copied in slices since start (for tests; per tenant would grow with every tenant ever seen). */
  validatedBytes = 0;

  constructor(options: ValidationSchedulerOptions = {}) {
    this.turnBytes = options.turnBytes ?? 256 * 1024;
    this.sliceBytes = options.sliceBytes ?? 64 * 1024;
    this.defer = options.defer ?? ((run) => void setImmediate(run));
    this.cpu = options.cpu;
    this.onPassedOver = options.onPassedOver;
  }

  /** Messages queued or being validated, and copy jobs queued or running. */
  get pending(): number {
    let n = 0;
    for (const queue of this.queues.values()) n += queue.length;
    return n;
  }

  /**
   * Validates the documents of the OP_MSG `frame` in slices under `account`'s turns; resolves
   * with their outcomes for parseOpMsgFacts (`prevalidated`). Never rejects: a document that
   * fails is recorded with its error, and validation of the message stops there. When
   * `cancelled()` turns true (the client left), the message is dropped at its next slice.
   */
  validate(
    account: string,
    frame: Buffer,
    options: ParseOpMsgOptions,
    cancelled: () => boolean = () => false,
  ): Promise<PrevalidatedDocuments> {
    return new Promise((resolve) => {
      const job: Job = {
        documents: opMsgValidations(frame, options),
        current: undefined,
        outcomes: new Map(),
        cancelled,
        resolve,
      };
      this.enqueue(account, {
        run: (bytes) => this.slice(job, bytes),
        settle: () => (job.current === undefined || job.cancelled()) && this.finished(job),
        cancelled,
      });
    });
  }

  /**
   * Runs the copies of `job` (a rewrite's, wire/copy-job.ts) in slices under `account`'s turns,
   * like validation. Resolves true once every copy has run, false when `cancelled()` turned true
   * first (the client left: the rest is dropped at the next slice).
   */
  copy(account: string, job: CopyJob, cancelled: () => boolean = () => false): Promise<boolean> {
    return new Promise((resolve) => {
      this.enqueue(account, {
        run: (bytes) => (cancelled() ? 0 : job.step(bytes)),
        settle: () => {
          if (job.finished) resolve(true);
          else if (cancelled()) resolve(false);
          else return false;
          return true;
        },
        cancelled,
      });
    });
  }

  private enqueue(account: string, task: Task): void {
    const queue = this.queues.get(account);
    if (queue === undefined) this.queues.set(account, [task]);
    else queue.push(task);
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    this.defer(() => {
      this.scheduled = false;
      this.turn();
    });
  }

  /**
   * One turn: slices round-robin across tenants (in insertion order), up to turnBytes in all;
   * tenants over their CPU budget only when no tenant under it has work. Each slice's time is
   * charged to its tenant.
   */
  private turn(): void {
    this.dropCancelled();
    let budget = this.turnBytes;
    const cpu = this.cpu;
    let now = cpu === undefined ? 0 : cpu.now();
    while (budget > 0 && this.queues.size > 0) {
      // The first tenant in line under its CPU budget takes a slice, then goes to the back of the line.
      const account = this.nextAccount(now);
      const queue = this.queues.get(account)!;
      this.queues.delete(account);
      const task = queue[0]!;
      const used = task.run(Math.min(this.sliceBytes, budget));
      budget -= Math.max(1, used);
      this.validatedBytes += used;
      if (task.settle()) queue.shift();
      if (queue.length > 0) this.queues.set(account, queue);
      if (cpu !== undefined) {
        const end = cpu.now();
        cpu.chargeCpu(account, end - now, end);
        now = end;
      }
    }
    if (this.queues.size > 0) this.schedule();
  }

  /**
   * Settles the queued tasks whose client left, wherever they are in line: each holds its request
   * (up to maxMessageSizeBytes) until settled, and a tenant's queue behind a big message can be
   * long (a flood of 10 MB finds from connections the byte budget closes).
   */
  private dropCancelled(): void {
    for (const [account, queue] of this.queues) {
      let kept = 0;
      for (const task of queue) {
        if (task.cancelled() && task.settle()) continue;
        queue[kept++] = task;
      }
      queue.length = kept;
      if (kept === 0) this.queues.delete(account);
    }
  }

  /** The first tenant in line under its CPU budget; the first in line when all are over theirs. */
  private nextAccount(now: number): string {
    const cpu = this.cpu;
    let first: string | undefined;
    let passed = 0;
    for (const account of this.queues.keys()) {
      if (cpu === undefined || !cpu.overCpuBudget(account, now)) {
        if (passed > 0) {
          this.passedOver += passed;
          this.onPassedOver?.(passed);
        }
        return account;
      }
      first ??= account;
      passed += 1;
    }
    return first!;
  }

  /** Validates up to `bytes` of `job`; returns the bytes it went through. */
  private slice(job: Job, bytes: number): number {
    let used = 0;
    while (used < bytes && !job.cancelled()) {
      if (job.current === undefined) {
        const next = job.documents.next();
        if (next.done === true) return used;
        const { offset, sectionEnd, start } = next.value;
        try {
          job.current = { offset, sectionEnd, validation: start() };
        } catch (error) {
          job.outcomes.set(offset, { sectionEnd, facts: 0, error });
          job.documents.return(undefined);
          return used;
        }
      }
      const { offset, sectionEnd, validation } = job.current;
      const from = validation.position;
      try {
        const done = validation.step(bytes - used);
        used += validation.position - from;
        if (!done) continue;
        job.outcomes.set(offset, { sectionEnd, facts: validation.facts });
        job.current = undefined;
      } catch (error) {
        used += Math.max(0, validation.position - from);
        job.outcomes.set(offset, { sectionEnd, facts: 0, error });
        job.current = undefined;
        job.documents.return(undefined);
        return used;
      }
    }
    return used;
  }

  /** True when `job` has nothing left to validate (or was cancelled): its promise is resolved. */
  private finished(job: Job): boolean {
    if (job.cancelled()) job.current = undefined;
    else {
      const next = job.documents.next();
      if (next.done !== true) {
        // More documents: start the next one in the job's next slice.
        const { offset, sectionEnd, start } = next.value;
        try {
          job.current = { offset, sectionEnd, validation: start() };
          return false;
        } catch (error) {
          job.outcomes.set(offset, { sectionEnd, facts: 0, error });
          job.documents.return(undefined);
        }
      }
    }
    job.resolve(job.outcomes);
    return true;
  }
}
