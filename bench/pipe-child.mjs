// Target (b) of the benchmark: the floor any proxy pays. A minimal TCP pipe in its own process:
// every accepted socket is paired with one upstream socket and bytes flow with socket.pipe() both
// ways. No parsing, no buffering beyond what streams do, Nagle off on both sides.
//
// IPC protocol (see bench/lib/child.mjs): parent sends {type:'start', upstream:{host,port}} and
// gets {type:'ready', address}; {type:'cpu'} → {type:'cpu', cpu, rss}; {type:'stop'} → {type:'stopped'}.
import net from 'node:net';
import { serveIpc } from './lib/child-ipc.mjs';

serveIpc({
  async start({ upstream }) {
    const sockets = new Set();
    const track = (socket) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
    };
    const server = net.createServer({ noDelay: true }, (client) => {
      const up = net.connect({ host: upstream.host, port: upstream.port, noDelay: true });
      track(client);
      track(up);
      client.setNoDelay(true);
      const teardown = () => {
        client.destroy();
        up.destroy();
      };
      client.on('error', teardown);
      up.on('error', teardown);
      client.on('close', teardown);
      up.on('close', teardown);
      client.pipe(up);
      up.pipe(client);
    });
    await new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    });
    const { address, port } = server.address();
    return {
      address: { host: address, port },
      async close() {
        for (const socket of sockets) socket.destroy();
        await new Promise((resolve) => server.close(() => resolve()));
      },
    };
  },
});
