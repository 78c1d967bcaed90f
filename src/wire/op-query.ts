/**
 * Legacy OP_QUERY (2004) and OP_REPLY (1), kept only for the first hello/isMaster of drivers
 * that still open with OP_QUERY. Spec: manual, "Legacy Opcodes".
 *
 *   OP_QUERY: header | int32 flags | cstring fullCollectionName | int32 numberToSkip |
 *             int32 numberToReturn | document query | [document returnFieldsSelector]
 *   OP_REPLY: header | int32 responseFlags | int64 cursorID | int32 startingFrom |
 *             int32 numberReturned | documents...
 */

import { BsonValidationError, ErrorCodes, WireProtocolError } from '../errors.js';
import {
  BsonType,
  type BsonElement,
  elements,
  firstElement,
  isValidUtf8,
  subDocument,
  validateDocument,
} from './bson-scan.js';
import { HEADER_LENGTH, OpCode } from './constants.js';
import { readHeader, readInt32LE, writeHeader, writeInt32LE } from './header.js';

export interface OpQuery {
  requestId: number;
  responseTo: number;
  flags: number;
  fullCollectionName: string;
  numberToSkip: number;
  numberToReturn: number;
  /** A view into the frame. */
  query: Buffer;
  returnFieldsSelector: Buffer | null;
}

export interface ParseOpQueryOptions {
  maxBsonDepth: number;
  /** Reject keys repeated at any depth; default true (see ParseOpMsgOptions). */
  rejectDuplicateKeys?: boolean;
}

function fatal(message: string): never {
  throw new WireProtocolError(ErrorCodes.ProtocolError, message, true);
}

function documentAt(frame: Buffer, offset: number, what: string, options: ParseOpQueryOptions): Buffer {
  if (offset + 4 > frame.length) fatal(`${what}: document length runs past the message`);
  const length = readInt32LE(frame, offset);
  if (length < 5 || offset + length > frame.length) {
    fatal(`${what}: document length ${length} does not fit in the message`);
  }
  try {
    validateDocument(frame.subarray(0, offset + length), offset, {
      maxDepth: options.maxBsonDepth,
      rejectDuplicateKeys: options.rejectDuplicateKeys ?? true,
    });
  } catch (error) {
    if (error instanceof BsonValidationError) {
      throw new WireProtocolError(error.code, `${what}: ${error.message}`, false, { cause: error });
    }
    throw error;
  }
  return frame.subarray(offset, offset + length);
}

/** Parses an OP_QUERY frame; its parts must account for every byte of the message. */
export function parseOpQuery(frame: Buffer, options: ParseOpQueryOptions): OpQuery {
  const header = readHeader(frame);
  if (header.opCode !== OpCode.OP_QUERY) fatal(`opCode ${header.opCode} is not OP_QUERY`);
  if (header.messageLength !== frame.length) {
    fatal(`messageLength ${header.messageLength} does not match the ${frame.length}-byte frame`);
  }
  let pos = HEADER_LENGTH;
  if (pos + 4 > frame.length) fatal('OP_QUERY too short for flags');
  const flags = readInt32LE(frame, pos);
  pos += 4;
  const nameEnd = frame.indexOf(0, pos);
  if (nameEnd === -1) fatal('OP_QUERY fullCollectionName is not terminated');
  if (!isValidUtf8(frame, pos, nameEnd)) {
    throw new WireProtocolError(ErrorCodes.InvalidNamespace, 'OP_QUERY fullCollectionName is not valid UTF-8', false);
  }
  const fullCollectionName = frame.toString('utf8', pos, nameEnd);
  pos = nameEnd + 1;
  if (pos + 8 > frame.length) fatal('OP_QUERY too short for numberToSkip and numberToReturn');
  const numberToSkip = readInt32LE(frame, pos);
  const numberToReturn = readInt32LE(frame, pos + 4);
  pos += 8;
  const query = documentAt(frame, pos, 'OP_QUERY query', options);
  pos += query.length;
  let returnFieldsSelector: Buffer | null = null;
  if (pos < frame.length) {
    returnFieldsSelector = documentAt(frame, pos, 'OP_QUERY returnFieldsSelector', options);
    pos += returnFieldsSelector.length;
  }
  if (pos !== frame.length) fatal(`OP_QUERY has ${frame.length - pos} trailing bytes`);
  return {
    requestId: header.requestId,
    responseTo: header.responseTo,
    flags,
    fullCollectionName,
    numberToSkip,
    numberToReturn,
    query,
    returnFieldsSelector,
  };
}

