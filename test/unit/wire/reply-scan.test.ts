/**
 * The reply's one scan (src/wire/reply-scan.ts) against the lookups it replaced, kept here
 * verbatim as oracles: protocol/command.ts replyIsOk, upstream/command-traits.ts replyCursor,
 * upstream/execute.ts replyError, policy/cursors.ts errorCodeOf and cursorIdOf. The same answer,
 * or the same throw (class and message), for a corpus of reply shapes, every byte of each
 * corpus frame corrupted in turn, every truncation, and random replies (fast-check).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  BsonType,
  elements,
  findElement,
  readInt64,
  readNumber,
  readString,
  subDocument,
} from '../../../src/wire/bson-scan.js';
import { Binary, Double, Int32, Long, serialize, type Document } from '../../../src/wire/bson.js';
import { HEADER_LENGTH, OpCode, SectionKind } from '../../../src/wire/constants.js';
import { readHeader } from '../../../src/wire/header.js';
import { numberOf } from '../../../src/wire/raw-bson.js';
import { ReplyScan, scanReply } from '../../../src/wire/reply-scan.js';
import { encodeOpMsg, ownFrameBody } from '../../../src/wire/op-msg.js';
import { replyIsOk } from '../../../src/protocol/command.js';
import { replyCursor } from '../../../src/upstream/command-traits.js';
import { hideTenantField } from '../../../src/rewrite/tenant-field.js';
import { bsonString as str, double as dbl, int64 as i64, rawDocOf as rawBody } from './fixtures.js';

// ---------------------------------------------------------------------------------------------
// The old lookups, verbatim (imports adjusted).

function oldReplyBody(reply: Buffer): Buffer | undefined {
  const bodyStart = HEADER_LENGTH + 5;
  if (reply.length < bodyStart + 5) return undefined;
  if (readHeader(reply).opCode !== OpCode.OP_MSG || reply[HEADER_LENGTH + 4] !== SectionKind.body) return undefined;
  const length = reply.readInt32LE(bodyStart);
  if (length < 5 || bodyStart + length > reply.length) return undefined;
  return reply.subarray(bodyStart, bodyStart + length);
}

function oldReplyIsOk(reply: Buffer): boolean {
  const body = oldReplyBody(reply);
  if (body === undefined) return false;
  const ok = findElement(body, 'ok');
  return ok !== null && readNumber(body, ok) === 1;
}

function oldReplyCursor(reply: Buffer): string | undefined {
  const body = oldReplyBody(reply);
  if (body === undefined) return undefined;
  try {
    const cursor = findElement(body, 'cursor');
    if (cursor === null || cursor.type !== BsonType.document) return undefined;
    const doc = subDocument(body, cursor);
    const id = findElement(doc, 'id');
    const ns = findElement(doc, 'ns');
    if (id === null || ns === null || id.type !== BsonType.int64) return undefined;
    const value = readInt64(doc, id);
    return value === 0n ? undefined : `${readString(doc, ns)}:${value.toString()}`;
  } catch {
    return undefined;
  }
}

function oldReplyError(reply: Buffer): { code?: number; labels: string[]; network: false } | undefined {
  const body = oldReplyBody(reply);
  if (body === undefined) return undefined;
  try {
    const ok = findElement(body, 'ok');
    let code: number | undefined;
    if (ok !== null && readNumber(body, ok) !== 1) {
      const codeElement = findElement(body, 'code');
      code = codeElement === null ? undefined : readNumber(body, codeElement);
    } else {
      const wce = findElement(body, 'writeConcernError');
      if (wce === null || wce.type !== BsonType.document) return undefined;
      const doc = subDocument(body, wce);
      const codeElement = findElement(doc, 'code');
      code = codeElement === null ? undefined : readNumber(doc, codeElement);
    }
    const labels: string[] = [];
    const labelsElement = findElement(body, 'errorLabels');
    if (labelsElement !== null && labelsElement.type === BsonType.array) {
      const array = subDocument(body, labelsElement);
      for (const item of elements(array)) if (item.type === BsonType.string) labels.push(readString(array, item));
    }
    return { ...(code === undefined ? {} : { code }), labels, network: false };
  } catch {
    return undefined;
  }
}

function oldErrorCodeOf(replyBody: Uint8Array): number | undefined {
  const ok = findElement(replyBody, 'ok');
  if (ok === null) return undefined;
  const okValue = numberOf({ type: ok.type, value: replyBody.subarray(ok.offset, ok.offset + ok.length) });
  if (okValue !== 0) return undefined;
  const code = findElement(replyBody, 'code');
  if (code === null) return -1;
  return numberOf({ type: code.type, value: replyBody.subarray(code.offset, code.offset + code.length) }) ?? -1;
}

function oldCursorIdOf(replyBody: Uint8Array): { id: bigint; ns: string } | undefined {
  const cursor = findElement(replyBody, 'cursor');
  if (cursor === null || cursor.type !== BsonType.document) return undefined;
  const doc = subDocument(replyBody, cursor);
  const id = findElement(doc, 'id');
  const ns = findElement(doc, 'ns');
  if (id === null || id.type !== BsonType.int64 || ns === null || ns.type !== BsonType.string) return undefined;
  return { id: readInt64(doc, id), ns: readString(doc, ns) };
}

// ---------------------------------------------------------------------------------------------

type Outcome = { value: unknown } | { threw: string; message: string };

function outcome(read: () => unknown): Outcome {
  try {
    return { value: read() };
  } catch (error) {
    return { threw: (error as Error).constructor.name, message: (error as Error).message };
  }
}

let checked = 0;
/** How many frames made an old lookup throw (the corruption tests must reach those paths). */
let threw = 0;

