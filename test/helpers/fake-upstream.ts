/**
 * The tests' one in-process stand-in for a MongoDB server: for what FerretDB cannot show
 * (exhaust streams, replica-set roles and elections, transactions, a reset at an exact moment,
 * compressed or broken replies) and for recording the exact bytes sent upstream. Frames are split
 * here and built by test/helpers/raw-client.ts, by hand, so the code under test is never its own
 * oracle (compressed frames alone go through the product's codec).
 *
 * A handler answers each command in one of two ways, mixed freely:
 * - it returns a script: reply documents (all but the last get moreToCome), 'no-reply', 'close'
 *   (reset the connection: a network failure after the request reached the server), or
 *   `{ delayMs, replies, thenClose }` (`thenClose`: every reply with moreToCome, then a reset: an
 *   exhaust stream cut in the middle);
 * - or it answers through the peer (`peer.reply`, `peer.socket`) for exact ids, flags,
 *   compression and broken frames, and returns nothing.
 *
 * By default the fake answers hello itself, like a standalone (`options.hello` plays another role:
 * a replica-set member, a mongos), and the proxy's buildInfo probe (the first command after hello
 * on a connection, sent by Upstream.start) like MongoDB (read for introspection answers only)
 * unless `options.buildInfo` says otherwise; neither reaches the handler nor `received`. With
 * `answerHandshake: false` hello and buildInfo go to the handler (tests of the handshake and of
 * monitoring themselves). The proxy's capability probes (commands carrying PROBE_COMMENT, sent by
 * Upstream.start and after a failover) are answered like a MongoDB standalone (collation
 * accepted, so the simple collation is pinned; no transactions; upserts derive their fields
 * through `$and`; partial indexes) unless `options.capabilities` says otherwise, and never
 * recorded, unless `answerProbes: false`. The
 * proxy's view check before a read (its own listCollections, catalogue 22) is answered "no views"
 * and kept in `viewChecks`, not `received`, unless `answerViewChecks: false`.
 */
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { deserialize, type Document } from 'bson';
import type { CompressorName } from '../../src/config/types.js';
import { PROBE_COMMENT, type UpstreamCapabilities } from '../../src/upstream/capabilities.js';
import { compressMessage, decompressMessage } from '../../src/wire/op-compressed.js';
import { VIEW_CHECK_COMMENT } from '../../src/tenancy/views.js';
import { OP_COMPRESSED, OP_MSG, opMsg } from './raw-client.js';

export interface ReceivedMessage {
  requestId: number;
  responseTo: number;
  /** Opcode on the wire (2012 when the sender compressed). */
  wireOpCode: number;
  /** Opcode of the message (after decompression). */
  opCode: number;
  /** OP_MSG flag bits (0 for other opcodes). */
  flags: number;
  /** The OP_MSG body (its kind-0 section); `{}` for other messages. */
  body: Document;
  /** The frame as it came (compressed when the sender compressed). */
  bytes: Buffer;
  /** Which connection (socket) it came on: 1, 2, … in accept order. */
  connection: number;
}

export type FakeAnswer =
  Document[] | 'no-reply' | 'close' | { delayMs: number; replies: Document[]; thenClose?: boolean };

/** Returns the answer to send, or nothing when it answered (or chose not to) through `peer`. */
export type FakeHandler = (message: ReceivedMessage, peer: FakePeer) => FakeAnswer | void | Promise<FakeAnswer | void>;

export interface ReplyOptions {
  /** Default: the id of the message (or the number) replied to. */
  responseTo?: number;
  moreToCome?: boolean;
  compress?: CompressorName;
  /** Default: the next id of the fake's own sequence. */
  requestId?: number;
}

/** One accepted connection. */
export interface FakePeer {
  /** 1, 2, … in accept order (`ReceivedMessage.connection`). */
  connection: number;
  socket: Socket;
  /** What reached the handler on this connection, in order. */
  received: ReceivedMessage[];
  /** Sends an OP_MSG reply; resolves with the requestId it used. */
  reply(doc: Document, to: ReceivedMessage | number, options?: ReplyOptions): Promise<number>;
}

export interface FakeUpstream {
  host: string;
  port: number;
  address: { host: string; port: number };
  /** `127.0.0.1:<port>`, as hosts are named in hello replies and URIs. */
  hostPort: string;
  /** `mongodb://127.0.0.1:<port>/?directConnection=true` */
  uri: string;
  /** What reached the handler, on every connection, in order. */
  received: ReceivedMessage[];
  /** The proxy's view checks the fake answered itself (catalogue 22), in order. */
  viewChecks: ReceivedMessage[];
  /** Every connection accepted so far, in accept order. */
  peers: FakePeer[];
  /** Sockets currently open (the proxy's pool connections, monitoring connections). */
  readonly openConnections: number;
  close(): Promise<void>;
}

