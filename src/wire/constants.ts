/**
 * Wire-protocol constants. Spec: mongodb/specifications source/message/OP_MSG.md,
 * source/compression/OP_COMPRESSED.md, and the manual's wire-protocol page.
 */

export const HEADER_LENGTH = 16;

export const OpCode = {
  OP_REPLY: 1,
  OP_UPDATE: 2001,
  OP_INSERT: 2002,
  OP_QUERY: 2004,
  OP_GET_MORE: 2005,
  OP_DELETE: 2006,
  OP_KILL_CURSORS: 2007,
  OP_COMMAND: 2010,
  OP_COMMANDREPLY: 2011,
  OP_COMPRESSED: 2012,
  OP_MSG: 2013,
} as const;

/** OP_MSG flagBits. Bits 0-15 are required (unknown ones are an error), 16-31 optional. */
export const OpMsgFlag = {
  checksumPresent: 1 << 0,
  moreToCome: 1 << 1,
  exhaustAllowed: 1 << 16,
} as const;

export const OP_MSG_KNOWN_FLAGS = OpMsgFlag.checksumPresent | OpMsgFlag.moreToCome | OpMsgFlag.exhaustAllowed;
export const OP_MSG_REQUIRED_BITS_MASK = 0xffff;

export const SectionKind = {
  body: 0,
  documentSequence: 1,
} as const;

export const CompressorId = {
  noop: 0,
  snappy: 1,
  zlib: 2,
  zstd: 3,
} as const;

export type CompressorIdValue = (typeof CompressorId)[keyof typeof CompressorId];

/** OP_QUERY flags that matter for the legacy handshake. */
export const OpQueryFlag = {
  secondaryOk: 1 << 2,
} as const;

/** OP_REPLY responseFlags. */
export const OpReplyFlag = {
  cursorNotFound: 1 << 0,
  queryFailure: 1 << 1,
  awaitCapable: 1 << 3,
} as const;

/** Server defaults, used until the upstream's own hello tells us its values. */
export const DEFAULT_MAX_BSON_OBJECT_SIZE = 16 * 1024 * 1024;
export const DEFAULT_MAX_MESSAGE_SIZE_BYTES = 48_000_000;
export const DEFAULT_MAX_WRITE_BATCH_SIZE = 100_000;

/**
 * Commands whose messages must never be compressed (OP_COMPRESSED.md, "Messages which MUST NOT
 * be compressed"): they carry credentials or precede compressor negotiation.
 */
export const UNCOMPRESSIBLE_COMMANDS: ReadonlySet<string> = new Set([
  'hello',
  'isMaster',
  'ismaster',
  'saslStart',
  'saslContinue',
  'getnonce',
  'authenticate',
  'createUser',
  'updateUser',
  'copydbSaslStart',
  'copydbgetnonce',
  'copydb',
]);
