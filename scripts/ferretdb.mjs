// FerretDB as a local, throwaway MongoDB-compatible upstream for tests, the demo and the bench.
//
// No Docker engine or MongoDB server is assumed. FerretDB v1 (SQLite handler) is built from its Go
// module into a per-user cache outside the repository:
//   ${XDG_CACHE_HOME:-$HOME/.cache}/mongo-tenant-proxy/ferretdb-<version>/ferretdb
// `go install …/cmd/ferretdb@version` is not enough: the module zip lacks the generated
// build/version/version.txt and the binary panics at start. So the module source is copied to the
// cache, version.txt is written, and the binary is built from that copy.
// MTP_FERRETDB_BIN=/path/to/ferretdb skips all of this and uses an existing binary.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, cp, mkdir, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { MongoClient } from 'mongodb';
import { isExecutable, run } from './lib/exec.mjs';
import { connectOnce, freePort, hostPort, retryIfPortTaken, superviseChildren, tailBuffer } from './lib/processes.mjs';

export { freePort };

export const FERRETDB_VERSION = 'v1.24.2';
const FERRETDB_MODULE = 'github.com/FerretDB/FerretDB';

const defaultLog = (message) => process.stderr.write(`[ferretdb] ${message}\n`);

/** The directory holding the module copy and the binary for FERRETDB_VERSION. */
export function ferretdbCacheDir() {
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.resolve(base, 'mongo-tenant-proxy', `ferretdb-${FERRETDB_VERSION}`);
}

/**
 * Returns the path of a runnable FerretDB binary, building it into the cache when it is missing.
 * @param {{ log?: (message: string) => void }} [options]
 */
export async function ensureFerretDB({ log = defaultLog } = {}) {
  const override = process.env.MTP_FERRETDB_BIN;
  if (override) {
    const binary = path.resolve(override);
    if (!(await isExecutable(binary))) {
      throw new Error(`MTP_FERRETDB_BIN=${override} is not an executable file`);
    }
    return binary;
  }
  const dir = ferretdbCacheDir();
  const binary = path.join(dir, 'ferretdb');
  if (await isExecutable(binary)) return binary;
  await buildFerretDB(dir, binary, log);
  return binary;
}