const text = (value: unknown): string =>
  JSON.stringify(value, (_key, item: unknown) => (typeof item === 'bigint' ? `${item}n` : item)) ?? 'undefined';

/** Every fact of a fresh scan of (a copy of) `frame` equals the old lookups' answer. */
function same(frame: Buffer): void {
  checked++;
  const copy = Buffer.from(frame);
  const scan = scanReply(copy);
  const body = oldReplyBody(frame);
  const bodyScan = body === undefined ? undefined : new ReplyScan(Buffer.from(body));
  const old = {
    ok: outcome(() => oldReplyIsOk(frame)),
    okEntry: outcome(() => oldReplyIsOk(frame)),
    cursorKey: outcome(() => oldReplyCursor(frame)),
    cursorKeyEntry: outcome(() => oldReplyCursor(frame)),
    error: outcome(() => oldReplyError(frame)),
    // The engine's calls take the body: the frame's scan and a scan of the body alone answer the same.
    errorCode: outcome(() => (body === undefined ? undefined : oldErrorCodeOf(body))),
    errorCodeOfBody: outcome(() => (body === undefined ? undefined : oldErrorCodeOf(body))),
    cursor: outcome(() => (body === undefined ? undefined : oldCursorIdOf(body))),
    cursorOfBody: outcome(() => (body === undefined ? undefined : oldCursorIdOf(body))),
  };
  const now = {
    ok: outcome(() => scan.isOk()),
    okEntry: outcome(() => replyIsOk(copy)),
    cursorKey: outcome(() => scan.cursorKey),
    cursorKeyEntry: outcome(() => replyCursor(copy)),
    error: outcome(() => (scan.error === undefined ? undefined : { ...scan.error, network: false })),
    errorCode: outcome(() => scan.errorCode()),
    errorCodeOfBody: outcome(() => bodyScan?.errorCode()),
    cursor: outcome(() => scan.cursor()),
    cursorOfBody: outcome(() => bodyScan?.cursor()),
  };
  if ('threw' in old.ok || 'threw' in old.cursor || 'threw' in old.errorCode) threw++;
  if (text(now) !== text(old)) expect(now).toEqual(old);
}

const msg = (body: Uint8Array, flagBits = 0): Buffer => encodeOpMsg({ requestId: 1, responseTo: 2, flagBits, body });
const doc = (value: Document): Buffer => Buffer.from(serialize(value));

const batch = [
  { _id: 'doc-1', tenantId: 'bench', seq: 1, tags: ['a', 'b'] },
  { _id: 'doc-2', tenantId: 'bench', seq: 2, nested: { ok: 0, code: 5 } },
];

