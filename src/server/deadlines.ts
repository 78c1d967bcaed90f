/**
 * Deadlines of many client connections on one timer per duration (issue 16). Every connection
 * with the same timeout (say `limits.clientIdleTimeoutMS`) is due in the order it was armed, so
 * one list per duration, appended at its tail, is always sorted, and one Node timer for its head
 * serves them all. A connection holds one small `Deadline` it re-arms, instead of a Timeout
 * object and a callback closure per arm. Node keeps its own timers the same way; this only
 * spares the per-arm objects.
 *
 * A deadline never fires early: the list's timer may wake before its head is due (Node's clock
 * is the event loop's), in which case it sleeps again for what is left. The timers are unref'd.
 */

/** What is told when its deadline passes. */
export interface DeadlineOwner {
  deadlineExpired(kind: number): void;
}

const now = (): number => performance.now();

/** Lists by duration (ms); a list is dropped when it is empty. */
const lists = new Map<number, DeadlineList>();

/** One owner's deadline, armed for one `kind` at a time (e.g. idle or frame timeout). */
export class Deadline {
  /** @internal */ prev: Deadline | undefined = undefined;
  /** @internal */ next: Deadline | undefined = undefined;
  /** @internal */ list: DeadlineList | undefined = undefined;
  /** @internal When it is due, on performance.now()'s clock. */ due = 0;
  /** What it was armed for. */
  kind = 0;

  constructor(readonly owner: DeadlineOwner) {}

  /** Armed for `kind`. */
  isArmed(kind: number): boolean {
    return this.list !== undefined && this.kind === kind;
  }

  /** Due `durationMS` from now, for `kind` (replacing whatever it was armed for). */
  arm(durationMS: number, kind: number): void {
    this.disarm();
    this.kind = kind;
    let list = lists.get(durationMS);
    if (list === undefined) {
      list = new DeadlineList(durationMS);
      lists.set(durationMS, list);
    }
    list.append(this);
  }

  disarm(): void {
    this.list?.remove(this);
  }
}

/** @internal Deadlines of one duration, due in list order. */
class DeadlineList {
  #head: Deadline | undefined;
  #tail: Deadline | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(readonly durationMS: number) {}

  append(deadline: Deadline): void {
    deadline.due = now() + this.durationMS;
    deadline.list = this;
    deadline.prev = this.#tail;
    deadline.next = undefined;
    if (this.#tail === undefined) this.#head = deadline;
    else this.#tail.next = deadline;
    this.#tail = deadline;
    if (this.#timer === undefined) this.#schedule(deadline.due);
  }

  remove(deadline: Deadline): void {
    const { prev, next } = deadline;
    if (prev === undefined) this.#head = next;
    else prev.next = next;
    if (next === undefined) this.#tail = prev;
    else next.prev = prev;
    deadline.prev = deadline.next = deadline.list = undefined;
    if (this.#head === undefined) {
      if (this.#timer !== undefined) clearTimeout(this.#timer);
      this.#timer = undefined;
      if (lists.get(this.durationMS) === this) lists.delete(this.durationMS);
    }
  }

  #schedule(due: number): void {
    this.#timer = setTimeout(() => this.#expire(), Math.max(1, Math.ceil(due - now())));
    this.#timer.unref();
  }

  #expire(): void {
    this.#timer = undefined;
    const time = now();
    for (let head = this.#head; head !== undefined && head.due <= time; head = this.#head) {
      this.remove(head);
      head.owner.deadlineExpired(head.kind);
    }
    // What an owner re-armed went to the tail (or to a new list if this one emptied).
    const head = this.#head;
    if (head !== undefined && this.#timer === undefined) this.#schedule(head.due);
  }
}
