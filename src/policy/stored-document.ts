/**
 * One pass over a document to store (an inserted or replacement document, catalogue 1, 2, 8, 11,
 * 42, G8): everything the write handlers check in it, read from the raw bytes, comparing key
 * bytes with precomputed Buffers and decoding nothing.
 *
 * The pass only answers "clean" or "not clean". Clean means that none of the checks of the
 * handlers' reference path (top-level `$`/dotted names, `assertNoForbidden` with literal strings,
 * a client tenant value other than T) can refuse the document; anything else sends the document
 * to that reference path, which produces the refusal with its rule, code and message. So a
 * refusal is identical whether or not the pass exists, and the pass only has to be conservative.
 *
 * It expects a document that already passed `validateDocument` with duplicate keys rejected (the
 * request parser does this for every client document): duplicates are not looked for here, and
 * lengths are trusted, though a length that does not add up still ends the pass as "not clean"
 * rather than reading out of bounds.
 */
import { BsonType, FIXED_VALUE_SIZE } from '../wire/bson-scan.js';
import { readInt32LE } from '../wire/header.js';
import { FORBIDDEN_KEYS, FORBIDDEN_VARIABLES } from './operators.js';

const DOLLAR = 0x24;
const DOT = 0x2e;

/** Keys refused at any depth of a document (catalogue 1, 2), as bytes. */
const FORBIDDEN_KEY_BYTES: readonly Buffer[] = [...FORBIDDEN_KEYS].map((key) => Buffer.from(key, 'utf8'));
/** Refused anywhere inside a key (catalogue 11). */
const FORBIDDEN_KEY_PARTS: readonly Buffer[] = FORBIDDEN_VARIABLES.map((name) => Buffer.from(name, 'utf8'));
const ID = Buffer.from('_id', 'utf8');

/**
 * Value sizes of the fixed-width types; -1: variable or nested; -2: unknown, or JavaScript code,
 * which this pass leaves to the checked path (it is refused there).
 */
const FIXED_SIZE = Int8Array.from(FIXED_VALUE_SIZE);
FIXED_SIZE[BsonType.javascript] = -2;
FIXED_SIZE[BsonType.javascriptWithScope] = -2;

/** What the pass found; one instance is reused by its caller across documents. */
export class StoredDocumentScan {
  /** No check of the reference path can refuse the document (see the file comment). */
  clean = false;
  /** Offset of the top-level tenant field's type byte, or -1. */
  tenantStart = -1;
  /** Offset of that element's value and the offset after it. */
  tenantValueStart = -1;
  tenantValueEnd = -1;
  /** Where a stamp goes: right after the top-level `_id`, else first (offset 4). */
  stampAt = 4;
}

function bytesEqual(buf: Uint8Array, start: number, end: number, needle: Uint8Array): boolean {
  if (end - start !== needle.length) return false;
  for (let i = 0; i < needle.length; i++) if (buf[start + i] !== needle[i]) return false;
  return true;
}

