/**
 * OP_MSG (opcode 2013) codec. Spec: mongodb/specifications source/message/OP_MSG.md.
 *
 *   header | uint32 flagBits | sections... | [uint32 CRC-32C if checksumPresent]
 *   section kind 0: one BSON document (the command body)
 *   section kind 1: int32 size | cstring identifier | BSON documents... (size counts itself)
 *
 * `parseOpMsg` applies the server's rules (mongo src/mongo/rpc/op_msg.cpp) in the server's
 * order, so the proxy never accepts a message the server would split or read differently.
 * Errors the server answers with a reply are `fatal: false`; errors in its
 * ConnectionFatalMessageParseError category (IllegalOpMsgFlag, TooManyDocumentSequences,
 * ChecksumMismatch), unknown section kinds and framing lies are `fatal: true`.
 */

import { BsonValidationError, ErrorCodes, ProxyError, WireProtocolError } from '../errors.js';
import {
  BsonType,
  DocumentValidation,
  findElement,
  firstElement,
  isValidUtf8,
  subDocument,
  validateDocumentFacts,
} from './bson-scan.js';
import type { CopyJob } from './copy-job.js';
import { computeChecksum, storedChecksum, writeChecksum } from './crc32c.js';
import {
  DEFAULT_MAX_BSON_OBJECT_SIZE,
  HEADER_LENGTH,
  OP_MSG_KNOWN_FLAGS,
  OP_MSG_REQUIRED_BITS_MASK,
  OpCode,
  OpMsgFlag,
  SectionKind,
} from './constants.js';
import { readHeader, readInt32LE, writeHeader, writeInt32LE } from './header.js';

export interface DocumentSequence {
  identifier: string;
  documents: Buffer[];
}

/**
 * A parsed OP_MSG. `body` and sequence documents are views into the frame (no copies).
 * `flagBits` has unknown optional bits and checksumPresent cleared: the checksum is verified and
 * dropped, and `encodeOpMsg({ checksum: true })` computes a fresh one.
 */
export interface OpMsg {
  requestId: number;
  responseTo: number;
  flagBits: number;
  body: Buffer;
  sequences: DocumentSequence[];
}

export interface ParseOpMsgOptions {
  /** Deepest allowed document nesting (server default: 200 levels below the top). */
  maxBsonDepth: number;
  /**
   * Reject a key repeated in any document at any depth (catalogue G3: the server's IDL parsers
   * and hand-written readers disagree on which copy wins). Default true; pass false only for
   * trusted bytes such as upstream replies.
   */
  rejectDuplicateKeys?: boolean;
  /** Largest body or sequence document; default 16 MiB + 16 KiB, the server's internal limit. */
  maxBsonObjectSize?: number;
  /**
   * Documents of this frame already validated with the same options (opMsgDocuments, in
   * slices): their outcome is taken instead of validating them again.
   */
  prevalidated?: PrevalidatedDocuments;
}

/**
 * The outcome of validating one document of a frame ahead of parseOpMsgFacts, by its offset in
 * the frame: `sectionEnd` is the length of the view it was validated in (the end of its section),
 * which parseOpMsgFacts must be validating it in for the outcome to count.
 */
export type PrevalidatedDocuments = Map<number, { sectionEnd: number; facts: number; error?: unknown }>;

/** BSONObjMaxInternalSize: user documents may grow by 16 KiB of server-added fields. */
export const DEFAULT_MAX_INTERNAL_BSON_SIZE = DEFAULT_MAX_BSON_OBJECT_SIZE + 16 * 1024;

const FLAGS_LENGTH = 4;
const CHECKSUM_LENGTH = 4;
/** The server allows at most two kind-1 sections (op_msg.cpp). */
const MAX_DOCUMENT_SEQUENCES = 2;
/** Kind 2 carries a multitenancy security token; the server refuses it unless multitenancy is on. */
const SECURITY_TOKEN_SECTION_KIND = 2;

function fatal(code: number, message: string): never {
  throw new WireProtocolError(code, message, true);
}

function reject(code: number, message: string): never {
  throw new WireProtocolError(code, message, false);
}

interface DocumentRules {
  maxDepth: number;
  rejectDuplicateKeys: boolean;
  maxSize: number;
}

