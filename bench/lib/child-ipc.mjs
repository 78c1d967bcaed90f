// The child side of the benchmark's IPC protocol, shared by pipe-child.mjs and proxy-child.mjs.
//
//   parent → child                  child → parent
//   {type:'start', ...options}      {type:'ready', address:{host,port}, info}  or {type:'error', message}
//   {type:'cpu', id}                {type:'cpu', id, cpu: process.cpuUsage(), rss, mainCpuUs}
//
// mainCpuUs: the CPU time of the main (JavaScript) thread alone, from /proc (Linux; clock-tick
// resolution; null elsewhere). `cpu` is the whole process: V8's helper threads (concurrent
// marking and sweeping, parallel scavenges, freeing array buffers, JIT) included.
//   {type:'stop'}                   {type:'stopped'} and the process exits
//
// The child also exits when the IPC channel closes (the parent died), so no target outlives a run.

/**
 * @param {{ start(options: object): Promise<{ address: {host: string, port: number}, info?: object, close(): Promise<void> }> }} target
 *   `info` (optional, plain data) is reported to the parent with `ready`.
 */
import { readFileSync } from 'node:fs';
import { parseProcStat, ticksToMicros } from './proc.mjs';

/** The main thread's CPU µs (user + system) from /proc/self/task/<pid>/stat, or null. */
function mainThreadCpuUs() {
  try {
    const stat = parseProcStat(readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8'));
    return ticksToMicros(stat.userTicks + stat.systemTicks);
  } catch {
    return null;
  }
}

export function serveIpc(target) {
  if (!process.send) {
    process.stderr.write('this script is started by bench/run.mjs over IPC\n');
    process.exit(2);
  }
  mainThreadCpuUs(); // reads the clock tick rate now, not inside the first measured window
  let running = null;
  const send = (message) => {
    if (process.connected) process.send(message);
  };

  process.on('message', async (message) => {
    try {
      switch (message?.type) {
        case 'start': {
          running = await target.start(message);
          send({ type: 'ready', address: running.address, info: running.info ?? null });
          break;
        }
        case 'cpu':
          send({
            type: 'cpu',
            id: message.id,
            cpu: process.cpuUsage(),
            rss: process.memoryUsage.rss(),
            mainCpuUs: mainThreadCpuUs(),
          });
          break;
        case 'stop': {
          const closing = running;
          running = null;
          await closing?.close();
          send({ type: 'stopped' });
          process.disconnect();
          // Let the IPC channel flush, then leave even if a handle is still open.
          setTimeout(() => process.exit(0), 50).unref();
          break;
        }
        default:
          send({ type: 'error', message: `unknown message ${JSON.stringify(message)}` });
      }
    } catch (error) {
      send({ type: 'error', message: error instanceof Error ? (error.stack ?? error.message) : String(error) });
    }
  });
  process.on('disconnect', () => {
    // The parent is gone (or asked us to stop): nothing else to serve.
    setTimeout(() => process.exit(0), 100).unref();
  });
}
