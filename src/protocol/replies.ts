/**
 * Replies the proxy writes itself: command results and MongoDB-shaped errors, as OP_MSG or,
 * for the legacy handshake, OP_REPLY.
 */
import { ProxyError, ErrorCodes, codeNameOf } from '../errors.js';
import { serialize, type Document } from '../wire/bson.js';
import { encodeOpMsg } from '../wire/op-msg.js';
import { encodeOpReply } from '../wire/op-query.js';
import { OpReplyFlag } from '../wire/constants.js';

/** Which message format the request came in; the reply uses the matching one. */
export type ReplyFormat = 'opMsg' | 'opReply';

/** `{ok: 0, errmsg, code, codeName}` exactly as a server writes it, plus labels when present. */
export function errorReplyDocument(error: unknown): Document {
  const proxyError = ProxyError.is(error) ? error : new ProxyError(ErrorCodes.InternalError, 'internal proxy error');
  const document: Document = {
    ok: 0,
    errmsg: proxyError.message,
    code: proxyError.code,
    codeName: codeNameOf(proxyError.code),
  };
  if (proxyError.labels.length > 0) document.errorLabels = [...proxyError.labels];
  return document;
}

let nextReplyRequestId = 1;

/** Request ids for messages the proxy originates towards clients. */
export function nextRequestId(): number {
  nextReplyRequestId = nextReplyRequestId >= 0x7fffffff ? 1 : nextReplyRequestId + 1;
  return nextReplyRequestId;
}

/** Encodes `document` as the reply to the request `responseTo`. */
export function encodeReply(document: Document, responseTo: number, format: ReplyFormat): Buffer {
  const body = serialize(document);
  if (format === 'opReply') {
    // Legacy clients learn of a failed command from the document; queryFailure is for $err.
    const responseFlags = document.ok === 0 && '$err' in document ? OpReplyFlag.queryFailure : 0;
    return encodeOpReply({ requestId: nextRequestId(), responseTo, responseFlags, documents: [body] });
  }
  return encodeOpMsg({ requestId: nextRequestId(), responseTo, body });
}

export function encodeErrorReply(error: unknown, responseTo: number, format: ReplyFormat): Buffer {
  const document = errorReplyDocument(error);
  // OP_REPLY readers of old look for `$err`; modern drivers read errmsg/code.
  if (format === 'opReply') document.$err = document.errmsg;
  return encodeReply(document, responseTo, format);
}