/** The rules every document of an OP_MSG is validated by. */
function documentRules(options: ParseOpMsgOptions): DocumentRules {
  return {
    maxDepth: options.maxBsonDepth,
    rejectDuplicateKeys: options.rejectDuplicateKeys ?? true,
    maxSize: options.maxBsonObjectSize ?? DEFAULT_MAX_INTERNAL_BSON_SIZE,
  };
}

/**
 * Validates one document, turning a BsonValidationError into a non-fatal WireProtocolError;
 * returns the DocumentFact bits of what validation saw.
 */
function validateIn(
  section: Buffer,
  offset: number,
  what: string,
  rules: DocumentRules,
  prevalidated: PrevalidatedDocuments | undefined,
): number {
  const length = readInt32LE(section, offset);
  if (length > rules.maxSize) {
    reject(
      ErrorCodes.BSONObjectTooLarge,
      `${what}: document of ${length} bytes exceeds the ${rules.maxSize}-byte limit`,
    );
  }
  try {
    const known = prevalidated?.get(offset);
    if (known === undefined || known.sectionEnd !== section.length)
      return validateDocumentFacts(section, offset, rules);
    if (known.error !== undefined) throw known.error;
    return known.facts;
  } catch (error) {
    if (error instanceof BsonValidationError) {
      throw new WireProtocolError(error.code, `${what}: ${error.message}`, false, { cause: error });
    }
    throw error;
  }
}

/** Length of the document at `offset`, which must lie entirely before `limit` (else fatal). */
function documentLengthWithin(buf: Buffer, offset: number, limit: number, what: string): number {
  if (offset + 4 > limit) fatal(ErrorCodes.ProtocolError, `${what}: document length runs past its section`);
  const length = readInt32LE(buf, offset);
  if (length < 5 || offset + length > limit) {
    fatal(ErrorCodes.ProtocolError, `${what}: document length ${length} does not fit in its section`);
  }
  return length;
}

/** What validation saw in each document of a parsed OP_MSG (bson-scan's DocumentFact bits). */
export interface OpMsgFacts {
  body: number;
  /** Per sequence, in the order of `OpMsg.sequences`: one entry per document. */
  sequences: Uint8Array[];
}

/** Parses and validates an OP_MSG frame (header included). */
export function parseOpMsg(frame: Buffer, options: ParseOpMsgOptions): OpMsg {
  return parseOpMsgFacts(frame, options).msg;
}

