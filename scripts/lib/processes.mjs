// Helpers shared by the scripts that run throwaway servers (FerretDB, DocumentDB, mongobetween): free
// ports, a watchdog that stops the servers when the Node process dies without cleaning up, a log
// tail, and the supervision of a server's children that uses them.
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import net from 'node:net';

/** Asks the OS for a free port on `host`. */
export function freePort(host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export const hostPort = (host, port) => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);

/**
 * Calls `start` again, up to three times in all, while it fails because a port picked by
 * freePort() was taken by someone else before the server bound it.
 * @template T
 * @param {() => Promise<T>} start
 * @returns {Promise<T>}
 */
export async function retryIfPortTaken(start) {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await start();
    } catch (error) {
      if (attempt >= 3 || !/address already in use/i.test(error.message)) throw error;
    }
  }
}

/**
 * Resolves once a connection to `address` (net.connect's options: host and port, or a Unix
 * socket's path) opens, and closes it.
 * @param {import('node:net').NetConnectOpts} address
 * @param {number} timeoutMS
 */
export function connectOnce(address, timeoutMS) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(address);
    socket.setTimeout(timeoutMS, () => socket.destroy(new Error('connect timed out')));
    socket.once('connect', () => {
      socket.destroy();
      resolve();
    });
    socket.once('error', reject);
  });
}

/**
 * A detached `sh` that holds a pipe from this process and, when the pipe closes, signals each
 * target in order (waiting up to 5 s for each to exit, then SIGKILL) and removes `removeDir`: the
 * servers also go away when this process dies without running its exit hooks (SIGKILL, a signal
 * without a handler). The caller kills it as soon as the servers exit, so it never signals a
 * reused pid.
 * @param {Array<{ pid: number | undefined, signal?: string }>} targets
 * @param {string | undefined} removeDir
 */
export function startWatchdog(targets, removeDir) {
  const live = targets.filter((target) => target.pid !== undefined);
  if (process.platform === 'win32' || live.length === 0) return undefined;
  const script = [
    'while read -r _; do :; done',
    'dir="$1"; shift',
    'for target in "$@"; do',
    '  sig="${target%%:*}"; pid="${target#*:}"',
    '  kill "-$sig" "$pid" 2>/dev/null',
    '  i=0; while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done',
    '  kill -KILL "$pid" 2>/dev/null',
    'done',
    'if [ -n "$dir" ]; then rm -rf "$dir"; fi',
  ].join('\n');
  const args = live.map(({ pid, signal = 'TERM' }) => `${signal}:${pid}`);
  const watchdog = spawn('sh', ['-c', script, 'mtp-watchdog', removeDir ?? '', ...args], {
    stdio: ['pipe', 'ignore', 'ignore'],
    detached: true,
  });
  watchdog.on('error', () => {});
  watchdog.unref();
  watchdog.stdin.on('error', () => {});
  watchdog.stdin.unref?.();
  return watchdog;
}

/** The last `maxLines` lines written to a child's stdout/stderr. */
export function tailBuffer(maxLines) {
  let lines = [];
  let partial = '';
  return {
    push: (chunk) => {
      const parts = (partial + chunk.toString()).split('\n');
      partial = parts.pop() ?? '';
      lines.push(...parts);
      if (lines.length > maxLines) lines = lines.slice(-maxLines);
    },
    text: () => [...lines, partial].filter(Boolean).join('\n') || '(empty)',
  };
}

/** Emergency stops of every group still running: run synchronously if this process exits without stopping them. */
const running = new Set();
let exitHookInstalled = false;

/**
 * The children of one throwaway server and the directory they run in, supervised together. Each
 * child's output goes to its log tail; a watchdog (startWatchdog) stops the children and removes
 * `runDir` if this process dies without cleaning up, and is killed once every child has exited;
 * an exit hook does the same synchronously on a plain process exit. stop() stops the children in
 * the reverse order of add(), each with its own signal and a SIGKILL after `killAfterMS`, then
 * removes `runDir`.
 * @param {string} runDir
 */
export function superviseChildren(runDir) {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const emergencyStop of running) emergencyStop();
    });
  }
  /** In stop order: the child added last first. */
  const children = [];
  let watchdog;
  const rearmWatchdog = () => {
    watchdog?.kill('SIGKILL');
    const live = children.filter((entry) => entry.exited === null);
    watchdog =
      live.length === 0
        ? undefined
        : startWatchdog(
            live.map(({ child, watchdogSignal }) => ({ pid: child.pid, signal: watchdogSignal })),
            runDir,
          );
  };
  const emergencyStop = () => {
    for (const { child } of children) child.kill('SIGKILL');
    watchdog?.kill('SIGKILL');
    rmSync(runDir, { recursive: true, force: true });
  };
  running.add(emergencyStop);

  let stopping;
  return {
    /**
     * Supervises `child` (just spawned, stdout/stderr piped unless `log` is left out). `signal`
     * stops it (TERM, INT, …), `watchdogSignal` is what the watchdog sends (default `signal`).
     * Returns `exited()`, `{ code, signal }` once it is gone (a spawn error counts), else null,
     * and `exit`, a promise of the same.
     * @param {import('node:child_process').ChildProcess} child
     * @param {{
     *   log?: { push: (chunk: unknown) => void }, signal?: string, watchdogSignal?: string, killAfterMS: number,
     * }} options
     */
    add(child, { log, signal = 'TERM', watchdogSignal = signal, killAfterMS }) {
      child.stdout?.on('data', (chunk) => log?.push(chunk));
      child.stderr?.on('data', (chunk) => log?.push(chunk));
      const entry = { child, signal, watchdogSignal, killAfterMS, exited: null, exit: undefined };
      entry.exit = new Promise((resolve) => {
        const gone = (status) => {
          entry.exited ??= status;
          resolve(entry.exited);
          // Only the children still running: the watchdog must never signal a reused pid.
          if (children.every((other) => other.exited !== null)) {
            watchdog?.kill('SIGKILL');
            watchdog = undefined;
          }
        };
        child.on('exit', (code, exitSignal) => gone({ code, signal: exitSignal }));
        child.on('error', (error) => {
          log?.push(`spawn error: ${error.message}\n`);
          gone({ code: null, signal: null });
        });
      });
      children.unshift(entry);
      rearmWatchdog();
      return { exit: entry.exit, exited: () => entry.exited };
    },
    /** Stops the children (idempotent) and removes `runDir`. */
    stop() {
      stopping ??= (async () => {
        running.delete(emergencyStop);
        for (const { child, signal, killAfterMS, exit, exited } of children) {
          if (exited !== null) continue;
          child.kill(`SIG${signal}`);
          const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMS);
          await exit;
          clearTimeout(timer);
        }
        watchdog?.kill('SIGKILL');
        await rm(runDir, { recursive: true, force: true, maxRetries: 3 });
      })();
      return stopping;
    },
  };
}
