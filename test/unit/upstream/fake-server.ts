/**
 * A scriptable in-process server speaking just enough of the wire protocol to test the upstream
 * client: frames are split by hand (not with the FrameDecoder under test), OP_MSG bodies are
 * decoded with bson, and every reply is built here with explicit ids and flags.
 */
import { type AddressInfo, type Server, type Socket, createServer } from 'node:net';
import { type Document, deserialize, serialize } from '../../../src/wire/bson.js';
import { compressMessage, decompressMessage } from '../../../src/wire/op-compressed.js';
import type { CompressorName } from '../../../src/config/types.js';

export interface Received {
  requestId: number;
  responseTo: number;
  /** Opcode on the wire (2012 when the client compressed). */
  wireOpCode: number;
  /** Opcode of the message (after decompression). */
  opCode: number;
  flags: number;
  body: Document;
  bytes: Buffer;
}

export interface ReplyOptions {
  responseTo?: number;
  moreToCome?: boolean;
  compress?: CompressorName;
  requestId?: number;
}

export interface Peer {
  socket: Socket;
  received: Received[];
  /** Sends a reply; returns the requestId it used. */
  reply(doc: Document, to: Received | number, options?: ReplyOptions): Promise<number>;
}

export type Handler = (message: Received, peer: Peer) => void | Promise<void>;

export interface FakeServer {
  port: number;
  address: { host: string; port: number };
  peers: Peer[];
  close(): Promise<void>;
}

let nextReplyId = 9000;

export function opMsg(doc: Document, requestId: number, responseTo: number, flags = 0): Buffer {
  const body = Buffer.from(serialize(doc));
  const frame = Buffer.alloc(21 + body.length);
  frame.writeInt32LE(frame.length, 0);
  frame.writeInt32LE(requestId, 4);
  frame.writeInt32LE(responseTo, 8);
  frame.writeInt32LE(2013, 12);
  frame.writeUInt32LE(flags >>> 0, 16);
  frame[20] = 0;
  body.copy(frame, 21);
  return frame;
}

export async function startFakeServer(handler: Handler): Promise<FakeServer> {
  const peers: Peer[] = [];
  const server: Server = createServer((socket) => {
    socket.on('error', () => undefined);
    const received: Received[] = [];
    const peer: Peer = {
      socket,
      received,
      async reply(doc, to, options = {}) {
        const requestId = options.requestId ?? ++nextReplyId;
        const responseTo = options.responseTo ?? (typeof to === 'number' ? to : to.requestId);
        let frame = opMsg(doc, requestId, responseTo, options.moreToCome === true ? 2 : 0);
        if (options.compress !== undefined) frame = await compressMessage(frame, options.compress);
        socket.write(frame);
        return requestId;
      },
    };
    peers.push(peer);
    let buffered = Buffer.alloc(0);
    let chain = Promise.resolve();
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 4 && buffered.length >= buffered.readInt32LE(0)) {
        const length = buffered.readInt32LE(0);
        const bytes = Buffer.from(buffered.subarray(0, length));
        buffered = buffered.subarray(length);
        chain = chain.then(async () => {
          const wireOpCode = bytes.readInt32LE(12);
          const plain = wireOpCode === 2012 ? await decompressMessage(bytes, 64 * 1024 * 1024) : bytes;
          const opCode = plain.readInt32LE(12);
          const message: Received = {
            requestId: plain.readInt32LE(4),
            responseTo: plain.readInt32LE(8),
            wireOpCode,
            opCode,
            flags: opCode === 2013 ? plain.readUInt32LE(16) : 0,
            body: opCode === 2013 && plain[20] === 0 ? deserialize(plain.subarray(21), { promoteBuffers: true }) : {},
            bytes,
          };
          received.push(message);
          await handler(message, peer);
        });
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    port,
    address: { host: '127.0.0.1', port },
    peers,
    async close() {
      for (const peer of peers) peer.socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

export const HELLO_REPLY: Document = {
  isWritablePrimary: true,
  maxBsonObjectSize: 16 * 1024 * 1024,
  maxMessageSizeBytes: 48_000_000,
  maxWriteBatchSize: 100_000,
  logicalSessionTimeoutMinutes: 30,
  minWireVersion: 0,
  maxWireVersion: 21,
  ok: 1,
};
