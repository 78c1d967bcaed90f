/**
 * The client connection's frame work, pure: which compressor a request used, the legacy
 * OP_QUERY handshake, the frame to send upstream for a forward plan, and a reply after the
 * isolation engine's reply plan.
 */
import type { CompressorName } from '../config/types.js';
import { ErrorCodes, ProxyError } from '../errors.js';
import { HELLO_COMMANDS } from '../protocol/hello.js';
import { replyBody } from '../protocol/command.js';
import type { TenantEngine } from '../rewrite/engine.js';
import type { ReplyPlan } from '../policy/types.js';
import { compressorNameOf } from '../wire/compression.js';
import { HEADER_LENGTH, OpCode, OpMsgFlag, SectionKind } from '../wire/constants.js';
import { BsonType, findElement, firstElement, readString } from '../wire/bson-scan.js';
import type { CommandLabels } from './command-view.js';
import { bodyWithFrameRoom, encodeOpMsg, ownFrameBody, type OpMsg } from '../wire/op-msg.js';
import { parseOpQuery, unwrapLegacyCommand } from '../wire/op-query.js';
import { type ReplyScan, scanReply } from '../wire/reply-scan.js';
import type { ForwardPlan } from './route.js';
import type { CopyJob } from '../wire/copy-job.js';

/** The codec a compressed request used; `noop` (or a bad id, rejected later) means none. */
export function compressorOfFrame(frame: Buffer): CompressorName | undefined {
  // Byte 24 is the compressorId: header(16) + originalOpcode(4) + uncompressedSize(4).
  const name = compressorNameOf(frame[HEADER_LENGTH + 8] ?? -1);
  return name === null || name === 'noop' ? undefined : name;
}

/**
 * The command name, `$db` and namespace of an OP_MSG, read before the message is parsed or
 * validated (top-level elements only: cheap even for a huge command), for the metrics and audit of
 * a request refused unparsed. Undefined for anything else or anything unexpected.
 */
export function peekCommandLabels(frame: Buffer): CommandLabels | undefined {
  if (frame.length < HEADER_LENGTH + 10 || frame.readInt32LE(12) !== OpCode.OP_MSG) return undefined;
  const end = Math.min(frame.length, frame.readInt32LE(0));
  let pos = HEADER_LENGTH + 4;
  try {
    while (pos + 5 <= end) {
      const kind = frame[pos];
      const length = frame.readInt32LE(pos + 1);
      if (length < 5 || pos + 1 + length > end) return undefined;
      if (kind === SectionKind.body) {
        const body = frame.subarray(pos + 1, pos + 1 + length);
        const first = firstElement(body);
        if (first === null) return undefined;
        const dbElement = findElement(body, '$db');
        const db = dbElement !== null && dbElement.type === BsonType.string ? readString(body, dbElement) : '';
        const collection = first.type === BsonType.string ? readString(body, first).slice(0, 1024) : undefined;
        return { name: first.name, db, namespace: collection === undefined ? db : `${db}.${collection}` };
      }
      if (kind !== SectionKind.documentSequence) return undefined;
      pos += 1 + length;
    }
  } catch {
    return undefined;
  }
  return undefined;
}

/** An OP_MSG's moreToCome flag, read before the message is parsed. */
export function hasMoreToCome(frame: Buffer): boolean {
  return frame.length > HEADER_LENGTH + 4 && (frame.readUInt32LE(HEADER_LENGTH) & OpMsgFlag.moreToCome) !== 0;
}

/**
 * Catalogue items 44-45: OP_QUERY survives only for the legacy handshake on admin.$cmd. The
 * hello command of such a frame; a ProxyError for anything else.
 */
export function legacyHello(frame: Buffer, maxBsonDepth: number): { name: string; command: Uint8Array } {
  const query = parseOpQuery(frame, { maxBsonDepth });
  const { name, command } = unwrapLegacyCommand(query.query);
  if (query.fullCollectionName !== 'admin.$cmd' || !HELLO_COMMANDS.has(name)) {
    throw new ProxyError(
      ErrorCodes.CommandNotSupported,
      'OP_QUERY is only supported for the hello handshake on admin.$cmd; use OP_MSG',
    );
  }
  return { name, command };
}

/**
 * The bytes to send upstream: the engine's rewrite, or the original frame when the proxy changed
 * nothing. A message whose flags were cleaned or that carried a checksum is re-encoded without one
 * (the upstream hop never uses checksums, and the header ids change anyway). With `copies` (the
 * command's own, CommandView.copies), the copies of the rewrite's bytes into the frame join that
 * job: the frame is complete once the job has run.
 */
export function forwardFrame(frame: Buffer, msg: OpMsg, rewrite: ForwardPlan['rewrite'], copies?: CopyJob): Buffer {
  if (rewrite !== undefined) {
    // Without sequences the body is encoded once, straight into its frame (an insert of a body
    // array is then one copy of the batch, not a body encoded and then copied into a frame).
    if (rewrite.sequences.size === 0)
      return encodeRequest(msg, rewrite.body.toBytes(bodyWithFrameRoom, copies), [], copies);
    const sequences = [...rewrite.sequences].map(([identifier, documents]) => ({
      identifier,
      documents: documents.map((document) => Buffer.from(document.buffer, document.byteOffset, document.byteLength)),
    }));
    return encodeRequest(msg, rewrite.body.toBytes(undefined, copies), sequences, copies);
  }
  if (frame.readUInt32LE(HEADER_LENGTH) === msg.flagBits) return frame;
  return encodeRequest(msg, msg.body, msg.sequences);
}

function encodeRequest(msg: OpMsg, body: Uint8Array, sequences: OpMsg['sequences'], copies?: CopyJob): Buffer {
  return encodeOpMsg(
    {
      requestId: msg.requestId,
      responseTo: 0,
      flagBits: msg.flagBits & ~OpMsgFlag.checksumPresent,
      body,
      sequences,
    },
    copies,
  );
}

/**
 * The reply after the engine's plan (cursor ownership, names mapped back, values scrubbed).
 * `scan`: the reply's scan made when it arrived (upstream/execute.ts), before any rewrite.
 */
export function replyAfterPlan(
  engine: TenantEngine,
  plan: ReplyPlan,
  reply: Buffer,
  scan: ReplyScan = scanReply(reply),
): Buffer {
  const body = replyBody(reply);
  if (body === undefined) return reply;
  // The reply is this connection's own from here on: a splice may rewrite it in place.
  ownFrameBody(reply, body);
  // The forwarding layer scanned this reply already (ok, error, cursor): the engine reads that scan.
  const changed = engine.reply(plan, body, scan);
  if (changed === undefined) return reply;
  return encodeOpMsg({
    requestId: 0,
    responseTo: 0,
    flagBits: reply.readUInt32LE(HEADER_LENGTH) & OpMsgFlag.moreToCome,
    body: changed,
  });
}