const bodies: Array<[string, Buffer]> = [
  ['getMore batch', doc({ cursor: { nextBatch: batch, id: new Long(77), ns: 'db.c' }, ok: 1 })],
  ['first batch, exhausted', doc({ cursor: { firstBatch: batch, id: new Long(0), ns: 'db.c' }, ok: 1 })],
  ['ok as double', doc({ ok: new Double(1), cursor: { id: new Long(3), ns: 'a.b', firstBatch: [] } })],
  ['ok as int64', doc({ ok: new Long(1) })],
  ['ok as int32 2', doc({ ok: new Int32(2) })],
  ['ok as bool', doc({ ok: true })],
  ['ok as string', doc({ ok: '1' })],
  ['ok missing', doc({ n: 1 })],
  ['empty body', doc({})],
  ['ok huge int64', rawBody([[BsonType.int64, 'ok', i64(2n ** 62n)]])],
  [
    'duplicate ok (0 first)',
    rawBody([
      [BsonType.double, 'ok', dbl(0)],
      [BsonType.double, 'ok', dbl(1)],
    ]),
  ],
  [
    'duplicate ok (1 first)',
    rawBody([
      [BsonType.double, 'ok', dbl(1)],
      [BsonType.double, 'ok', dbl(0)],
    ]),
  ],
  [
    'error with code and labels',
    doc({ ok: 0, errmsg: 'no', code: 43, codeName: 'CursorNotFound', errorLabels: ['RetryableWriteError', 7, 'X'] }),
  ],
  ['error, code double', doc({ ok: 0, code: new Double(91.5) })],
  ['error, code int64', doc({ ok: 0, code: new Long(11600) })],
  ['error, code string', doc({ ok: 0, code: '11600' })],
  ['error, no code', doc({ ok: 0, errmsg: 'x' })],
  ['error, code before ok', doc({ code: 6, ok: 0 })],
  ['error, labels not an array', doc({ ok: 0, code: 1, errorLabels: 'RetryableWriteError' })],
  [
    'error, label with NUL',
    rawBody([
      [BsonType.double, 'ok', dbl(0)],
      [BsonType.array, 'errorLabels', rawBody([[BsonType.string, '0', str(Buffer.from('a\0b'))]])],
    ]),
  ],
  ['writeConcernError', doc({ ok: 1, writeConcernError: { code: 64, errmsg: 'waiting' }, errorLabels: ['L'] })],
  ['writeConcernError, no code', doc({ ok: 1, writeConcernError: { errmsg: 'w' } })],
  ['writeConcernError, not a document', doc({ ok: 1, writeConcernError: 5 })],
  ['writeConcernError, code string', doc({ ok: 1, writeConcernError: { code: 'x' } })],
  ['writeConcernError without ok', doc({ writeConcernError: { code: 100 } })],
  ['cursor not a document', doc({ cursor: 1, ok: 1 })],
  ['cursor id int32', doc({ cursor: { id: 5, ns: 'a.b' }, ok: 1 })],
  ['cursor without ns', doc({ cursor: { id: new Long(5) }, ok: 1 })],
  ['cursor ns not a string', doc({ cursor: { id: new Long(5), ns: 12 }, ok: 1 })],
  ['cursor ns first', doc({ cursor: { ns: 'x.y', id: new Long(-9), nextBatch: [] }, ok: 1 })],
  [
    'two cursors',
    rawBody([
      [BsonType.document, 'cursor', doc({ id: new Long(1), ns: 'a.b' })],
      [BsonType.document, 'cursor', doc({ id: new Long(2), ns: 'c.d' })],
      [BsonType.double, 'ok', dbl(1)],
    ]),
  ],
  [
    'cursor with two ids',
    doc({
      cursor: rawBody([
        [BsonType.int64, 'id', i64(4n)],
        [BsonType.int64, 'id', i64(5n)],
        [BsonType.string, 'ns', str(Buffer.from('a.b'))],
      ]),
      ok: 1,
    }),
  ],
  [
    'cursor ns with NUL',
    rawBody([
      [
        BsonType.document,
        'cursor',
        rawBody([
          [BsonType.int64, 'id', i64(4n)],
          [BsonType.string, 'ns', str(Buffer.from('a\0b'))],
        ]),
      ],
      [BsonType.double, 'ok', dbl(1)],
    ]),
  ],
  [
    'cursor ns invalid UTF-8',
    rawBody([
      [
        BsonType.document,
        'cursor',
        rawBody([
          [BsonType.int64, 'id', i64(4n)],
          [BsonType.string, 'ns', str(Buffer.from([0x61, 0xff]))],
        ]),
      ],
      [BsonType.double, 'ok', dbl(1)],
    ]),
  ],
  [
    'non-ASCII names',
    rawBody([
      [BsonType.double, 'ök', dbl(0)],
      [BsonType.double, 'ok', dbl(1)],
    ]),
  ],
  [
    'binary and odd values',
    doc({
      b: new Binary(Buffer.from([1, 2, 3])),
      cursor: { id: new Long(8), ns: 'q.r', nextBatch: [{ a: null }] },
      ok: 1,
    }),
  ],
];

/** Frames of other shapes than a server's OP_MSG reply. */
const odd: Array<[string, Buffer]> = [
  ['too short', Buffer.alloc(20)],
  ['OP_REPLY', Buffer.concat([msg(doc({ ok: 1 })).subarray(0, 12), Buffer.from([1, 0, 0, 0]), Buffer.alloc(30)])],
  [
    'document sequence first',
    (() => {
      const frame = msg(doc({ ok: 1 }));
      frame[HEADER_LENGTH + 4] = SectionKind.documentSequence;
      return frame;
    })(),
  ],
  ['body longer than the frame', msg(doc({ ok: 1 })).subarray(0, 30)],
];

