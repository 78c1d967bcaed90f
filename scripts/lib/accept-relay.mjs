#!/usr/bin/env node
// A TCP relay in front of DocumentDB's gateway (pg_documentdb_gw 0.106), whose accept loop binds a
// new listening socket for every connection it accepts: connections that arrive meanwhile are
// reset or refused, so a driver opening a few at once (the benchmark opens 32) fails at random.
// The relay accepts for it and retries the upstream side until the gateway has answered once:
// until then nothing the client sent can have been processed (the gateway never speaks first),
// so sending those bytes again on a new connection is safe. After the first reply it only pipes.
//
//   node scripts/lib/accept-relay.mjs <listen host> <listen port or 0> <target host> <target port>
// prints `listening <port>` once it listens; SIGTERM stops it.
import net from 'node:net';

const [host = '127.0.0.1', listenPort = '0', targetHost = '127.0.0.1', targetPort] = process.argv.slice(2);
const MAX_ATTEMPTS = 50;
const sockets = new Set();

const server = net.createServer({ noDelay: true }, (client) => {
  sockets.add(client);
  client.once('close', () => sockets.delete(client));
  /** What the client sent before the gateway's first reply: sent again on a retried connection. */
  let unanswered = [];
  let answered = false;
  let upstream;
  let attempts = 0;
  let closed = false;

  const finish = () => {
    if (closed) return;
    closed = true;
    client.destroy();
    upstream?.destroy();
  };
  client.on('error', finish);
  client.on('close', finish);
  client.on('end', () => upstream?.end());
  client.on('drain', () => upstream?.resume());
  client.on('data', (chunk) => {
    if (!answered) unanswered.push(chunk);
    if (upstream?.connecting === false && !upstream.destroyed) upstream.write(chunk);
  });

  const connect = () => {
    attempts += 1;
    const socket = net.connect({ host: targetHost, port: Number(targetPort), noDelay: true });
    upstream = socket;
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.once('connect', () => {
      for (const chunk of unanswered) socket.write(chunk);
    });
    socket.on('data', (chunk) => {
      if (!answered) {
        answered = true;
        unanswered = [];
      }
      if (!client.write(chunk)) socket.pause();
    });
    socket.on('end', () => {
      if (answered) client.end();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      if (closed || socket !== upstream) return;
      if (!answered && attempts < MAX_ATTEMPTS) {
        setTimeout(connect, Math.min(2 * attempts, 50));
        return;
      }
      finish();
    });
  };
  connect();
});

server.listen(Number(listenPort), host, () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
server.on('error', (error) => {
  process.stderr.write(`accept-relay: ${error.message}\n`);
  process.exit(1);
});
const stop = () => {
  server.close();
  for (const socket of sockets) socket.destroy();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// The parent holds our stdin: when it dies without stopping us, stdin closes and so do we.
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();
