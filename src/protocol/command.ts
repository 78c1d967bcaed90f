/**
 * Reading a command's envelope from its top-level elements (the body split once, RawDocument):
 * its name (the first key, exactly as spelled) and its `$db` (present once, a non-empty string
 * without NUL), plus the `ok` of a reply.
 * Nothing else of the document is decoded.
 */
import { ErrorCodes, ProxyError } from '../errors.js';
import { BsonType, readString } from '../wire/bson-scan.js';
import { scanReply } from '../wire/reply-scan.js';
import { HEADER_LENGTH, OpCode, SectionKind } from '../wire/constants.js';
import { readHeader } from '../wire/header.js';
import { bsonElementOf, type RawDocument } from '../wire/raw-bson.js';

export interface CommandEnvelope {
  name: string;
  db: string;
}

/** Catalogue item 53: exactly one `$db`, a non-empty string; the command is the first key. */
export function readCommandEnvelope(body: RawDocument): CommandEnvelope {
  let name: string | undefined;
  let db: string | undefined;
  for (const element of body.elements) {
    if (name === undefined) {
      name = element.name;
      if (name === '$db') {
        throw new ProxyError(ErrorCodes.FailedToParse, 'the command name must be the first field, not $db');
      }
      continue;
    }
    if (element.name !== '$db') continue;
    if (db !== undefined) throw new ProxyError(ErrorCodes.FailedToParse, 'duplicate $db field');
    if (element.type !== BsonType.string) {
      throw new ProxyError(ErrorCodes.TypeMismatch, '$db must be a string');
    }
    db = readString(element.value, bsonElementOf(element));
  }
  if (name === undefined) throw new ProxyError(ErrorCodes.FailedToParse, 'empty command document');
  if (db === undefined) throw new ProxyError(ErrorCodes.FailedToParse, 'OP_MSG requests require a $db argument');
  if (db.length === 0 || db.includes('\0')) {
    throw new ProxyError(ErrorCodes.InvalidNamespace, 'invalid database name in $db');
  }
  return { name, db };
}

/**
 * The body document of an OP_MSG reply as sent by a server (kind-0 section first), or
 * undefined when the frame has another shape. Used for outcome accounting only.
 */
export function replyBody(reply: Buffer): Buffer | undefined {
  const bodyStart = HEADER_LENGTH + 5;
  if (reply.length < bodyStart + 5) return undefined;
  if (readHeader(reply).opCode !== OpCode.OP_MSG || reply[HEADER_LENGTH + 4] !== SectionKind.body) return undefined;
  const length = reply.readInt32LE(bodyStart);
  if (length < 5 || bodyStart + length > reply.length) return undefined;
  return reply.subarray(bodyStart, bodyStart + length);
}

/**
 * Whether a server reply reports `ok: 1`; a missing or unreadable `ok` counts as failure. Read
 * from the reply's one scan (wire/reply-scan.ts), shared with the forwarding layer and the engine.
 */
export function replyIsOk(reply: Buffer): boolean {
  return scanReply(reply).isOk();
}
