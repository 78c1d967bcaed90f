// Helpers shared by the scripts that run throwaway servers (FerretDB, DocumentDB): free ports, a
// watchdog that stops the servers when the Node process dies without cleaning up, a log tail.
import { spawn } from 'node:child_process';
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