export interface FakeUpstreamOptions {
  /** Hand hello and the buildInfo probe to the handler too (default: the fake answers them). */
  answerHandshake?: boolean;
  /** Hand the proxy's view checks (its own listCollections before a read) to the handler too (default: answered "no views"). */
  answerViewChecks?: boolean;
  /** The reply to the proxy's buildInfo probe (introspection answers read it; capabilities are probed). */
  buildInfo?: Document;
  /** How the fake answers the proxy's capability probes (default FAKE_CAPABILITIES). */
  capabilities?: Partial<UpstreamCapabilities>;
  /** Hand the capability probes to the handler too (default: the fake answers them). */
  answerProbes?: boolean;
  /** The hello reply, asked for every hello (so a test can change it: a replica-set election). */
  hello?: () => Document;
  /** Listen on this port (default: a free one). */
  port?: number;
}

/** A standalone's hello reply. */
export const FAKE_HELLO: Document = {
  isWritablePrimary: true,
  maxBsonObjectSize: 16 * 1024 * 1024,
  maxMessageSizeBytes: 48_000_000,
  maxWriteBatchSize: 100_000,
  logicalSessionTimeoutMinutes: 30,
  minWireVersion: 0,
  maxWireVersion: 21,
  ok: 1,
};

/** What the fake answers to the proxy's buildInfo probe by default: a MongoDB server. */
export const FAKE_BUILD_INFO: Document = {
  version: '7.0.0',
  versionArray: [7, 0, 0, 0],
  gitVersion: 'fake',
  bits: 64,
  ok: 1,
};

/** What the fake says to the proxy's capability probes by default: a MongoDB standalone. */
export const FAKE_CAPABILITIES: UpstreamCapabilities = {
  collation: true,
  distinctMaxTimeMS: true,
  bsonSize: true,
  transactions: false,
  upsertFieldsFromAnd: true,
  partialIndexes: true,
};

/** The fake's answer to one capability probe command, as a server with `capabilities` would give it. */
export function probeReply(body: Document, capabilities: UpstreamCapabilities): Document {
  const refuse = (code: number, codeName: string, errmsg: string): Document => ({ ok: 0, code, codeName, errmsg });
  const emptyCursor = { cursor: { id: 0, ns: 'admin.probe', firstBatch: [] }, ok: 1 };
  if ('find' in body && body.startTransaction === true) {
    return capabilities.transactions
      ? emptyCursor
      : refuse(20, 'IllegalOperation', 'Transaction numbers are only allowed on a replica set member or mongos');
  }
  if ('update' in body) return { n: 1, nModified: 0, upserted: [{ index: 0, _id: body.update }], ok: 1 };
  if ('find' in body && body.collation === undefined) {
    // The upsert probe reads back what its upsert stored (its _id is the collection's name).
    const stored = capabilities.upsertFieldsFromAnd ? { _id: body.find, k: 1, v: 1 } : { _id: 'generated', v: 1 };
    return { cursor: { id: 0, ns: 'probe.upsert', firstBatch: [stored] }, ok: 1 };
  }
  if ('find' in body) {
    return capabilities.collation
      ? emptyCursor
      : refuse(115, 'CommandNotSupported', 'Find with collation is not currently supported.');
  }
  if ('distinct' in body) {
    return capabilities.distinctMaxTimeMS
      ? { values: [], ok: 1 }
      : refuse(9, 'FailedToParse', 'distinct: unknown field "maxTimeMS"');
  }
  if ('aggregate' in body) {
    return capabilities.bsonSize
      ? emptyCursor
      : refuse(168, 'InvalidPipelineOperator', "Unrecognized expression '$bsonSize'");
  }
  if ('createIndexes' in body) {
    const [index] = body.indexes as Document[];
    const supported =
      index?.expireAfterSeconds !== undefined ? capabilities.ttlIndexes !== false : capabilities.partialIndexes;
    return supported
      ? { numIndexesBefore: 1, numIndexesAfter: 2, ok: 1 }
      : refuse(238, 'NotImplemented', 'support for field "partialFilterExpression" is not implemented yet');
  }
  if ('listCollections' in body) return emptyCursor;
  return { ok: 1 }; // abortTransaction, endSessions, drop, dropDatabase
}

const MORE_TO_COME = 1 << 1;
/** Replies' own ids, far from the ids clients use. */
let replyIds = 50_000;

const HELLO_NAMES = new Set(['hello', 'isMaster', 'ismaster']);

/** Bigger than anything a test sends: the bound only guards the fake against a corrupt size. */
const MAX_UNCOMPRESSED_BYTES = 64 * 1024 * 1024;