export interface LegacyCommand {
  /** The command document: the query itself, or what `$query`/`query` wraps. */
  command: Uint8Array;
  /** The command's first key. */
  name: string;
  /** True when the command came wrapped in `$query` or `query`. */
  wrapped: boolean;
  /** Top-level elements of the query besides the wrapper (e.g. `$readPreference`), in order. */
  modifiers: BsonElement[];
}

const WRAPPER_KEYS: ReadonlySet<string> = new Set(['$query', 'query']);

/**
 * Reads a legacy command: when the query's first key is `$query` or `query` (the server's rule
 * for OP_QUERY commands carrying read preference), the command is that embedded document.
 * Throws a non-fatal WireProtocolError for an empty command or a wrapper that is not a document.
 */
export function unwrapLegacyCommand(query: Uint8Array): LegacyCommand {
  const all = elements(query);
  const first = all[0];
  if (first === undefined) throw new WireProtocolError(ErrorCodes.BadValue, 'OP_QUERY command is empty', false);
  if (!WRAPPER_KEYS.has(first.name))
    return { command: query, name: first.name, wrapped: false, modifiers: all.slice(1) };
  if (first.type !== BsonType.document) {
    throw new WireProtocolError(ErrorCodes.TypeMismatch, `OP_QUERY ${first.name} must be a document`, false);
  }
  const command = subDocument(query, first);
  const inner = firstElement(command);
  if (inner === null) throw new WireProtocolError(ErrorCodes.BadValue, 'OP_QUERY command is empty', false);
  return { command, name: inner.name, wrapped: true, modifiers: all.slice(1) };
}

export interface EncodeOpReplyInit {
  requestId: number;
  responseTo: number;
  responseFlags?: number;
  cursorId?: bigint;
  startingFrom?: number;
  documents: readonly Uint8Array[];
}

const OP_REPLY_FIELDS_LENGTH = 20;

/** Builds an OP_REPLY frame in one allocation. */
export function encodeOpReply(init: EncodeOpReplyInit): Buffer {
  let length = HEADER_LENGTH + OP_REPLY_FIELDS_LENGTH;
  for (const doc of init.documents) length += doc.length;
  if (length > 0x7fffffff) throw new RangeError(`OP_REPLY of ${length} bytes exceeds the int32 length field`);
  const out = Buffer.allocUnsafe(length);
  let pos = HEADER_LENGTH;
  writeInt32LE(out, pos, init.responseFlags ?? 0);
  out.writeBigInt64LE(BigInt.asIntN(64, init.cursorId ?? 0n), pos + 4);
  writeInt32LE(out, pos + 12, init.startingFrom ?? 0);
  writeInt32LE(out, pos + 16, init.documents.length);
  pos += OP_REPLY_FIELDS_LENGTH;
  for (const doc of init.documents) {
    out.set(doc, pos);
    pos += doc.length;
  }
  writeHeader(out, {
    messageLength: pos,
    requestId: init.requestId,
    responseTo: init.responseTo,
    opCode: OpCode.OP_REPLY,
  });
  return out;
}

export interface OpReply {
  requestId: number;
  responseTo: number;
  responseFlags: number;
  cursorId: bigint;
  startingFrom: number;
  documents: Buffer[];
}

/** Parses an OP_REPLY frame (e.g. a legacy server's answer); documents are validated views. */
export function parseOpReply(frame: Buffer, options: ParseOpQueryOptions): OpReply {
  const header = readHeader(frame);
  if (header.opCode !== OpCode.OP_REPLY) fatal(`opCode ${header.opCode} is not OP_REPLY`);
  if (header.messageLength !== frame.length) {
    fatal(`messageLength ${header.messageLength} does not match the ${frame.length}-byte frame`);
  }
  if (frame.length < HEADER_LENGTH + OP_REPLY_FIELDS_LENGTH) fatal('OP_REPLY too short');
  const numberReturned = readInt32LE(frame, HEADER_LENGTH + 16);
  const documents: Buffer[] = [];
  let pos = HEADER_LENGTH + OP_REPLY_FIELDS_LENGTH;
  while (pos < frame.length) {
    const doc = documentAt(frame, pos, 'OP_REPLY document', options);
    documents.push(doc);
    pos += doc.length;
  }
  if (documents.length !== numberReturned) {
    fatal(`OP_REPLY numberReturned ${numberReturned} does not match its ${documents.length} documents`);
  }
  return {
    requestId: header.requestId,
    responseTo: header.responseTo,
    responseFlags: readInt32LE(frame, HEADER_LENGTH),
    cursorId: frame.readBigInt64LE(HEADER_LENGTH + 4),
    startingFrom: readInt32LE(frame, HEADER_LENGTH + 12),
    documents,
  };
}