/** parseOpMsg, also returning what validation saw in each document (for one-pass rewriting). */
export function parseOpMsgFacts(frame: Buffer, options: ParseOpMsgOptions): { msg: OpMsg; facts: OpMsgFacts } {
  const header = readHeader(frame);
  if (header.opCode !== OpCode.OP_MSG) fatal(ErrorCodes.ProtocolError, `opCode ${header.opCode} is not OP_MSG`);
  if (header.messageLength !== frame.length) {
    fatal(
      ErrorCodes.ProtocolError,
      `messageLength ${header.messageLength} does not match the ${frame.length}-byte frame`,
    );
  }
  if (frame.length < HEADER_LENGTH + FLAGS_LENGTH) fatal(ErrorCodes.ProtocolError, 'OP_MSG too short for flagBits');

  const rawFlags = readInt32LE(frame, HEADER_LENGTH) >>> 0;
  if ((rawFlags & ~OP_MSG_KNOWN_FLAGS & OP_MSG_REQUIRED_BITS_MASK) !== 0) {
    fatal(
      ErrorCodes.IllegalOpMsgFlag,
      `message contains illegal flags value: 0b${rawFlags.toString(2).padStart(32, '0')}`,
    );
  }
  const hasChecksum = (rawFlags & OpMsgFlag.checksumPresent) !== 0;
  let end = frame.length;
  if (hasChecksum) {
    // The server requires at least one byte of sections besides the checksum (51251).
    if (end - HEADER_LENGTH - FLAGS_LENGTH <= CHECKSUM_LENGTH) {
      fatal(ErrorCodes.ProtocolError, 'OP_MSG too short to contain a checksum');
    }
    end -= CHECKSUM_LENGTH;
  }
  // Validation runs over a view ending before the checksum, so no document can reach into it.
  const sections = frame.subarray(0, end);
  const rules = documentRules(options);
  const { prevalidated } = options;

  let body: Buffer | null = null;
  let bodyFacts = 0;
  const sequences: DocumentSequence[] = [];
  const sequenceFacts: Uint8Array[] = [];
  let pos = HEADER_LENGTH + FLAGS_LENGTH;
  while (pos < end) {
    const kind = sections[pos] as number;
    pos++;
    if (kind === SectionKind.body) {
      if (body !== null) reject(ErrorCodes.Location40430, 'Multiple body sections in message');
      const length = documentLengthWithin(sections, pos, end, 'OP_MSG body');
      bodyFacts = validateIn(sections, pos, 'OP_MSG body', rules, prevalidated);
      body = frame.subarray(pos, pos + length);
      pos += length;
    } else if (kind === SectionKind.documentSequence) {
      if (sequences.length >= MAX_DOCUMENT_SEQUENCES) {
        fatal(ErrorCodes.TooManyDocumentSequences, 'Too many document sequences in OP_MSG');
      }
      if (pos + 4 > end) fatal(ErrorCodes.ProtocolError, 'document sequence size runs past the message');
      const size = readInt32LE(sections, pos);
      const seqEnd = pos + size;
      if (size < 5 || seqEnd > end) {
        fatal(ErrorCodes.ProtocolError, `document sequence size ${size} does not fit in the message`);
      }
      const idStart = pos + 4;
      const idEnd = sections.indexOf(0, idStart);
      if (idEnd === -1 || idEnd >= seqEnd)
        fatal(ErrorCodes.ProtocolError, 'document sequence identifier is not terminated');
      if (!isValidUtf8(sections, idStart, idEnd))
        reject(ErrorCodes.InvalidBSON, 'document sequence identifier is not valid UTF-8');
      const identifier = sections.toString('utf8', idStart, idEnd);
      if (sequences.some((s) => s.identifier === identifier)) {
        reject(ErrorCodes.Location40431, `Duplicate document sequence: ${identifier}`);
      }
      // The size must cover the identifier and whole documents exactly: the server delimits by it.
      const documents: Buffer[] = [];
      const facts: number[] = [];
      const sequence = sections.subarray(0, seqEnd);
      const what = `document sequence "${identifier}"`;
      let p = idEnd + 1;
      while (p < seqEnd) {
        const length = documentLengthWithin(sequence, p, seqEnd, what);
        facts.push(validateIn(sequence, p, what, rules, prevalidated));
        documents.push(frame.subarray(p, p + length));
        p += length;
      }
      sequences.push({ identifier, documents });
      sequenceFacts.push(Uint8Array.from(facts));
      pos = seqEnd;
    } else if (kind === SECURITY_TOKEN_SECTION_KIND) {
      // The spec says an unsupported kind MUST close the connection; never forward a token.
      fatal(ErrorCodes.Unauthorized, 'Unsupported Security Token provided');
    } else {
      fatal(ErrorCodes.Location40432, `Unknown section kind ${kind}`);
    }
  }

  if (body === null) reject(ErrorCodes.Location40587, 'OP_MSG messages must have a body');
  for (const { identifier } of sequences) {
    if (pathInBody(body, identifier)) {
      reject(ErrorCodes.Location40433, `Duplicate field between body and document sequence ${identifier}`);
    }
  }
  if (hasChecksum && storedChecksum(frame) !== computeChecksum(frame)) {
    fatal(ErrorCodes.ChecksumMismatch, 'OP_MSG checksum does not match contents');
  }

  // Proxies must clear unknown optional bits (OP_MSG.md, "flagBits"); checksumPresent goes too
  // because the parsed message no longer carries the checksum.
  const flagBits = (rawFlags & OP_MSG_KNOWN_FLAGS & ~OpMsgFlag.checksumPresent) >>> 0;
  return {
    msg: { requestId: header.requestId, responseTo: header.responseTo, flagBits, body, sequences },
    facts: { body: bodyFacts, sequences: sequenceFacts },
  };
}

/**
 * The documents of an OP_MSG frame as parseOpMsgFacts validates them (each with the view it is
 * validated in and the validation to run), in its order, for validating a large message in
 * slices ahead of parsing it (PrevalidatedDocuments). Stops where the frame's structure is wrong
 * or a document is over the size limit: parseOpMsgFacts finds and reports that itself.
 */
