// mongobetween (Coinbase's Go connection pooler for MongoDB) as a comparison target of the bench
// (bench/run.mjs, BENCH_TARGETS=mongobetween). Used by the bench only, not by the tests or setup.
//
// github.com/coinbase/mongobetween is not served by the Go module proxy reachable here, so it is
// built from a copy of its git repository at a pinned commit; its dependencies come from the Go
// module proxy (-mod=mod: the repository has no vendor/ folder):
//   MTP_MONGOBETWEEN_SRC   the repository: a bare git directory or a clone;
//                          default /work/.mirror/coinbase+mongobetween/repo
//   MTP_MONGOBETWEEN_BIN   an existing mongobetween binary: skips the build
// into a per-user cache outside the repository:
//   ${XDG_CACHE_HOME:-$HOME/.cache}/mongo-tenant-proxy/mongobetween-<commit12>/mongobetween
// Idempotent: a binary already there is reused. A cold build downloads ~40 modules (a few minutes).
//
//   node scripts/mongobetween.mjs      builds if needed, prints the binary's path on stdout

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { isExecutable, run } from './lib/exec.mjs';
import { connectOnce, freePort, hostPort, retryIfPortTaken, superviseChildren, tailBuffer } from './lib/processes.mjs';

export const DEFAULT_MONGOBETWEEN_SRC = '/work/.mirror/coinbase+mongobetween/repo';
/** "test: resolve remaining linter errors on build (#78)", the newest commit on master in the snapshot. */
export const MONGOBETWEEN_COMMIT = 'ea5a87ec253f0c21f2d1a285bde29f21c10e1743';

const defaultLog = (message) => process.stderr.write(`[mongobetween] ${message}\n`);

function cacheDir() {
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.resolve(base, 'mongo-tenant-proxy', `mongobetween-${MONGOBETWEEN_COMMIT.slice(0, 12)}`);
}

/** Module mode with dependencies from the proxy; the local toolchain only; HOME for Go's caches. */
function goEnv() {
  const env = { ...process.env, GOWORK: 'off', GOFLAGS: '-mod=mod', GOTOOLCHAIN: 'local' };
  if (!env.HOME) env.HOME = os.homedir();
  return env;
}

function gitArgs(source) {
  if (existsSync(path.join(source, 'HEAD')) && existsSync(path.join(source, 'objects'))) return [`--git-dir=${source}`];
  if (existsSync(path.join(source, '.git'))) return ['-C', source];
  throw new Error(
    `${source} is not a git repository: set MTP_MONGOBETWEEN_SRC to a clone (or bare copy) of ` +
      'github.com/coinbase/mongobetween, or MTP_MONGOBETWEEN_BIN to a built binary',
  );
}

/**
 * Returns the path of a runnable mongobetween binary, building it into the cache when missing.
 * @param {{ log?: (message: string) => void, source?: string }} [options]
 */
