// The idle-connection measurement (BENCH_IDLE): many raw client connections to a middle target,
// each completing one handshake (`isMaster` over OP_MSG) and then staying open and silent, with
// the target's RSS read before and after. Raw sockets rather than a driver: a driver would add its
// own monitoring connections and heartbeats, and 10,000 of them cost the bench more than the target.
//
// `isMaster` rather than `hello`: mongobetween answers only isMaster/ismaster itself and forwards
// `hello` upstream; the proxy answers both; the pipe forwards everything (one upstream connection
// per client connection, which is what a pipe costs).
import net from 'node:net';

const OP_MSG = 2013;

/** `{isMaster: 1, $db: 'admin'}` as an OP_MSG with one body section, hand-encoded (no bson import). */
export function isMasterMessage(requestId) {
  const cstring = (text) => Buffer.from(`${text}\0`, 'latin1');
  const int32 = (value) => {
    const buffer = Buffer.alloc(4);
    buffer.writeInt32LE(value);
    return buffer;
  };
  const db = Buffer.from('admin\0', 'latin1');
  const elements = Buffer.concat([
    Buffer.from([0x10]), // int32
    cstring('isMaster'),
    int32(1),
    Buffer.from([0x02]), // string
    cstring('$db'),
    int32(db.length),
    db,
  ]);
  const document = Buffer.concat([int32(4 + elements.length + 1), elements, Buffer.from([0])]);
  const body = Buffer.concat([int32(0) /* flagBits */, Buffer.from([0]) /* kind 0: body */, document]);
  const header = Buffer.alloc(16);
  header.writeInt32LE(16 + body.length, 0);
  header.writeInt32LE(requestId, 4);
  header.writeInt32LE(0, 8);
  header.writeInt32LE(OP_MSG, 12);
  return Buffer.concat([header, body]);
}

/**
 * Whether `received` (the bytes read so far) holds a whole reply to `requestId`: its length when it
 * does, null while more bytes are due. Throws on a reply to another request.
 */
export function completeReply(received, requestId) {
  if (received.length < 16) return null;
  const length = received.readInt32LE(0);
  if (length < 16) throw new Error(`reply length ${length} is not a wire message`);
  if (received.length < length) return null;
  const responseTo = received.readInt32LE(8);
  if (responseTo !== requestId) throw new Error(`reply to request ${responseTo}, expected ${requestId}`);
  return length;
}

const OK_DOUBLE = Buffer.from([0x01, 0x6f, 0x6b, 0x00, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]); // "ok": 1.0
const OK_INT32 = Buffer.from([0x10, 0x6f, 0x6b, 0x00, 1, 0, 0, 0]); // "ok": 1 (int32)

/**
 * Whether a whole reply says `ok: 1` (as a double or an int32). A byte search, not a BSON parse:
 * enough for a handshake reply, whose only `ok` is the top-level one; a refusal says `ok: 0`.
 */
export function replyOk(reply) {
  return reply.includes(OK_DOUBLE) || reply.includes(OK_INT32);
}

/** One connection that has completed its handshake; resolves with the open socket. */
function openOne(address, requestId, timeoutMS) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(address);
    let received = Buffer.alloc(0);
    const fail = (error) => {
      socket.destroy();
      reject(error);
    };
    socket.setTimeout(timeoutMS, () => fail(new Error(`no handshake reply within ${timeoutMS} ms`)));
    socket.once('error', fail);
    socket.once('close', () => reject(new Error('closed before the handshake reply')));
    socket.once('connect', () => socket.write(isMasterMessage(requestId)));
    const onData = (chunk) => {
      received = Buffer.concat([received, chunk]);
      try {
        const length = completeReply(received, requestId);
        if (length === null) return;
        if (!replyOk(received.subarray(0, length))) throw new Error('the handshake was refused (ok is not 1)');
      } catch (error) {
        fail(error);
        return;
      }
      socket.setTimeout(0);
      socket.off('data', onData);
      socket.removeAllListeners('error');
      socket.removeAllListeners('close');
      socket.on('error', () => {}); // a reset while idle shows as a socket no longer open
      socket.on('data', () => {}); // nothing more is expected; never let bytes pile up
      received = null;
      resolve(socket);
    };
    socket.on('data', onData);
  });
}

/**
 * Opens `count` idle connections to `address`, `parallel` at a time. Stops at the first failure
 * and reports how many were open then (the caller reports the error next to the numbers).
 * @returns {Promise<{ sockets: net.Socket[], error: string | null, openMs: number }>}
 */
export async function openIdleConnections(address, count, { parallel = 100, timeoutMS = 30_000 } = {}) {
  const sockets = [];
  let next = 0;
  let error = null;
  const started = Date.now();
  const worker = async () => {
    while (error === null && next < count) {
      const id = ++next;
      try {
        sockets.push(await openOne(address, id, timeoutMS));
      } catch (failure) {
        error ??= `connection ${id}: ${failure instanceof Error ? failure.message : String(failure)}`;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, count) }, worker));
  return { sockets, error, openMs: Date.now() - started };
}

/** How many of the sockets are still open (the target may close connections it refuses later). */
export const stillOpen = (sockets) =>
  sockets.filter((socket) => !socket.destroyed && socket.readyState === 'open').length;

/** Closes the sockets and waits until they are all closed (or 10 s). */
export async function closeAll(sockets) {
  await Promise.race([
    Promise.all(
      sockets.map(
        (socket) =>
          new Promise((resolve) => {
            if (socket.destroyed) return resolve();
            socket.once('close', resolve);
            socket.destroy();
          }),
      ),
    ),
    new Promise((resolve) => setTimeout(resolve, 10_000).unref()),
  ]);
}
