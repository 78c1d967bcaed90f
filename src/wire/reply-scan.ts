/**
 * One walk over an upstream reply for every fact the proxy reads from it (issue 16): whether it
 * is `ok`, its error code and labels (retry decisions), the cursor it opened or continued (cursor
 * homes, the server a getMore goes to, cursor ownership). The walk covers the body's top-level
 * elements and those of its `cursor` document, never the batch inside.
 *
 * Before, each consumer looked its fields up with `findElement`, each lookup a walk from the
 * body's start that stops at the element it wants and throws (BsonValidationError) when it meets
 * a malformed element first. The scan keeps those answers exactly, corrupt replies included: it
 * records the first element of each name it looks for met before the walk failed, and a lookup
 * that would have walked past the failure throws the failure. Every fact is read when the reply
 * is scanned (values, not offsets), so a reply rewritten in place afterwards (rewrite/tenant-field.ts)
 * does not change them. test/unit/wire/reply-scan.test.ts checks every fact against the old
 * lookups on a corpus, every byte of each corrupted, truncations and random replies.
 */
import { HEADER_LENGTH, OpCode, SectionKind } from './constants.js';
import {
  BsonType,
  type BsonElement,
  documentEnd,
  elements,
  elementEnd,
  checkDocumentEnd,
  readInt64,
  readNumber,
  readString,
} from './bson-scan.js';
import { numberOf, stringOf } from './raw-bson.js';
import { retainShape } from './retained-shapes.js';

/** A retryable-error view of a reply (upstream/retry.ts's RetryError, minus `network`). */
export interface ReplyError {
  code?: number;
  labels: string[];
}

/** A value, or what reading it threw. */
type Outcome<T> = { value: T; error?: undefined } | { value?: undefined; error: unknown };

const encoder = new TextEncoder();

/** Top-level names the scan records (their first occurrence). */
const TOP = [
  'ok',
  'code',
  'errorLabels',
  'writeConcernError',
  'cursor',
  'errmsg',
  'writeErrors',
  'raw',
  'databases',
] as const;
type TopName = (typeof TOP)[number];
const TOP_NEEDLES = TOP.map((name) => encoder.encode(name));
const CURSOR = ['id', 'ns'] as const;
type CursorName = (typeof CURSOR)[number];
const CURSOR_NEEDLES = CURSOR.map((name) => encoder.encode(name));

/**
 * The first elements named in `names` of the document at `docOffset`, met before its walk failed,
 * and that failure. `ascii`: every name of the document is ASCII (RawDocument.parse, which decodes
 * them strictly, then accepts exactly what the walk accepts).
 */
class Walk<N extends string> {
  readonly found: Array<BsonElement | undefined>;
  /** Names (of `names`) met more than once before the walk failed. */
  readonly repeated: boolean[];
  error: unknown = undefined;
  ascii = true;

  constructor(
    doc: Uint8Array,
    docOffset: number,
    private readonly names: readonly N[],
    needles: readonly Uint8Array[],
  ) {
    this.found = new Array<BsonElement | undefined>(names.length);
    this.repeated = new Array<boolean>(names.length).fill(false);
    try {
      const end = documentEnd(doc, docOffset);
      let pos = docOffset + 4;
      while (pos < end) {
        const next = elementEnd(doc, pos, end);
        // The name is checked (its NUL is before `end`) by elementEnd.
        let nul = pos + 1;
        while (doc[nul] !== 0) {
          if (doc[nul]! >= 0x80) this.ascii = false;
          nul++;
        }
        const length = nul - pos - 1;
        for (let n = 0; n < needles.length; n++) {
          const needle = needles[n]!;
          if (needle.length !== length) continue;
          let same = true;
          for (let i = 0; same && i < length; i++) same = doc[pos + 1 + i] === needle[i];
          if (!same) continue;
          if (this.found[n] !== undefined) this.repeated[n] = true;
          else
            this.found[n] = { type: doc[pos]!, name: names[n]!, start: pos, offset: nul + 1, length: next - nul - 1 };
        }
        pos = next;
      }
      checkDocumentEnd(doc, pos, end);
    } catch (error) {
      this.error = error;
    }
  }

  /** What `findElement(doc, name, docOffset)` returned (or threw). */
  find(name: N): BsonElement | null {
    const found = this.found[this.names.indexOf(name)];
    if (found !== undefined) return found;
    if (this.error !== undefined) throw this.error;
    return null;
  }

  /** The walk reached the document's end without failing. */
  get complete(): boolean {
    return this.error === undefined;
  }
}