function contains(buf: Uint8Array, start: number, end: number, needle: Uint8Array): boolean {
  const last = end - needle.length;
  outer: for (let i = start; i <= last; i++) {
    for (let j = 0; j < needle.length; j++) if (buf[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

/** A key with a `$` in it, at any depth of a document: one of the forbidden names or parts. */
function forbiddenKey(buf: Uint8Array, start: number, end: number): boolean {
  for (const name of FORBIDDEN_KEY_BYTES) if (bytesEqual(buf, start, end, name)) return true;
  for (const part of FORBIDDEN_KEY_PARTS) if (contains(buf, start, end, part)) return true;
  return false;
}

/** Ends of the documents still open (reused: a pass allocates nothing once it has grown). */
const openEnds: number[] = [];
const openIsArray: boolean[] = [];

/**
 * Scans the document `doc` (its whole bytes) and fills `out`. `tenantField`: the tenant field's
 * name as bytes, or null when the namespace is not tenant-filtered. `topOnly`: the caller knows
 * from validation that nothing below the top level can be refused (no JavaScript value and no
 * name with a `$` there: bson-scan's DocumentFact), so only the top-level elements are read.
 * `keysClean` (with `topOnly`): the caller also knows from validation that no top-level name has a
 * `$` or a `.` in it, so nothing in the document can be refused but the tenant value: the pass
 * stops at the tenant field (a document that has one is not stamped, so `stampAt` is not needed).
 */
export function scanStoredDocument(
  doc: Uint8Array,
  tenantField: Uint8Array | null,
  out: StoredDocumentScan,
  topOnly = false,
  keysClean = false,
): void {
  out.clean = false;
  out.tenantStart = -1;
  out.tenantValueStart = -1;
  out.tenantValueEnd = -1;
  out.stampAt = 4;
  const length = doc.length;
  if (length < 5 || readInt32LE(doc, 0) !== length || doc[length - 1] !== 0) return;
  // Nothing to refuse and no tenant field to look for: clean without reading further.
  const early = topOnly && keysClean;
  if (early && tenantField === null) {
    out.clean = true;
    return;
  }
  let depth = 0;
  let end = length - 1; // the terminator of the innermost open document
  let isArray = false;
  let pos = 4;
  for (;;) {
    if (pos === end) {
      if (depth === 0) break;
      depth--;
      end = openEnds[depth] as number;
      isArray = openIsArray[depth] as boolean;
      pos++;
      continue;
    }
    if (pos > end) return;
    const type = doc[pos] as number;
    const keyStart = pos + 1;
    let keyEnd = keyStart;
    let dollar = false;
    let dot = false;
    for (;;) {
      const b = doc[keyEnd];
      if (b === 0) break;
      if (b === undefined || keyEnd >= end) return;
      if (b === DOLLAR) dollar = true;
      else if (b === DOT) dot = true;
      keyEnd++;
    }
    if (depth === 0) {
      // Top-level names are stored as field names: never `$`-prefixed or dotted (catalogue 42).
      if (dot || doc[keyStart] === DOLLAR) return;
      if (dollar && forbiddenKey(doc, keyStart, keyEnd)) return;
    } else if (dollar && !isArray && forbiddenKey(doc, keyStart, keyEnd)) {
      return;
    }
    const valueStart = keyEnd + 1;
    let valueEnd: number;
    const fixed = FIXED_SIZE[type] as number;
    if (fixed >= 0) {
      valueEnd = valueStart + fixed;
    } else if (fixed === -2) {
      return; // JavaScript (catalogue 1) or a type the validator would have refused
    } else if (valueStart + 4 > end) {
      return;
    } else {
      switch (type) {
        case BsonType.document:
        case BsonType.array: {
          const size = readInt32LE(doc, valueStart);
          if (size < 5 || valueStart + size > end) return;
          valueEnd = valueStart + size;
          break;
        }
        case BsonType.binary:
          valueEnd = valueStart + 5 + readInt32LE(doc, valueStart);
          break;
        case BsonType.dbPointer:
          valueEnd = valueStart + 4 + readInt32LE(doc, valueStart) + 12;
          break;
        case BsonType.regex: {
          const first = doc.indexOf(0, valueStart);
          const second = first === -1 ? -1 : doc.indexOf(0, first + 1);
          if (second === -1) return;
          valueEnd = second + 1;
          break;
        }
        default: // string, symbol: literal text in stored data
          valueEnd = valueStart + 4 + readInt32LE(doc, valueStart);
      }
    }
    if (valueEnd < valueStart || valueEnd > end) return; // a length that does not add up
    if (depth === 0) {
      if (tenantField !== null && out.tenantStart === -1 && bytesEqual(doc, keyStart, keyEnd, tenantField)) {
        out.tenantStart = pos;
        out.tenantValueStart = valueStart;
        out.tenantValueEnd = valueEnd;
        if (early) {
          out.clean = true;
          return;
        }
      } else if (out.stampAt === 4 && bytesEqual(doc, keyStart, keyEnd, ID)) {
        out.stampAt = valueEnd;
      }
    }
    if ((type === BsonType.document || type === BsonType.array) && !topOnly) {
      openEnds[depth] = end;
      openIsArray[depth] = isArray;
      depth++;
      end = valueEnd - 1;
      isArray = type === BsonType.array;
      pos = valueStart + 4;
      continue;
    }
    pos = valueEnd;
  }
  out.clean = true;
}
