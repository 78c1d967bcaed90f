/**
 * Reply transforms (catalogue 24, 60, 61, 64): pure functions over a raw reply body that return
 * the new body, or undefined when nothing changed so the upstream's bytes are forwarded as they
 * are. Only what changes is rebuilt: every other element, and every document of a find /
 * aggregate / getMore batch, keeps its exact bytes.
 *
 * Order when several apply (as the engine does): filterListing → mapReplyNames → scrubErrorValues.
 * filterListing works on physical names and does not rename; mapReplyNames renames.
 */
import { BsonType } from '../wire/bson-scan.js';
import {
  arrayItems,
  arrayOf,
  numberOf,
  RawDocument,
  stringOf,
  valueOf,
  type RawElement,
  type RawValue,
} from '../wire/raw-bson.js';
import type { NamespaceResolver } from '../policy/types.js';
import type { ReplyScan } from '../wire/reply-scan.js';

export const REDACTED = '<redacted>';

// ---------------------------------------------------------------------------------------------
// Small raw helpers

/** A copy of `doc` where `change` returned a new value (or null: remove); undefined when nothing changed. */
function rebuild(
  doc: RawDocument,
  change: (element: RawElement) => RawValue | null | undefined,
): RawDocument | undefined {
  let changed = false;
  const out: RawElement[] = [];
  for (const element of doc.elements) {
    const next = change(element);
    if (next === undefined) {
      out.push(element);
    } else {
      changed = true;
      if (next !== null) out.push({ name: element.name, type: next.type, value: next.value });
    }
  }
  return changed ? new RawDocument(out) : undefined;
}

function isFailed(doc: RawDocument): boolean {
  const ok = doc.get('ok');
  return ok !== undefined && numberOf(ok) === 0;
}

function stringValue(element: RawValue | undefined): string | undefined {
  if (element === undefined || element.type !== BsonType.string) return undefined;
  try {
    return stringOf(element);
  } catch {
    return undefined; // a NUL inside: not something we rewrite
  }
}

/** Maps the items of an array value; undefined when no item changed. */
function mapArray(value: RawValue, change: (item: RawValue) => RawValue | null | undefined): RawValue | undefined {
  let changed = false;
  const out: RawValue[] = [];
  for (const item of arrayItems(value)) {
    const next = change(item);
    if (next === undefined) out.push(item);
    else {
      changed = true;
      if (next !== null) out.push(next);
    }
  }
  return changed ? arrayOf(out) : undefined;
}

/** Rewrites the batch (`firstBatch` / `nextBatch`) of the reply's cursor, knowing its `ns`. */
function rewriteCursor(
  body: Uint8Array,
  change: (cursor: RawDocument, ns: string | undefined) => RawDocument | undefined,
): Uint8Array | undefined {
  const reply = RawDocument.parse(body);
  const next = rebuild(reply, (element) => {
    if (element.name !== 'cursor' || element.type !== BsonType.document) return undefined;
    const cursor = RawDocument.parse(element.value);
    return change(cursor, stringValue(cursor.get('ns')))?.toValue();
  });
  return next?.toBytes();
}

function rewriteBatch(
  cursor: RawDocument,
  change: (item: RawValue) => RawValue | null | undefined,
): RawDocument | undefined {
  return rebuild(cursor, (element) => {
    if ((element.name !== 'firstBatch' && element.name !== 'nextBatch') || element.type !== BsonType.array)
      return undefined;
    return mapArray(element, (item) => (item.type === BsonType.document ? change(item) : undefined));
  });
}

function splitNs(ns: string): { db: string; coll: string } | undefined {
  const dot = ns.indexOf('.');
  if (dot <= 0) return undefined;
  return { db: ns.slice(0, dot), coll: ns.slice(dot + 1) };
}

// ---------------------------------------------------------------------------------------------
// Error scrubbing (catalogue 60, 61)