// One walk held so that its class's maps outlive collections that find no reply being scanned
// (retained-shapes.ts): an empty document, with the top-level names.
retainShape(new Walk(new Uint8Array([5, 0, 0, 0, 0]), 0, TOP, TOP_NEEDLES));

function outcome<T>(read: () => T): Outcome<T> {
  try {
    return { value: read() };
  } catch (error) {
    return { error };
  }
}

function valueOf<T>(result: Outcome<T>): T {
  if (result.error !== undefined) throw result.error;
  return result.value as T;
}

/** The facts of one reply frame; see the module comment. */
export class ReplyScan {
  /** The cursor a reply opened or continued, as `ns:id` (upstream/command-traits.ts cursorKey); undefined when its id is 0 or it has none. */
  readonly cursorKey: string | undefined;
  /**
   * The `cursor` document's first `ns` read as rewrite/replies.ts reads it (a string without NUL,
   * valid UTF-8; else undefined), when the cursor document walked to its end.
   */
  readonly cursorNs: string | undefined;
  /** The code and labels of an `ok: 0` reply or of its writeConcernError (a retry decision's input), else undefined. */
  readonly error: ReplyError | undefined;
  readonly #ok: Outcome<boolean>;
  readonly #errorCode: Outcome<number | undefined>;
  readonly #cursor: Outcome<{ id: bigint; ns: string } | undefined>;
  readonly #top: Walk<TopName> | undefined;
  readonly #inCursor: Walk<CursorName> | undefined;

