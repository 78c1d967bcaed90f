/**
 * What forwarding needs to know about a command it sends upstream, read from the (already
 * rewritten) body bytes without decoding the rest: the session and transaction fields for
 * pinning and retry decisions, `$readPreference` for server selection, `maxTimeMS` for the retry
 * deadline, the cursor a getMore/killCursors continues. And, from a reply, the cursor it opened.
 * Pure: unreadable fields are simply treated as absent (the server judges the command itself).
 */
import {
  BsonType,
  type BsonElement,
  elements,
  firstElement,
  readInt64,
  readNumber,
  readString,
  subDocument,
} from '../wire/bson-scan.js';
import { deserialize, type Document } from '../wire/bson.js';
import { RawDocument, bsonElementOf, type RawElement } from '../wire/raw-bson.js';
import { scanReply } from '../wire/reply-scan.js';
import type { RetryCommand } from './retry.js';

export interface CommandTraits extends RetryCommand {
  db: string;
  /** The lsid as a map key (hex of its BSON bytes), when the body has one. */
  lsid: string | undefined;
  /** `startTransaction: true`: the first command of a transaction. */
  startTransaction: boolean;
  /** The body's `$readPreference`, decoded (absent: primary). */
  readPreference: Document | undefined;
  /** The body's `maxTimeMS`, when positive. */
  maxTimeMS: number | undefined;
  /** The cursor a getMore / killCursors names, as `ns:id` (see cursorKey); a killCursors' first. */
  cursor: string | undefined;
  /** Every cursor a getMore / killCursors names, as `ns:id`. */
  cursors: readonly string[];
}

export function cursorKey(ns: string, id: bigint): string {
  return `${ns}:${id.toString()}`;
}

/** Reads the traits of a command body (an OP_MSG kind-0 section). */
export function commandTraits(body: Uint8Array): CommandTraits {
  return traitsOf(RawDocument.parse(body).elements);
}

/** The top-level fields traitsOf reads. */
const TRAIT_FIELDS: ReadonlySet<string> = new Set([
  '$db',
  'lsid',
  'txnNumber',
  'autocommit',
  'startTransaction',
  '$readPreference',
  'maxTimeMS',
  'collection',
  'cursors',
  'pipeline',
]);

/**
 * The traits of a command body already split into its top-level elements (`RawDocument.elements`):
 * what the client connection decoded once, or the isolation engine's rewritten body.
 */
export function traitsOf(fields: readonly RawElement[]): CommandTraits {
  const first = fields[0];
  const name = first?.name ?? '';
  const traits: CommandTraits = {
    name,
    db: '',
    hasTxnNumber: false,
    inTransaction: false,
    pipelineWrites: false,
    lsid: undefined,
    startTransaction: false,
    readPreference: undefined,
    maxTimeMS: undefined,
    cursor: undefined,
    cursors: [],
  };
  let collection: string | undefined;
  let cursorIds: bigint[] = [];
  for (const field of fields) {
    // Only the fields read below are looked at: a spliced value (a client's filter) stays unjoined.
    if (!TRAIT_FIELDS.has(field.name)) continue;
    const { value } = field;
    const element = bsonElementOf(field);
    try {
      switch (field.name) {
        case '$db':
          traits.db = readString(value, element);
          break;
        case 'lsid':
          // A view of the bytes (no copy) to read them as hex.
          if (field.type === BsonType.document)
            traits.lsid = Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex');
          break;
        case 'txnNumber':
          traits.hasTxnNumber = true;
          break;
        case 'autocommit':
          traits.inTransaction = field.type === BsonType.boolean && value[0] === 0;
          break;
        case 'startTransaction':
          traits.startTransaction = field.type === BsonType.boolean && value[0] === 1;
          break;
        case '$readPreference':
          if (field.type === BsonType.document) traits.readPreference = deserialize(value);
          break;
        case 'maxTimeMS': {
          const ms = readNumber(value, element);
          if (ms > 0) traits.maxTimeMS = ms;
          break;
        }
        case 'collection':
          if (field.type === BsonType.string) collection = readString(value, element);
          break;
        case 'cursors':
          if (field.type === BsonType.array) cursorIds = int64Items(value);
          break;
        case 'pipeline':
          if (field.type === BsonType.array) traits.pipelineWrites = pipelineWrites(value);
          break;
        default:
          break;
      }
    } catch {
      // A malformed field: the server will say so; forwarding treats it as absent.
    }
  }
  try {
    if (name === 'getMore' && first !== undefined && first.type === BsonType.int64 && collection !== undefined) {
      traits.cursor = cursorKey(`${traits.db}.${collection}`, readInt64(first.value, bsonElementOf(first)));
      traits.cursors = [traits.cursor];
    } else if (name === 'killCursors' && first !== undefined && first.type === BsonType.string) {
      const ns = `${traits.db}.${readString(first.value, bsonElementOf(first))}`;
      traits.cursors = cursorIds.map((id) => cursorKey(ns, id));
      traits.cursor = traits.cursors[0];
    }
  } catch {
    // as above
  }
  return traits;
}

/**
 * The cursor a reply opened (`cursor.id` non-zero with `cursor.ns`), as a cursorKey. Read from the
 * reply's one scan (wire/reply-scan.ts): the cursor homes, the server set and the engine share it.
 */
export function replyCursor(reply: Buffer): string | undefined {
  return scanReply(reply).cursorKey;
}

function int64Items(array: Uint8Array): bigint[] {
  return elements(array)
    .filter((item: BsonElement) => item.type === BsonType.int64)
    .map((item) => readInt64(array, item));
}

/** Whether the last stage of a pipeline is `$out` or `$merge` (they may only come last). */
function pipelineWrites(array: Uint8Array): boolean {
  const stages = elements(array);
  const last = stages[stages.length - 1];
  if (last === undefined || last.type !== BsonType.document) return false;
  const stage = firstElement(subDocument(array, last));
  return stage?.name === '$out' || stage?.name === '$merge';
}