/** Skips a value in a server-printed BSON object (`"str"`, `{…}`, `[…]`, or a bare token); returns its end. */
function skipPrintedValue(text: string, at: number): number {
  const open = text[at];
  if (open === '"' || open === "'") {
    for (let i = at + 1; i < text.length; i++) {
      if (text[i] === '\\') i++;
      else if (text[i] === open) return i + 1;
    }
    return -1;
  }
  if (open === '{' || open === '[') {
    let depth = 0;
    for (let i = at; i < text.length; i++) {
      const c = text[i];
      if (c === '"' || c === "'") {
        const end = skipPrintedValue(text, i);
        if (end < 0) return -1;
        i = end - 1;
      } else if (c === '{' || c === '[') depth++;
      else if (c === '}' || c === ']') {
        depth--;
        if (depth === 0) return i + 1;
      }
    }
    return -1;
  }
  // Bare values: numbers, ObjectId('…'), new Date(…), true, null… up to ", " or " }" at depth 0.
  let depth = 0;
  for (let i = at; i < text.length; i++) {
    const c = text[i];
    if (c === '"' || c === "'") {
      const end = skipPrintedValue(text, i);
      if (end < 0) return -1;
      i = end - 1;
    } else if (c === '(' || c === '{' || c === '[') depth++;
    else if (c === ')' || c === '}' || c === ']') {
      if (depth === 0) return i;
      depth--;
    } else if (c === ',' && depth === 0) return i;
  }
  return -1;
}

/** The field names of a printed key object `{ a: 1, b: "x" }` starting at `at`, or undefined if unreadable. */
function printedKeyNames(text: string, at: number): string[] | undefined {
  let i = at + 1;
  const names: string[] = [];
  for (;;) {
    while (text[i] === ' ') i++;
    if (text[i] === '}') return names;
    const colon = text.indexOf(':', i);
    if (colon < 0) return undefined;
    names.push(text.slice(i, colon).trim());
    i = colon + 1;
    while (text[i] === ' ') i++;
    const end = skipPrintedValue(text, i);
    if (end < 0) return undefined;
    i = end;
    while (text[i] === ' ') i++;
    if (text[i] === ',') i++;
    else if (text[i] !== '}') return undefined;
  }
}

const DUP_KEY = 'dup key: ';