export async function ensureMongobetween({ log = defaultLog, source } = {}) {
  const override = process.env.MTP_MONGOBETWEEN_BIN;
  if (override) {
    const binary = path.resolve(override);
    if (!(await isExecutable(binary))) throw new Error(`MTP_MONGOBETWEEN_BIN=${override} is not an executable file`);
    return binary;
  }
  const dir = cacheDir();
  const binary = path.join(dir, 'mongobetween');
  if (await isExecutable(binary)) return binary;

  const src = path.resolve(source ?? process.env.MTP_MONGOBETWEEN_SRC ?? DEFAULT_MONGOBETWEEN_SRC);
  if (!existsSync(src)) {
    throw new Error(
      `the mongobetween source ${src} does not exist: set MTP_MONGOBETWEEN_SRC to a clone of ` +
        'github.com/coinbase/mongobetween or MTP_MONGOBETWEEN_BIN to a built binary ' +
        '(or leave mongobetween out: BENCH_TARGETS=direct,pipe,proxy)',
    );
  }
  const git = gitArgs(src);
  const env = goEnv();
  try {
    await run('go', ['version'], { env });
  } catch (error) {
    throw new Error(`building mongobetween needs the Go toolchain (go >= 1.18) on PATH: ${error.message}`, {
      cause: error,
    });
  }
  const started = Date.now();
  log(`building mongobetween ${MONGOBETWEEN_COMMIT.slice(0, 12)} from ${src} into ${dir} (minutes on a cold Go cache)`);
  await mkdir(dir, { recursive: true });
  const heartbeat = setInterval(() => log(`still building (${Math.round((Date.now() - started) / 1000)} s)`), 15_000);
  // A private copy per build: concurrent builds never share a half-written tree.
  const work = await mkdtemp(path.join(dir, 'src.tmp-'));
  const output = path.join(dir, `mongobetween.tmp-${process.pid}`);
  try {
    const archive = path.join(work, 'source.tar');
    await run('git', [...git, 'archive', '--format=tar', '-o', archive, MONGOBETWEEN_COMMIT]);
    await run('tar', ['-x', '-f', archive, '-C', work]);
    await rm(archive);
    log('go build .');
    try {
      await run('go', ['build', '-buildvcs=false', '-o', output, '.'], { cwd: work, env });
    } catch (error) {
      // A go.sum that no longer matches what the proxy serves, or a module the proxy refuses at
      // the pinned version: let `go mod tidy` pick versions it can get, once.
      log(`go build failed; retrying after go mod tidy:\n${error.message.split('\n').slice(0, 8).join('\n')}`);
      await run('go', ['mod', 'tidy'], { cwd: work, env });
      await run('go', ['build', '-buildvcs=false', '-o', output, '.'], { cwd: work, env });
    }
    const help = await new Promise((resolve) => {
      // `-h` prints the usage on stderr and exits 2: check that it is the program we meant.
      const child = spawn(output, ['-h'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let text = '';
      child.stdout.on('data', (chunk) => (text += chunk));
      child.stderr.on('data', (chunk) => (text += chunk));
      child.on('close', () => resolve(text));
      child.on('error', (error) => resolve(error.message));
    });
    if (!help.includes('-unlink')) throw new Error(`the built binary does not look like mongobetween:\n${help}`);
    await rename(output, binary); // atomic: a concurrent build simply wins or loses the race
    log(`built ${binary} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    clearInterval(heartbeat);
    await rm(work, { recursive: true, force: true });
    await rm(output, { force: true }); // left only by a failed build
  }
  return binary;
}

// ---------------------------------------------------------------------------------------------
// Running instances

/**
 * Starts mongobetween in front of `upstreamUri` and resolves once it accepts connections.
 *
 * It listens on a free loopback TCP port (`network: 'tcp4'`, the default) or on a Unix socket
 * (`network: 'unix'`: a fresh path in a private temporary directory, with `-unlink` as its README
 * asks for, so a stale socket file never blocks the start). `-ping` makes it reach the upstream
 * before it listens, so a listening mongobetween has a working upstream. Its statsd client sends
 * UDP datagrams to `statsd` (default: its own default, localhost:8125; nothing listens there, which
 * is what its per-message metrics cost anyway).
 *
 * @param {{
 *   upstreamUri: string, network?: 'tcp4' | 'unix', host?: string, logLevel?: string, statsd?: string,
 *   startTimeoutMS?: number, stopTimeoutMS?: number, log?: (message: string) => void,
 * }} options
 */
export async function startMongobetween(options) {
  const binary = await ensureMongobetween({ log: options.log });
  return retryIfPortTaken(() => startOnce(binary, options));
}

async function startOnce(binary, options) {
  const {
    upstreamUri,
    network = 'tcp4',
    host = '127.0.0.1',
    logLevel = 'warn',
    statsd,
    startTimeoutMS = 30_000,
    stopTimeoutMS = 5_000,
  } = options;
  const runDir = await mkdtemp(path.join(os.tmpdir(), 'mtp-mongobetween-'));
  let address;
  let listen;
  if (network === 'unix') {
    const socketPath = path.join(runDir, 'mongobetween.sock');
    address = { socketPath };
    listen = socketPath;
  } else {
    const port = await freePort(host);
    address = { host, port };
    listen = hostPort(host, port);
  }
  // `label` tags its logs and metrics; the URI is the Go driver's (directConnection=true makes its
  // topology Single, so mongobetween answers isMaster as a standalone, not as a mongos).
  const upstream = new URL(upstreamUri);
  upstream.searchParams.set('label', 'bench');
  const args = ['-network', network, `-loglevel=${logLevel}`, '-ping'];
  if (network === 'unix') args.push('-unlink');
  if (statsd) args.push(`-statsd=${statsd}`);
  args.push(`${listen}=${upstream.toString()}`);

  const children = superviseChildren(runDir);
  const logTail = tailBuffer(200);
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  // SIGTERM starts a graceful shutdown that waits for client connections to go away; a bench has
  // nothing to drain, so the kill follows soon (and the watchdog kills it outright).
  const { exited } = children.add(child, {
    log: logTail,
    signal: 'TERM',
    watchdogSignal: 'KILL',
    killAfterMS: Math.min(stopTimeoutMS, 1_000),
  });
  const stop = () => children.stop();

  try {
    await waitUntilListening(address, Date.now() + startTimeoutMS, () => exited() !== null);
  } catch (error) {
    await stop();
    const status = exited() ? ` (exit code ${exited().code}, signal ${exited().signal})` : '';
    throw new Error(
      `mongobetween did not start on ${listen}${status}: ${error.message}\n--- mongobetween log tail ---\n${logTail.text()}`,
      { cause: error },
    );
  }
  const uri =
    network === 'unix'
      ? `mongodb://${encodeURIComponent(address.socketPath)}/?directConnection=true`
      : `mongodb://${listen}/?directConnection=true`;
  return { uri, address, pid: child.pid, process: child, logTail: () => logTail.text(), stop };
}

async function waitUntilListening(address, deadline, hasExited) {
  let lastError = new Error('not tried');
  while (Date.now() < deadline) {
    if (hasExited()) throw new Error('the process exited during start-up');
    try {
      // net.connect names a Unix socket `path`; `address` (returned to callers) calls it socketPath.
      await connectOnce(address.socketPath ? { path: address.socketPath } : address, 1_000);
      if (hasExited()) throw new Error('the process exited during start-up');
      return;
    } catch (error) {
      lastError = error;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out; last error: ${lastError.message}`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  try {
    process.stdout.write(`${await ensureMongobetween()}\n`);
  } catch (error) {
    defaultLog(error instanceof Error ? error.message : String(error));
    process.exitCode = 1;
  }
}