async function buildFerretDB(dir, binary, log) {
  const started = Date.now();
  const env = goEnv();
  try {
    await run('go', ['version'], { env });
  } catch (error) {
    throw new Error(
      `FerretDB ${FERRETDB_VERSION} is not built yet and building it needs the Go toolchain (go >= 1.24) ` +
        `on PATH (${error.message}). Alternatives: MTP_FERRETDB_BIN=<ferretdb binary> or MONGODB_URI=<real MongoDB>.`,
      { cause: error },
    );
  }
  log(`building FerretDB ${FERRETDB_VERSION} into ${dir} (a minute or more on a cold Go cache)`);
  await mkdir(dir, { recursive: true });
  const heartbeat = setInterval(() => log(`still building (${Math.round((Date.now() - started) / 1000)} s)`), 15_000);
  const output = path.join(dir, `ferretdb.tmp-${process.pid}`);
  try {
    const source = await prepareSource(dir, env, log);
    const build = (extra) =>
      run('go', ['build', '-buildvcs=false', ...extra, '-o', output, './cmd/ferretdb'], { cwd: source, env });
    log('go build ./cmd/ferretdb');
    try {
      await build([]);
    } catch (error) {
      // Newer linkers refuse the go:linkname references some dependencies still use.
      if (!/linkname/i.test(error.message)) throw error;
      log('linker refused a go:linkname reference; retrying with -ldflags=-checklinkname=0');
      await build(['-ldflags=-checklinkname=0']);
    }
    const { stdout } = await run(output, ['--version'], { env });
    if (!stdout.includes(`version: ${FERRETDB_VERSION}`)) {
      throw new Error(`the built binary reports an unexpected version:\n${stdout}`);
    }
    await rename(output, binary); // atomic: a concurrent build simply wins or loses the race
    log(`built ${binary} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    clearInterval(heartbeat);
    await rm(output, { force: true }); // left only by a failed build
  }
}

/** A writable copy of the module source with build/version/version.txt generated. */
async function prepareSource(dir, env, log) {
  const source = path.join(dir, 'src');
  if (existsSync(path.join(source, 'build', 'version', 'version.txt'))) return source;

  log(`go mod download ${FERRETDB_MODULE}@${FERRETDB_VERSION}`);
  const { stdout } = await run('go', ['mod', 'download', '-json', `${FERRETDB_MODULE}@${FERRETDB_VERSION}`], {
    cwd: dir,
    env,
  });
  const info = JSON.parse(stdout);
  if (info.Error || !info.Dir) throw new Error(`go mod download failed: ${info.Error ?? stdout}`);

  const staging = await mkdtemp(path.join(dir, 'src.tmp-'));
  try {
    await cp(info.Dir, staging, { recursive: true });
    await makeWritable(staging); // the module cache is read-only
    await writeFile(path.join(staging, 'build', 'version', 'version.txt'), `${FERRETDB_VERSION}\n`);
    await rm(source, { recursive: true, force: true }); // a partial copy from an interrupted run
    await rename(staging, source);
  } catch (error) {
    await rm(staging, { recursive: true, force: true });
    if (existsSync(path.join(source, 'build', 'version', 'version.txt'))) return source; // a concurrent run won
    throw error;
  }
  return source;
}

async function makeWritable(dir) {
  await chmod(dir, 0o755);
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const target = path.join(dir, entry.name);
    if (entry.isDirectory()) await makeWritable(target);
    else if (entry.isFile()) await chmod(target, 0o644);
  }
}

/** Go needs a home for its module and build caches; CI shells sometimes have no HOME. */
function goEnv() {
  const env = { ...process.env, GOWORK: 'off' };
  if (!env.HOME) env.HOME = os.homedir();
  return env;
}

// ---------------------------------------------------------------------------------------------
// Running instances

/**
 * Starts FerretDB (SQLite handler) and resolves once it answers `hello`.
 *
 * @param {{
 *   port?: number, host?: string,
 *   auth?: { username: string, password: string, database: string },
 *   tls?: { certFile: string, keyFile: string, caFile?: string },
 *   replSetName?: string, extraArgs?: string[],
 *   dataDir?: string, logLevel?: 'debug' | 'info' | 'warn' | 'error',
 *   startTimeoutMS?: number, stopTimeoutMS?: number, log?: (message: string) => void,
 * }} [options]
 *   `dataDir` keeps the data in that directory across runs; without it the data lives in the
 *   instance's temporary directory under os.tmpdir(), which stop() removes.
 */
export async function startFerretDB(options = {}) {
  const binary = await ensureFerretDB({ log: options.log });
  // A port picked by freePort() can be taken again before FerretDB binds it: retry then.
  if (options.port !== undefined) return startOnce(binary, options);
  return retryIfPortTaken(() => startOnce(binary, options));
}

async function startOnce(binary, options) {
  const {
    host = '127.0.0.1',
    auth,
    tls,
    replSetName,
    extraArgs = [],
    logLevel = 'error',
    startTimeoutMS = 30_000,
    stopTimeoutMS = 5_000,
  } = options;
  const port = options.port ?? (await freePort(host));
  const tlsPort = tls ? await freePort(host) : undefined;
  // Private to this instance (state, Unix socket, data unless `dataDir`); removed by stop().
  const runDir = await mkdtemp(path.join(os.tmpdir(), 'mtp-ferretdb-'));
  const dataDir = options.dataDir ? path.resolve(options.dataDir) : runDir;
  const sqliteDir = path.join(dataDir, 'sqlite');
  const stateDir = path.join(runDir, 'state');
  const socketPath = path.join(runDir, 'ferretdb.sock');
  await mkdir(sqliteDir, { recursive: true });
  await mkdir(stateDir, { recursive: true });

  const args = [
    '--handler=sqlite',
    `--sqlite-url=file:${sqliteDir}/`,
    `--listen-addr=${hostPort(host, port)}`,
    `--listen-unix=${socketPath}`,
    `--state-dir=${stateDir}`,
    '--debug-addr=', // no debug HTTP listener: one port less to collide on
    '--telemetry=disable',
    `--log-level=${logLevel}`,
  ];
  if (auth) {
    args.push(
      `--setup-username=${auth.username}`,
      `--setup-password=${auth.password}`,
      `--setup-database=${auth.database}`,
      '--test-enable-new-auth',
    );
  }
  if (tls) {
    args.push(
      `--listen-tls=${hostPort(host, tlsPort)}`,
      `--listen-tls-cert-file=${tls.certFile}`,
      `--listen-tls-key-file=${tls.keyFile}`,
    );
    if (tls.caFile) args.push(`--listen-tls-ca-file=${tls.caFile}`);
  }
  if (replSetName) args.push(`--repl-set-name=${replSetName}`);
  args.push(...extraArgs);

  const children = superviseChildren(runDir);
  const logTail = tailBuffer(200);
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const { exited } = children.add(child, { log: logTail, signal: 'TERM', killAfterMS: stopTimeoutMS });
  const stop = () => children.stop();

  const credentials = auth ? `${encodeURIComponent(auth.username)}:${encodeURIComponent(auth.password)}@` : '';
  const query = new URLSearchParams({ directConnection: 'true' });
  if (auth) query.set('authSource', auth.database);
  const uri = `mongodb://${credentials}${hostPort(host, port)}/?${query}`;
  let tlsUri;
  if (tls) {
    const tlsQuery = new URLSearchParams(query);
    tlsQuery.set('tls', 'true');
    if (tls.caFile) tlsQuery.set('tlsCAFile', tls.caFile);
    tlsUri = `mongodb://${credentials}${hostPort(host, tlsPort)}/?${tlsQuery}`;
  }

  try {
    await waitUntilReady({
      socketPath,
      uri,
      tlsAddress: tls ? { host, port: tlsPort } : undefined,
      deadline: Date.now() + startTimeoutMS,
      hasExited: () => exited() !== null,
    });
  } catch (error) {
    await stop();
    const status = exited() ? ` (exit code ${exited().code}, signal ${exited().signal})` : '';
    throw new Error(
      `FerretDB did not become ready on ${hostPort(host, port)}${status}: ${error.message}\n--- FerretDB log tail ---\n${logTail.text()}`,
      { cause: error },
    );
  }

  return {
    uri,
    host,
    port,
    tlsUri,
    tlsPort,
    socketPath,
    dataDir,
    process: child,
    logTail: () => logTail.text(),
    stop,
  };
}

/**
 * Ready means: this child answers hello on its own Unix socket, which FerretDB creates only after
 * binding the TCP port (so the port is ours, not another server's that happened to take it), and
 * hello over TCP succeeds with the URI's credentials. With TLS, the TLS port must accept too.
 */
async function waitUntilReady({ socketPath, uri, tlsAddress, deadline, hasExited }) {
  const socketUri = `mongodb://${encodeURIComponent(socketPath)}/?directConnection=true`;
  let lastError = new Error('not tried');
  while (Date.now() < deadline) {
    if (hasExited()) throw new Error('the process exited during start-up');
    try {
      if (existsSync(socketPath)) {
        await hello(socketUri);
        await hello(uri);
        if (tlsAddress) await connectOnce(tlsAddress, 2_000);
        if (hasExited()) throw new Error('the process exited during start-up');
        return;
      }
      lastError = new Error(`${socketPath} does not exist yet`);
    } catch (error) {
      lastError = error;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out; last error: ${lastError.message}`);
}

async function hello(uri) {
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 2_000, connectTimeoutMS: 2_000 });
  try {
    const reply = await client.db('admin').command({ hello: 1 });
    if (reply.ok !== 1) throw new Error(`hello answered ${JSON.stringify(reply)}`);
  } finally {
    await client.close();
  }
}