async function parse(bytes: Buffer, connection: number): Promise<ReceivedMessage> {
  const wireOpCode = bytes.readInt32LE(12);
  const plain = wireOpCode === OP_COMPRESSED ? await decompressMessage(bytes, MAX_UNCOMPRESSED_BYTES) : bytes;
  const opCode = plain.readInt32LE(12);
  const isMsg = opCode === OP_MSG;
  const hasBody = isMsg && plain[20] === 0;
  return {
    requestId: plain.readInt32LE(4),
    responseTo: plain.readInt32LE(8),
    wireOpCode,
    opCode,
    flags: isMsg ? plain.readUInt32LE(16) : 0,
    body: hasBody ? deserialize(plain.subarray(21, 21 + plain.readInt32LE(21))) : {},
    bytes,
    connection,
  };
}

export async function startFakeUpstream(
  handler: FakeHandler,
  options: FakeUpstreamOptions = {},
): Promise<FakeUpstream> {
  const received: ReceivedMessage[] = [];
  const viewChecks: ReceivedMessage[] = [];
  const peers: FakePeer[] = [];
  const open = new Set<Socket>();
  const answerHandshake = options.answerHandshake ?? true;
  const answerProbes = options.answerProbes ?? true;

  const server: Server = createServer((socket) => {
    open.add(socket);
    socket.on('close', () => open.delete(socket));
    socket.on('error', () => undefined);
    const peer: FakePeer = {
      connection: peers.length + 1,
      socket,
      received: [],
      async reply(doc, to, replyOptions = {}) {
        const requestId = replyOptions.requestId ?? ++replyIds;
        const responseTo = replyOptions.responseTo ?? (typeof to === 'number' ? to : to.requestId);
        const flags = replyOptions.moreToCome === true ? MORE_TO_COME : 0;
        let frame = opMsg(doc, { requestId, responseTo, flags }).bytes;
        if (replyOptions.compress !== undefined) frame = await compressMessage(frame, replyOptions.compress);
        if (!socket.destroyed) socket.write(frame);
        return requestId;
      },
    };
    peers.push(peer);

    /** Until the first command other than hello: a buildInfo then is the proxy's probe. */
    let probing = true;
    const serve = async (message: ReceivedMessage): Promise<void> => {
      const name = Object.keys(message.body)[0];
      if (answerHandshake && name !== undefined && HELLO_NAMES.has(name)) {
        const hello = options.hello?.() ?? FAKE_HELLO;
        await peer.reply({ ...hello, connectionId: peer.connection, localTime: new Date() }, message);
        return;
      }
      if (answerProbes && message.body.comment === PROBE_COMMENT) {
        await peer.reply(probeReply(message.body, { ...FAKE_CAPABILITIES, ...options.capabilities }), message);
        return;
      }
      const probe = probing && name === 'buildInfo';
      probing = false;
      if (answerHandshake && probe) {
        await peer.reply(options.buildInfo ?? FAKE_BUILD_INFO, message);
        return;
      }
      if (
        (options.answerViewChecks ?? true) &&
        name === 'listCollections' &&
        message.body.comment === VIEW_CHECK_COMMENT
      ) {
        viewChecks.push(message);
        await peer.reply(
          { cursor: { id: 0, ns: `${String(message.body.$db)}.$cmd.listCollections`, firstBatch: [] }, ok: 1 },
          message,
        );
        return;
      }
      received.push(message);
      peer.received.push(message);
      const answer = await handler(message, peer);
      if (answer === undefined || answer === 'no-reply') return;
      if (answer === 'close') {
        socket.resetAndDestroy();
        return;
      }
      const { delayMs, replies, thenClose } = Array.isArray(answer)
        ? { delayMs: 0, replies: answer, thenClose: false }
        : answer;
      const send = async (): Promise<void> => {
        // A stream: each reply answers the previous one.
        let responseTo = message.requestId;
        for (const [index, doc] of replies.entries()) {
          const last = index === replies.length - 1 && thenClose !== true;
          responseTo = await peer.reply(doc, responseTo, { moreToCome: !last });
        }
        if (thenClose === true) socket.end(() => socket.resetAndDestroy());
      };
      // A delayed answer does not hold up the commands after it (a server works concurrently).
      if (delayMs > 0) setTimeout(() => void send(), delayMs);
      else await send();
    };

    let buffered = Buffer.alloc(0);
    // Commands are served one at a time, in order, also when a handler is async.
    let chain = Promise.resolve();
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 4 && buffered.length >= buffered.readInt32LE(0)) {
        const length = buffered.readInt32LE(0);
        const bytes = Buffer.from(buffered.subarray(0, length));
        buffered = buffered.subarray(length);
        chain = chain.then(async () => {
          if (socket.destroyed) return; // reset by an earlier answer: nothing after it arrives
          await serve(await parse(bytes, peer.connection));
        });
      }
    });
  });

  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const host = '127.0.0.1';
  return {
    host,
    port,
    address: { host, port },
    hostPort: `${host}:${port}`,
    uri: `mongodb://${host}:${port}/?directConnection=true`,
    received,
    viewChecks,
    peers,
    get openConnections() {
      return open.size;
    },
    async close() {
      for (const socket of open) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