export function* opMsgValidations(
  frame: Buffer,
  options: ParseOpMsgOptions,
): Generator<{ offset: number; sectionEnd: number; start: () => DocumentValidation }> {
  if (frame.length < HEADER_LENGTH + FLAGS_LENGTH) return;
  const rules = documentRules(options);
  let end = frame.length;
  if (((readInt32LE(frame, HEADER_LENGTH) >>> 0) & OpMsgFlag.checksumPresent) !== 0) {
    if (end - HEADER_LENGTH - FLAGS_LENGTH <= CHECKSUM_LENGTH) return;
    end -= CHECKSUM_LENGTH;
  }
  const sections = frame.subarray(0, end);
  const one = (section: Buffer, offset: number) => ({
    offset,
    sectionEnd: section.length,
    start: () => new DocumentValidation(section, offset, rules),
  });
  const fits = (offset: number, limit: number): number => {
    if (offset + 4 > limit) return 0;
    const length = readInt32LE(sections, offset);
    return length < 5 || offset + length > limit || length > rules.maxSize ? 0 : length;
  };
  let pos = HEADER_LENGTH + FLAGS_LENGTH;
  while (pos < end) {
    const kind = sections[pos] as number;
    pos++;
    if (kind === SectionKind.body) {
      const length = fits(pos, end);
      if (length === 0) return;
      yield one(sections, pos);
      pos += length;
    } else if (kind === SectionKind.documentSequence) {
      if (pos + 4 > end) return;
      const seqEnd = pos + readInt32LE(sections, pos);
      if (seqEnd < pos + 5 || seqEnd > end) return;
      const idEnd = sections.indexOf(0, pos + 4);
      if (idEnd === -1 || idEnd >= seqEnd) return;
      const sequence = sections.subarray(0, seqEnd);
      for (let p = idEnd + 1; p < seqEnd;) {
        const length = fits(p, seqEnd);
        if (length === 0) return;
        yield one(sequence, p);
        p += length;
      }
      pos = seqEnd;
    } else {
      return;
    }
  }
}

/**
 * Whether a dotted `path` resolves in `body` the way the server's
 * extractElementAtPathOrArrayAlongPath does: a missing component is "absent", an array met on
 * the way counts as "present", a scalar met before the last component is "absent".
 */
function pathInBody(body: Buffer, path: string): boolean {
  const parts = path.split('.');
  let doc: Uint8Array = body;
  for (let i = 0; i < parts.length; i++) {
    const element = findElement(doc, parts[i] as string);
    if (element === null) return false;
    if (i === parts.length - 1 || element.type === BsonType.array) return true;
    if (element.type !== BsonType.document) return false;
    doc = subDocument(doc, element);
  }
  return false;
}

export interface EncodeOpMsgInit {
  requestId: number;
  responseTo: number;
  /** checksumPresent is ignored here: `checksum` decides it. */
  flagBits?: number;
  body: Uint8Array;
  sequences?: readonly DocumentSequence[];
  /** Append a CRC-32C and set checksumPresent. */
  checksum?: boolean;
}

const utf8Encoder = new TextEncoder();

/** What precedes a lone body in an OP_MSG frame: header, flags, the body section's kind byte. */
const BODY_PREFIX = HEADER_LENGTH + FLAGS_LENGTH + 1;
/** Bodies built with room for their frame in front (bodyWithFrameRoom), to that room's buffer. */
const framed = new WeakMap<Uint8Array, Buffer>();

/**
 * A body of `length` bytes (to be filled by the caller) with room in front for its OP_MSG
 * header, so that encodeOpMsg frames a large rewritten reply without copying it again. Taking a
 * shorter view with `framedBody` keeps the room.
 */
export function bodyWithFrameRoom(length: number): Buffer {
  const frame = Buffer.allocUnsafe(BODY_PREFIX + length);
  const body = frame.subarray(BODY_PREFIX);
  framed.set(body, frame);
  return body;
}

/** The first `length` bytes of a framed body (bodyWithFrameRoom, ownFrameBody), still framed in place by encodeOpMsg. */
export function framedBody(body: Uint8Array, length: number): Buffer {
  const frame = framed.get(body);
  const view = Buffer.from(body.buffer, body.byteOffset, length);
  if (frame !== undefined) framed.set(view, frame);
  return view;
}

/**
 * Marks the body of an OP_MSG frame the caller owns (a reply just read, about to be rewritten
 * and sent) as framed: a reply splice may then rewrite it in place (hasFrameRoom) and
 * encodeOpMsg frame the result over the old header. `body` must be the frame's kind-0 body,
 * right after its flags and kind byte.
 */
export function ownFrameBody(frame: Buffer, body: Uint8Array): void {
  if (body.buffer === frame.buffer && body.byteOffset === frame.byteOffset + BODY_PREFIX) framed.set(body, frame);
}

