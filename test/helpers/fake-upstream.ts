/**
 * A scriptable in-process stand-in for a MongoDB server, for the few behaviours FerretDB lacks
 * (exhaust streams) and for recording the exact bytes the proxy sends upstream. It answers hello
 * like a standalone, and the proxy's own buildInfo probe (the first command after hello on a
 * connection, sent by Upstream.start) like MongoDB (no `ferretdbVersion`, so the proxy pins the
 * simple collation: catalogue 9) unless `options.buildInfo` says otherwise; neither is recorded.
 * Every other command, a client's buildInfo included, goes to the test's handler.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { deserialize, serialize, type Document } from 'bson';

export interface ReceivedMessage {
  flags: number;
  requestId: number;
  body: Document;
  bytes: Buffer;
  /** Which upstream connection (socket) it came on: 1, 2, … in accept order. */
  connection: number;
}

/**
 * What the handler wants sent back: documents, each a reply; all but the last get moreToCome.
 * 'close' resets the connection instead of answering (a network failure after the request
 * reached the server); `thenClose` sends every reply with moreToCome, then resets (an exhaust
 * stream cut in the middle).
 */
export type FakeHandler = (
  message: ReceivedMessage,
) => Document[] | 'no-reply' | 'close' | { delayMs: number; replies: Document[]; thenClose?: boolean };

export interface FakeUpstream {
  uri: string;
  /** `127.0.0.1:<port>` */
  address: string;
  port: number;
  received: ReceivedMessage[];
  /** Sockets currently open (the proxy's pool connections, monitoring connections). */
  readonly openConnections: number;
  close(): Promise<void>;
}

const MORE_TO_COME = 1 << 1;
let replyIds = 50_000;

function encode(doc: Document, responseTo: number, flags: number): { bytes: Buffer; requestId: number } {
  const body = Buffer.from(serialize(doc));
  const bytes = Buffer.alloc(16 + 4 + 1 + body.length);
  const requestId = ++replyIds;
  bytes.writeInt32LE(bytes.length, 0);
  bytes.writeInt32LE(requestId, 4);
  bytes.writeInt32LE(responseTo, 8);
  bytes.writeInt32LE(2013, 12);
  bytes.writeUInt32LE(flags, 16);
  bytes[20] = 0;
  body.copy(bytes, 21);
  return { bytes, requestId };
}

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

export interface FakeUpstreamOptions {
  /** The reply to the proxy's buildInfo probe (e.g. with `ferretdbVersion` to look like FerretDB). */
  buildInfo?: Document;
  /** The hello reply, asked for every hello (so a test can change it: a replica-set election). */
  hello?: () => Document;
  /** Listen on this port (default: a free one). */
  port?: number;
}

export async function startFakeUpstream(
  handler: FakeHandler,
  options: FakeUpstreamOptions = {},
): Promise<FakeUpstream> {
  const received: ReceivedMessage[] = [];
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    const connection = ++accepted;
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    /** Until the first command other than hello: a buildInfo then is the proxy's probe. */
    let probing = true;
    let buffered = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 4 && buffered.length >= buffered.readInt32LE(0)) {
        const length = buffered.readInt32LE(0);
        const bytes = buffered.subarray(0, length);
        buffered = buffered.subarray(length);
        const requestId = bytes.readInt32LE(4);
        const flags = bytes.readUInt32LE(16);
        const bodyLength = bytes.readInt32LE(21);
        const body = deserialize(bytes.subarray(21, 21 + bodyLength));
        const message = { flags, requestId, body, bytes: Buffer.from(bytes), connection };
        const name = Object.keys(body)[0];
        if (name === 'hello' || name === 'isMaster' || name === 'ismaster') {
          const hello = options.hello?.() ?? FAKE_HELLO;
          socket.write(encode({ ...hello, connectionId: connection, localTime: new Date() }, requestId, 0).bytes);
          continue;
        }
        const probe = probing && name === 'buildInfo';
        probing = false;
        if (probe) {
          socket.write(encode(options.buildInfo ?? FAKE_BUILD_INFO, requestId, 0).bytes);
          continue;
        }
        received.push(message);
        const answer = handler(message);
        if (answer === 'no-reply') continue;
        if (answer === 'close') {
          socket.resetAndDestroy();
          return;
        }
        const { delayMs, replies, thenClose } = Array.isArray(answer)
          ? { delayMs: 0, replies: answer, thenClose: false }
          : answer;
        const send = (): void => {
          let responseTo = requestId;
          replies.forEach((doc, index) => {
            const last = index === replies.length - 1 && thenClose !== true;
            const reply = encode(doc, responseTo, last ? 0 : MORE_TO_COME);
            responseTo = reply.requestId;
            if (!socket.destroyed) socket.write(reply.bytes);
          });
          if (thenClose === true) socket.end(() => socket.resetAndDestroy());
        };
        if (delayMs > 0) setTimeout(send, delayMs);
        else send();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));
  const address = server.address() as { port: number };
  return {
    uri: `mongodb://127.0.0.1:${address.port}/?directConnection=true`,
    address: `127.0.0.1:${address.port}`,
    port: address.port,
    get openConnections() {
      return sockets.size;
    },
    received,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