describe('scanReply: the same facts as the lookups it replaced', () => {
  it('a corpus of reply shapes', () => {
    for (const [, body] of bodies) {
      same(msg(body));
      same(msg(body, 2)); // moreToCome
    }
    for (const [, frame] of odd) same(frame);
  });

  it('reads what the corpus says', () => {
    const scan = scanReply(msg(bodies[0]![1]));
    expect(scan.isOk()).toBe(true);
    expect(scan.cursorKey).toBe('db.c:77');
    expect(scan.cursor()).toEqual({ id: 77n, ns: 'db.c' });
    expect(scan.errorCode()).toBeUndefined();
    expect(scan.error).toBeUndefined();
    const failed = scanReply(msg(doc({ ok: 0, code: 43, errorLabels: ['A'] })));
    expect(failed.isOk()).toBe(false);
    expect(failed.errorCode()).toBe(43);
    expect(failed.error).toEqual({ code: 43, labels: ['A'] });
  });

  it('every byte of every corpus frame corrupted in turn', () => {
    for (const [, body] of bodies) {
      const frame = msg(body);
      for (let at = 0; at < frame.length; at++) {
        for (const value of [0x00, 0x02, 0x04, 0x12, 0x80, 0xff, (frame[at]! + 1) & 0xff]) {
          if (value === frame[at]) continue;
          const corrupt = Buffer.from(frame);
          corrupt[at] = value;
          same(corrupt);
        }
      }
    }
  });

  it('every truncation of the body (framed with its real length) and of the frame', () => {
    for (const [, body] of bodies) {
      for (let length = 0; length <= body.length; length++) {
        const cut = Buffer.from(body.subarray(0, length));
        same(msg(cut));
        // The body's own length kept (too long for what is left).
        same(msg(cut).subarray(0, HEADER_LENGTH + 5 + length));
      }
    }
  });

  it('random replies, random corruption', () => {
    const value = fc.oneof(
      fc.integer(),
      fc.double(),
      fc.boolean(),
      fc.string(),
      fc.constant(null),
      fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map((n) => Long.fromBigInt(n)),
    );
    const name = fc.constantFrom(
      'ok',
      'code',
      'errorLabels',
      'writeConcernError',
      'cursor',
      'id',
      'ns',
      'x',
      'nextBatch',
    );
    const document = fc.letrec((tie) => ({
      doc: fc.array(
        fc.tuple(name, fc.oneof({ depthSize: 'small' }, value, tie('doc'), fc.array(value, { maxLength: 3 }))),
        {
          maxLength: 5,
        },
      ),
    })).doc;
    const toDoc = (pairs: unknown): Document => {
      const out: Document = {};
      for (const [key, item] of pairs as Array<[string, unknown]>) {
        out[key] =
          Array.isArray(item) && item.every((x) => Array.isArray(x) && x.length === 2) && item.length > 0
            ? toDoc(item)
            : item;
      }
      return out;
    };
    fc.assert(
      fc.property(
        document,
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 3 }),
        fc.nat(),
        (pairs, flips, cut) => {
          const body = Buffer.from(serialize(toDoc(pairs)));
          same(msg(body));
          const corrupt = Buffer.from(body);
          for (const [at, byte] of flips) corrupt[at % corrupt.length] = byte;
          same(msg(corrupt));
          same(msg(corrupt.subarray(0, cut % (corrupt.length + 1))));
        },
      ),
      { numRuns: 2000 },
    );
    expect(checked).toBeGreaterThan(20_000);
    expect(threw).toBeGreaterThan(1_000);
  });
});

describe('scanReply: a scan taken when the reply arrives, kept across an in-place rewrite', () => {
  it('each call scans anew (the forwarding layer hands its one scan along with the reply): the same facts', () => {
    const frame = msg(bodies[0]![1]);
    const first = scanReply(frame);
    const second = scanReply(frame);
    expect(second).not.toBe(first);
    expect([second.isOk(), second.cursorKey, second.error]).toEqual([first.isOk(), first.cursorKey, first.error]);
  });

  it('facts read before the tenant field is cut out in place stay true after', () => {
    const frame = msg(doc({ cursor: { nextBatch: batch, id: new Long(77), ns: 'db.c' }, ok: 1 }));
    const scan = scanReply(frame);
    const body = frame.subarray(HEADER_LENGTH + 5);
    ownFrameBody(frame, body);
    const out = hideTenantField(body, 'tenantId', { in: 'cursor' });
    expect(out!.buffer).toBe(frame.buffer); // rewritten in place: the bytes under the scan moved
    expect(scan.isOk()).toBe(true);
    expect(scan.cursorKey).toBe('db.c:77');
    expect(scan.cursor()).toEqual({ id: 77n, ns: 'db.c' });
    expect(replyIsOk(frame)).toBe(true);
  });
});