/** Conversion and evaluation errors that quote the input (catalogue 60), as [pattern, replacement]. */
const VALUE_QUOTING: ReadonlyArray<readonly [RegExp, string]> = [
  // $convert / $toInt / $toDouble / $toDecimal / $toObjectId / $toDate…: the input, then the reason (which may quote it too).
  [
    /Failed to parse (\w+) [\s\S]* in \$convert with no onError value[\s\S]*$/,
    `Failed to parse $1 ${REDACTED} in $convert with no onError value`,
  ],
  [/Failed to parse (\w+) '[\s\S]*$/, `Failed to parse $1 ${REDACTED}`],
  // $dateFromString / $toDate on strings: "Error parsing date string '…'; 0: Unexpected character '…'".
  [/Error parsing date string[\s\S]*$/, `Error parsing date string ${REDACTED}`],
  // "…, found <type> with value <value>" ($dateFromParts, $dateFromString and other expressions).
  [/with value [\s\S]*$/, `with value ${REDACTED}`],
  // Oversized documents: "… First element: _id: <value>".
  [/First element: [\s\S]*$/, `First element: ${REDACTED}`],
];

/**
 * A server message with every value it quotes removed: duplicate-key messages keep the index and
 * the key's field names (`dup key: { email: <redacted> }`), conversion errors keep what failed.
 * `keyNames` (from the error's `keyPattern`) is preferred over reading names from the text.
 */
export function scrubMessage(message: string, keyNames?: readonly string[]): string {
  let text = message;
  const dup = text.indexOf(DUP_KEY);
  if (dup >= 0) {
    const at = dup + DUP_KEY.length;
    const names = keyNames ?? (text[at] === '{' ? printedKeyNames(text, at) : undefined);
    const fields = names === undefined ? REDACTED : names.map((name) => `${name}: ${REDACTED}`).join(', ');
    text = `${text.slice(0, at)}{ ${fields} }`;
  }
  for (const [pattern, replacement] of VALUE_QUOTING) text = text.replace(pattern, replacement);
  return text;
}

function keyPatternNames(doc: RawDocument): string[] | undefined {
  const pattern = doc.get('keyPattern');
  if (pattern === undefined || pattern.type !== BsonType.document) return undefined;
  return RawDocument.parse(pattern.value).names;
}

/** Fields that carry the values of an error (E11000 `keyValue`). */
const VALUE_FIELDS = new Set(['keyValue']);

/** An error document (top level when ok:0, a writeErrors entry, a writeConcernError) scrubbed. */
function scrubErrorDocument(doc: RawDocument): RawDocument | undefined {
  const names = keyPatternNames(doc);
  return rebuild(doc, (element) => {
    if (VALUE_FIELDS.has(element.name)) return null;
    if (element.name === 'errmsg' || element.name === '$err') {
      const message = stringValue(element);
      if (message === undefined) return undefined;
      const scrubbed = scrubMessage(message, names);
      return scrubbed === message ? undefined : valueOf(scrubbed);
    }
    return undefined;
  });
}

function scrubNestedDocument(value: RawValue): RawValue | undefined {
  if (value.type !== BsonType.document) return undefined;
  return scrubErrorDocument(RawDocument.parse(value.value))?.toValue();
}

export interface ScrubOptions {
  /**
   * bulkWrite (8.0) replies carry per-operation results, errors included, in the cursor batch.
   * Only for those: a find's documents are never touched.
   */
  bulkWriteCursor?: boolean;
}

/**
 * Removes values from error messages: the top-level `errmsg` / `keyValue` of an ok:0 reply,
 * every `writeErrors` entry, `writeConcernError`, mongos `raw` per-shard replies and, with
 * `bulkWriteCursor`, failed bulkWrite results. Returns undefined when nothing changed.
 */
export function scrubErrorValues(
  body: Uint8Array,
  options: ScrubOptions = {},
  scan?: ReplyScan,
): Uint8Array | undefined {
  // The reply's scan (of these top-level elements) says there is nothing to scrub: not failed, no
  // writeErrors, writeConcernError, raw, nor a bulkWrite cursor. Only a body the walk below would
  // parse (complete, ASCII names): any other takes it, and fails or answers as before.
  if (
    scan?.wellFormed === true &&
    scan.errorCode() === undefined &&
    !scan.has('writeErrors') &&
    !scan.has('writeConcernError') &&
    !scan.has('raw') &&
    !(options.bulkWriteCursor === true && scan.has('cursor'))
  )
    return undefined;
  const reply = RawDocument.parse(body);
  const failed = isFailed(reply);
  const top = failed ? (scrubErrorDocument(reply) ?? reply) : reply;
  const next = rebuild(top, (element) => {
    switch (element.name) {
      case 'writeErrors':
        return element.type === BsonType.array ? mapArray(element, scrubNestedDocument) : undefined;
      case 'writeConcernError':
        return scrubNestedDocument(element);
      case 'raw': // mongos: { "<shard>": <reply> }
        if (element.type !== BsonType.document) return undefined;
        return rebuild(RawDocument.parse(element.value), (shard) => {
          if (shard.type !== BsonType.document) return undefined;
          const scrubbed = scrubErrorValues(shard.value, options);
          return scrubbed === undefined ? undefined : { type: BsonType.document, value: scrubbed };
        })?.toValue();
      case 'cursor':
        if (options.bulkWriteCursor !== true || element.type !== BsonType.document) return undefined;
        return rewriteBatch(RawDocument.parse(element.value), (item) => {
          const result = RawDocument.parse(item.value);
          return isFailed(result) ? scrubErrorDocument(result)?.toValue() : undefined;
        })?.toValue();
      default:
        return undefined;
    }
  });
  if (next !== undefined) return next.toBytes();
  return top === reply ? undefined : top.toBytes();
}

// ---------------------------------------------------------------------------------------------
// Names (catalogue 64)

/**
 * The pseudo-collections of listing cursors, whatever the server's spelling: MongoDB says
 * `$cmd.listCollections` and `$cmd.listIndexes.<coll>`, DocumentDB `$cmd.ListCollections`
 * (docs/upstreams.md). No real collection name starts with `$`, so ignoring case is safe.
 */
const isListCollections = (coll: string): boolean => coll.toLowerCase() === '$cmd.listcollections';
const LIST_INDEXES_PREFIX = '$cmd.listindexes.';
const isListIndexes = (coll: string): boolean => coll.toLowerCase().startsWith(LIST_INDEXES_PREFIX);

function clientNs(resolver: NamespaceResolver, ns: string): string | undefined {
  const parts = splitNs(ns);
  if (parts === undefined) return undefined;
  const { db, coll } = parts;
  if (isListIndexes(coll)) {
    const mapped = resolver.toClient(db, coll.slice(LIST_INDEXES_PREFIX.length));
    const prefix = coll.slice(0, LIST_INDEXES_PREFIX.length); // the server's own spelling
    return mapped?.coll === undefined ? undefined : `${mapped.db}.${prefix}${mapped.coll}`;
  }
  if (coll.startsWith('$cmd.')) {
    const mapped = resolver.toClient(db);
    return mapped === undefined ? undefined : `${mapped.db}.${coll}`;
  }
  const mapped = resolver.toClient(db, coll);
  return mapped?.coll === undefined ? undefined : `${mapped.db}.${mapped.coll}`;
}

/** "E11000 duplicate key error collection: <db.coll> index: …": the physical namespace mapped back. */
function mapMessageNames(message: string, resolver: NamespaceResolver, known: readonly NamespacePair[]): string {
  let text = message.replace(/(collection: )(\S+)/g, (whole, prefix: string, ns: string) => {
    const mapped = clientNs(resolver, ns);
    return mapped === undefined ? whole : `${prefix}${mapped}`;
  });
  // DbAlreadyExists (13297, MongoDB and DocumentDB): both names are physical database names; one
  // that is not the tenant's is not named at all.
  text = text.replace(
    /(already have: \[)([^\]]*)(\] trying to create \[)([^\]]*)(\])/,
    (_whole, a: string, have: string, b: string, create: string, c: string) =>
      `${a}${resolver.toClient(have)?.db ?? 'another database'}${b}${resolver.toClient(create)?.db ?? 'another database'}${c}`,
  );
  for (const pair of known) {
    if (pair.physical !== pair.client) text = text.split(pair.physical).join(pair.client);
  }
  return text;
}