/** Whether `body` is framed (bodyWithFrameRoom, ownFrameBody): its bytes are its holder's to rewrite in place. */
export function hasFrameRoom(body: Uint8Array): boolean {
  return framed.has(body);
}

/**
 * Builds an OP_MSG frame in a single allocation: header, flags, body, sequences, checksum. With
 * `copies` (no checksum), the body and the documents are copied into the frame by that job
 * (copy-job.ts), not here: the frame is not complete until the job has run.
 */
export function encodeOpMsg(init: EncodeOpMsgInit, copies?: CopyJob): Buffer {
  if (copies !== undefined && init.checksum === true) throw new RangeError('a checksummed frame is written at once');
  const sequences = init.sequences ?? [];
  const checksum = init.checksum === true;
  const room = framed.get(init.body);
  if (room !== undefined && sequences.length === 0 && !checksum) {
    // The body's own buffer has the frame's first bytes free in front of it: written there once.
    framed.delete(init.body);
    writeInt32LE(room, HEADER_LENGTH, (init.flagBits ?? 0) & ~OpMsgFlag.checksumPresent);
    room[HEADER_LENGTH + FLAGS_LENGTH] = SectionKind.body;
    const length = BODY_PREFIX + init.body.length;
    writeHeader(room, {
      messageLength: length,
      requestId: init.requestId,
      responseTo: init.responseTo,
      opCode: OpCode.OP_MSG,
    });
    return room.subarray(0, length);
  }
  const identifiers = sequences.map((s) => {
    const bytes = utf8Encoder.encode(s.identifier);
    if (bytes.includes(0)) throw new RangeError(`document sequence identifier contains NUL: ${s.identifier}`);
    return bytes;
  });

  let length = HEADER_LENGTH + FLAGS_LENGTH + 1 + init.body.length;
  sequences.forEach((s, i) => {
    length += 1 + 4 + (identifiers[i] as Uint8Array).length + 1;
    for (const doc of s.documents) length += doc.length;
  });
  if (checksum) length += CHECKSUM_LENGTH;
  if (length > 0x7fffffff) throw new RangeError(`OP_MSG of ${length} bytes exceeds the int32 length field`);

  const out = Buffer.allocUnsafe(length);
  let pos = HEADER_LENGTH;
  const flags = ((init.flagBits ?? 0) & ~OpMsgFlag.checksumPresent) | (checksum ? OpMsgFlag.checksumPresent : 0);
  writeInt32LE(out, pos, flags);
  pos += FLAGS_LENGTH;
  out[pos++] = SectionKind.body;
  if (copies === undefined) out.set(init.body, pos);
  else copies.add(init.body, out, pos);
  pos += init.body.length;
  sequences.forEach((s, i) => {
    out[pos++] = SectionKind.documentSequence;
    const sizeAt = pos;
    pos += 4;
    const id = identifiers[i] as Uint8Array;
    out.set(id, pos);
    pos += id.length;
    out[pos++] = 0;
    for (const doc of s.documents) {
      if (copies === undefined) out.set(doc, pos);
      else copies.add(doc, out, pos);
      pos += doc.length;
    }
    writeInt32LE(out, sizeAt, pos - sizeAt);
  });
  if (checksum) pos += CHECKSUM_LENGTH;
  // The length goes in last, once everything it counts has been written.
  writeHeader(out, {
    messageLength: pos,
    requestId: init.requestId,
    responseTo: init.responseTo,
    opCode: OpCode.OP_MSG,
  });
  if (checksum) writeChecksum(out);
  return out;
}

/** The command name: the first key of the body (OP_MSG.md). Throws on an empty body. */
/**
 * Clears an OP_MSG frame's moreToCome bit in place, so the server answers it. The frame must be
 * the caller's own (the header is rewritten anyway when it is sent).
 */
export function clearMoreToCome(frame: Buffer): Buffer {
  frame.writeUInt32LE(frame.readUInt32LE(HEADER_LENGTH) & ~OpMsgFlag.moreToCome, HEADER_LENGTH);
  return frame;
}

export function commandName(body: Uint8Array): string {
  let first;
  try {
    first = firstElement(body);
  } catch (error) {
    if (ProxyError.is(error)) throw new WireProtocolError(error.code, error.message, false, { cause: error });
    throw error;
  }
  if (first === null) reject(ErrorCodes.BadValue, 'OP_MSG body is empty: no command name');
  return first.name;
}
