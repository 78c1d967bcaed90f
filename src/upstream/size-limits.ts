/**
 * The upstream's size limits, checked on the exact bytes about to be sent (after the isolation
 * rewrite: a tenant stamp adds bytes to every inserted document, a filter to every statement).
 * A request within the client's limits can cross the upstream's once rewritten; a server sent
 * such a message drops the connection (a message over maxMessageSizeBytes cannot even be read),
 * which would look like an outage and fail every request sharing that connection. So it is
 * answered here, as the server answers an object it cannot take, and never sent:
 *
 * - the message over `maxMessageSizeBytes`, the body over `maxBsonObjectSize` + 16 KiB (the
 *   server's BSONObjMaxInternalSize), an inserted document over `maxBsonObjectSize`, any other
 *   sequence document over the internal size: BSONObjectTooLarge (10334), not retryable;
 * - more than `maxWriteBatchSize` statements in a write's sequence: InvalidLength (16), the
 *   server's "Write batch sizes must be between 1 and …".
 *
 * Batches are not split: drivers split at the advertised limits already, and a proxy split of a
 * retryable write would reuse one txnNumber for two commands (the server would treat the second
 * as a retry of the first). Only batches within the stamp's bytes of the limit are affected; the
 * error says to send smaller batches. Reads only section lengths, never document contents.
 */
import { ErrorCodes, ProxyError } from '../errors.js';
import { HEADER_LENGTH, OpCode, OpMsgFlag } from '../wire/constants.js';

/** What the server allows a command body over maxBsonObjectSize (BSONObjMaxInternalSize − BSONObjMaxUserSize). */
export const INTERNAL_BSON_SLACK = 16 * 1024;

export interface UpstreamSizeLimits {
  maxBsonObjectSize: number;
  maxMessageSizeBytes: number;
  maxWriteBatchSize: number;
}

/** Sequences whose documents are write statements, counted against maxWriteBatchSize. */
const STATEMENT_SEQUENCES: ReadonlySet<string> = new Set(['documents', 'updates', 'deletes', 'ops']);

/** An error for a request over the upstream's limits (ready to answer), else undefined. */
export function checkRequestSize(frame: Buffer, limits: UpstreamSizeLimits): ProxyError | undefined {
  if (frame.length > limits.maxMessageSizeBytes) {
    return tooLarge(
      `the message is ${frame.length} bytes once the proxy rewrote it for the tenant, over the upstream's ` +
        `maxMessageSizeBytes (${limits.maxMessageSizeBytes}); send fewer or smaller documents per batch`,
    );
  }
  if (frame.length < HEADER_LENGTH + 5 || frame.readInt32LE(12) !== OpCode.OP_MSG) return undefined;
  const flags = frame.readUInt32LE(HEADER_LENGTH);
  const end = frame.length - ((flags & OpMsgFlag.checksumPresent) !== 0 ? 4 : 0);
  const internalMax = limits.maxBsonObjectSize + INTERNAL_BSON_SLACK;
  let pos = HEADER_LENGTH + 4;
  while (pos < end) {
    const kind = frame[pos];
    pos++;
    if (pos + 4 > end) return undefined;
    if (kind === 0) {
      const size = frame.readInt32LE(pos);
      if (size > internalMax) return objectTooLarge(size, internalMax);
      pos += Math.max(size, 5);
      continue;
    }
    if (kind !== 1) return undefined; // the proxy builds these frames: nothing else to check
    const sectionEnd = pos + frame.readInt32LE(pos);
    const idStart = pos + 4;
    const idEnd = frame.indexOf(0, idStart);
    if (idEnd < 0 || idEnd >= sectionEnd || sectionEnd > end) return undefined;
    const identifier = frame.toString('utf8', idStart, idEnd);
    const documentMax = identifier === 'documents' ? limits.maxBsonObjectSize : internalMax;
    let count = 0;
    for (let doc = idEnd + 1; doc + 4 <= sectionEnd;) {
      const size = frame.readInt32LE(doc);
      if (size > documentMax) {
        return identifier === 'documents'
          ? tooLarge(
              `object to insert too large once the proxy stamped it with the tenant: size in bytes: ${size}, ` +
                `max size: ${documentMax} (document ${count} of the batch)`,
            )
          : objectTooLarge(size, documentMax);
      }
      count++;
      doc += Math.max(size, 5);
    }
    if (STATEMENT_SEQUENCES.has(identifier) && count > limits.maxWriteBatchSize) {
      return new ProxyError(
        ErrorCodes.InvalidLength,
        `Write batch sizes must be between 1 and ${limits.maxWriteBatchSize}. Got ${count} operations.`,
      );
    }
    pos = sectionEnd;
  }
  return undefined;
}

function objectTooLarge(size: number, max: number): ProxyError {
  return tooLarge(
    `BSONObj size: ${size} (0x${size.toString(16).toUpperCase()}) is invalid. Size must be between 0 and ${max}`,
  );
}

function tooLarge(message: string): ProxyError {
  return new ProxyError(ErrorCodes.BSONObjectTooLarge, message);
}