export interface NamespacePair {
  /** `db.coll` as on the server. */
  physical: string;
  /** `db.coll` as the client named it. */
  client: string;
}

export interface MapNamesOptions {
  /** Namespaces of the request: their physical spelling is replaced in error messages too. */
  namespaces?: readonly NamespacePair[];
}

function mapErrorNames(
  doc: RawDocument,
  resolver: NamespaceResolver,
  known: readonly NamespacePair[],
): RawDocument | undefined {
  return rebuild(doc, (element) => {
    if (element.name !== 'errmsg') return undefined;
    const message = stringValue(element);
    if (message === undefined) return undefined;
    const mapped = mapMessageNames(message, resolver, known);
    return mapped === message ? undefined : valueOf(mapped);
  });
}

/**
 * Physical names back to the client's (database-per-tenant, collection-prefix): the cursor's
 * `ns`, listCollections entry `name`s (entries that are not the tenant's are dropped),
 * listIndexes / idIndex `ns` of old servers, and namespaces in error messages. Returns undefined
 * when nothing changed.
 */
export function mapReplyNames(
  body: Uint8Array,
  resolver: NamespaceResolver,
  options: MapNamesOptions = {},
  scan?: ReplyScan,
): Uint8Array | undefined {
  if (scan !== undefined && namesUnchanged(scan, resolver)) return undefined;
  const known = options.namespaces ?? [];
  const reply = RawDocument.parse(body);
  const next = rebuild(reply, (element) => {
    if (element.name === 'errmsg') return mapErrorNames(reply, resolver, known)?.get('errmsg');
    if (element.name === 'writeErrors' && element.type === BsonType.array) {
      return mapArray(element, (item) => mapErrorNames(RawDocument.parse(item.value), resolver, known)?.toValue());
    }
    if (element.name === 'writeConcernError' && element.type === BsonType.document) {
      return mapErrorNames(RawDocument.parse(element.value), resolver, known)?.toValue();
    }
    if (element.name === 'databases' && element.type === BsonType.array) {
      // listDatabases: physical names back to the client's; anything not the tenant's is dropped.
      return mapArray(element, (item) => {
        const entry = RawDocument.parse(item.value);
        const name = stringValue(entry.get('name'));
        const client = name === undefined ? undefined : resolver.toClient(name);
        if (client === undefined) return null;
        return client.db === name ? undefined : entry.with('name', valueOf(client.db)).toValue();
      });
    }
    if (element.name !== 'cursor' || element.type !== BsonType.document) return undefined;
    const cursor = RawDocument.parse(element.value);
    const ns = stringValue(cursor.get('ns'));
    if (ns === undefined) return undefined;
    const parts = splitNs(ns);
    let current = cursor;
    const mappedNs = clientNs(resolver, ns);
    if (mappedNs !== undefined && mappedNs !== ns) current = current.with('ns', valueOf(mappedNs));
    if (parts !== undefined && isListCollections(parts.coll)) {
      current =
        rewriteBatch(current, (item) => mapCollectionEntry(RawDocument.parse(item.value), parts.db, resolver)) ??
        current;
    } else if (parts !== undefined && isListIndexes(parts.coll)) {
      current = rewriteBatch(current, (item) => mapNsField(RawDocument.parse(item.value), resolver)) ?? current;
    }
    return current === cursor ? undefined : current.toValue();
  });
  return next?.toBytes();
}