  /** `body`: the reply's kind-0 body; undefined for a frame of another shape (not ok, no cursor, no error). */
  constructor(body: Uint8Array | undefined) {
    if (body === undefined) {
      this.#top = undefined;
      this.#inCursor = undefined;
      this.cursorKey = undefined;
      this.cursorNs = undefined;
      this.error = undefined;
      this.#ok = { value: false };
      this.#errorCode = { value: undefined };
      this.#cursor = { value: undefined };
      return;
    }
    const top = new Walk(body, 0, TOP, TOP_NEEDLES);
    this.#top = top;
    let inCursor: Walk<CursorName> | undefined;
    const cursor = top.found[TOP.indexOf('cursor')];
    if (cursor !== undefined && cursor.type === BsonType.document) {
      inCursor = new Walk(body, cursor.offset, CURSOR, CURSOR_NEEDLES);
    }
    this.#inCursor = inCursor;
    this.#ok = outcome(() => {
      const ok = top.find('ok');
      return ok !== null && readNumber(body, ok) === 1;
    });
    this.#errorCode = outcome(() => errorCode(body, top));
    const cursorFacts = outcome(() => cursorOf(body, top, inCursor));
    this.#cursor = cursorFacts;
    // replyCursor's answer, from the same reads: undefined wherever cursorOf has none or throws
    // (replyCursor read `ns` as a string too, and caught every throw), and for id 0.
    const opened = cursorFacts.value;
    this.cursorKey = opened === undefined || opened.id === 0n ? undefined : `${opened.ns}:${opened.id.toString()}`;
    this.cursorNs =
      inCursor?.complete === true
        ? (opened?.ns ?? stringOrUndefined(body, inCursor.found[CURSOR.indexOf('ns')]))
        : undefined;
    this.error = replyError(body, top);
  }

  /** Whether the reply says `ok: 1`; a missing or unreadable `ok` is a failure. Throws where the old lookup threw (a malformed body before `ok`). */
  isOk(): boolean {
    return valueOf(this.#ok);
  }

  /**
   * The code of an `ok: 0` reply (-1 without a numeric one), undefined when `ok` is absent or not
   * 0 (policy/cursors.ts: a getMore's cursor is forgotten on CursorNotFound). Throws like `isOk`.
   */
  errorCode(): number | undefined {
    return valueOf(this.#errorCode);
  }

  /** `{id, ns}` of the reply's `cursor` (int64 id, string ns), any id; undefined without. Throws like `isOk`. */
  cursor(): { id: bigint; ns: string } | undefined {
    return valueOf(this.#cursor);
  }

  /**
   * Whether the body's top level walked to its end, all its names ASCII: RawDocument.parse of the
   * body then succeeds. `has` may then say a name is absent.
   */
  get wellFormed(): boolean {
    return this.#top !== undefined && this.#top.complete && this.#top.ascii;
  }

  /** Whether a top-level element of this name exists (one of the names the scan records). */
  has(name: TopName): boolean {
    return this.#top?.found[TOP.indexOf(name)] !== undefined;
  }

  /** The `cursor` document walked to its end, its names ASCII. */
  get cursorWellFormed(): boolean {
    return this.#inCursor !== undefined && this.#inCursor.complete && this.#inCursor.ascii;
  }

  /** Whether the top level has exactly one element of this name (met before its walk failed). */
  once(name: TopName): boolean {
    const n = TOP.indexOf(name);
    return this.#top?.found[n] !== undefined && this.#top.repeated[n] !== true;
  }

  /** Whether the top-level `cursor` is a document. */
  get cursorIsDocument(): boolean {
    return this.#inCursor !== undefined;
  }
}

/**
 * The facts of `frame`, from a new scan. The forwarding layer scans each reply once, as it
 * arrives, and hands that scan with the reply to every consumer (cursor homes, retry decision,
 * cursor table, the isolation engine, the client connection): no table from frames to scans
 * (a WeakMap entry per reply cost more than the scan). The facts are values read now; a frame
 * rewritten in place afterwards keeps them (no rewrite changes `ok`, the error or the physical
 * cursor).
 */
export function scanReply(frame: Buffer): ReplyScan {
  return new ReplyScan(bodyOf(frame));
}

/** protocol/command.ts replyBody: the kind-0 body of an OP_MSG as a server sends it. */
function bodyOf(reply: Buffer): Buffer | undefined {
  const bodyStart = HEADER_LENGTH + 5;
  if (reply.length < bodyStart + 5) return undefined;
  if (reply.readInt32LE(12) !== OpCode.OP_MSG || reply[HEADER_LENGTH + 4] !== SectionKind.body) return undefined;
  const length = reply.readInt32LE(bodyStart);
  if (length < 5 || bodyStart + length > reply.length) return undefined;
  return reply.subarray(bodyStart, bodyStart + length);
}

/** rewrite/replies.ts stringValue: a string element's text, undefined for another type, a NUL inside or bad UTF-8. */
function stringOrUndefined(body: Uint8Array, element: BsonElement | undefined): string | undefined {
  if (element === undefined || element.type !== BsonType.string) return undefined;
  try {
    return stringOf({ type: element.type, value: body.subarray(element.offset, element.offset + element.length) });
  } catch {
    return undefined;
  }
}

/** policy/cursors.ts errorCodeOf. */
function errorCode(body: Uint8Array, top: Walk<TopName>): number | undefined {
  const ok = top.find('ok');
  if (ok === null) return undefined;
  const okValue = numberOf({ type: ok.type, value: body.subarray(ok.offset, ok.offset + ok.length) });
  if (okValue !== 0) return undefined;
  const code = top.find('code');
  if (code === null) return -1;
  return numberOf({ type: code.type, value: body.subarray(code.offset, code.offset + code.length) }) ?? -1;
}

/** policy/cursors.ts cursorIdOf. */
function cursorOf(
  body: Uint8Array,
  top: Walk<TopName>,
  inCursor: Walk<CursorName> | undefined,
): { id: bigint; ns: string } | undefined {
  const cursor = top.find('cursor');
  if (cursor === null || cursor.type !== BsonType.document || inCursor === undefined) return undefined;
  const id = inCursor.find('id');
  const ns = inCursor.find('ns');
  if (id === null || id.type !== BsonType.int64 || ns === null || ns.type !== BsonType.string) return undefined;
  return { id: readInt64(body, id), ns: readString(body, ns) };
}

/** upstream/execute.ts replyError: never throws. */
function replyError(body: Uint8Array, top: Walk<TopName>): ReplyError | undefined {
  try {
    const ok = top.find('ok');
    let code: number | undefined;
    if (ok !== null && readNumber(body, ok) !== 1) {
      const codeElement = top.find('code');
      code = codeElement === null ? undefined : readNumber(body, codeElement);
    } else {
      const wce = top.find('writeConcernError');
      if (wce === null || wce.type !== BsonType.document) return undefined;
      const doc = body.subarray(wce.offset, wce.offset + wce.length);
      const codeElement = new Walk(doc, 0, ['code'], [encoder.encode('code')]).find('code');
      code = codeElement === null ? undefined : readNumber(doc, codeElement);
    }
    const labels: string[] = [];
    const labelsElement = top.find('errorLabels');
    if (labelsElement !== null && labelsElement.type === BsonType.array) {
      const array = body.subarray(labelsElement.offset, labelsElement.offset + labelsElement.length);
      for (const item of elements(array)) if (item.type === BsonType.string) labels.push(readString(array, item));
    }
    return { ...(code === undefined ? {} : { code }), labels };
  } catch {
    return undefined;
  }
}