/**
 * What mapReplyNames would answer undefined for, read from the reply's scan: a body it parses
 * (complete, ASCII names) without errmsg, writeErrors, writeConcernError or databases, and either
 * no cursor, a cursor that is not a document, or one cursor document (complete, ASCII names)
 * whose `ns` is unreadable or maps to itself and is not a listing's. False: not known, the walk decides.
 */
function namesUnchanged(scan: ReplyScan, resolver: NamespaceResolver): boolean {
  if (!scan.wellFormed) return false;
  if (scan.has('errmsg') || scan.has('writeErrors') || scan.has('writeConcernError') || scan.has('databases'))
    return false;
  if (!scan.has('cursor')) return true;
  if (!scan.once('cursor')) return false;
  if (!scan.cursorIsDocument) return true;
  if (!scan.cursorWellFormed) return false;
  const ns = scan.cursorNs;
  if (ns === undefined) return true;
  const parts = splitNs(ns);
  if (parts !== undefined && (isListCollections(parts.coll) || isListIndexes(parts.coll))) return false;
  const mapped = clientNs(resolver, ns);
  return mapped === undefined || mapped === ns;
}

/** A listCollections entry renamed for the client; null (dropped) when it is not the tenant's. */
function mapCollectionEntry(entry: RawDocument, db: string, resolver: NamespaceResolver): RawValue | null | undefined {
  const name = stringValue(entry.get('name'));
  if (name === undefined) return null;
  const mapped = resolver.toClient(db, name);
  if (mapped?.coll === undefined) return null;
  let next = entry;
  if (mapped.coll !== name) next = next.with('name', valueOf(mapped.coll));
  const idIndex = entry.get('idIndex');
  if (idIndex !== undefined && idIndex.type === BsonType.document) {
    const renamed = mapNsField(RawDocument.parse(idIndex.value), resolver);
    if (renamed !== undefined) next = next.with('idIndex', renamed);
  }
  return next === entry ? undefined : next.toValue();
}

/** An index spec's `ns` (servers before 4.4) mapped back. */
function mapNsField(spec: RawDocument, resolver: NamespaceResolver): RawValue | undefined {
  const ns = stringValue(spec.get('ns'));
  if (ns === undefined) return undefined;
  const mapped = clientNs(resolver, ns);
  return mapped === undefined || mapped === ns ? undefined : spec.with('ns', valueOf(mapped)).toValue();
}

// ---------------------------------------------------------------------------------------------
// Listings (catalogue 5, 24)

/**
 * listCollections / listIndexes filtered to what the tenant may see (physical names in, physical
 * names out: mapReplyNames renames afterwards).
 * - collections: drops `system.*`, names the resolver does not map back to the tenant, and names
 *   `isAllowed` (given the client's collection name) rejects; empties `options` (validators, view
 *   pipelines, collation…) and removes `info.uuid`.
 * - indexes: drops indexes whose name `isAllowed` rejects.
 * Returns undefined when nothing changed.
 */
export function filterListing(
  body: Uint8Array,
  kind: 'collections' | 'indexes',
  resolver: NamespaceResolver,
  isAllowed: (name: string) => boolean = () => true,
): Uint8Array | undefined {
  return rewriteCursor(body, (cursor, ns) => {
    const db = ns === undefined ? undefined : splitNs(ns)?.db;
    return rewriteBatch(cursor, (item) => {
      const entry = RawDocument.parse(item.value);
      const name = stringValue(entry.get('name'));
      if (name === undefined) return null;
      if (kind === 'indexes') {
        if (!isAllowed(name)) return null;
        // A partial filter's literals may name other tenants' values (catalogue 23-24).
        return rebuild(entry, (field) => (field.name === 'partialFilterExpression' ? null : undefined))?.toValue();
      }
      if (db === undefined || name.startsWith('system.')) return null;
      const client = resolver.toClient(db, name);
      if (client?.coll === undefined || !isAllowed(client.coll)) return null;
      return stripCollectionEntry(entry)?.toValue();
    });
  });
}

const EMPTY_DOCUMENT: RawValue = { type: BsonType.document, value: Uint8Array.of(5, 0, 0, 0, 0) };

function stripCollectionEntry(entry: RawDocument): RawDocument | undefined {
  return rebuild(entry, (element) => {
    if (element.name === 'options')
      return element.type === BsonType.document && element.value.length === 5 ? undefined : EMPTY_DOCUMENT;
    if (element.name === 'info' && element.type === BsonType.document) {
      return rebuild(RawDocument.parse(element.value), (field) =>
        field.name === 'uuid' ? null : undefined,
      )?.toValue();
    }
    return undefined;
  });
}
