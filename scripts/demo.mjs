#!/usr/bin/env node
// `npm run demo`: FerretDB as the upstream, the proxy in front of it, both stopped by Ctrl-C.
//
//   DEMO_PORT          client port of the proxy (default 27018)
//   DEMO_METRICS_PORT  Prometheus /metrics port (default 9216)
//   DEMO_UPSTREAM      documentdb | ferretdb2: a throwaway DocumentDB (PostgreSQL 15) behind its
//                      gateway or FerretDB v2 instead of FerretDB v1 (scripts/documentdb.mjs; its
//                      first build needs root; its data is gone when the demo stops)
//
// SIGHUP is passed on to the proxy (a configuration reload), like a change to config/demo.yaml.
//
// FerretDB keeps its data in <FerretDB cache dir>/demo-data (printed at start), so documents written
// during one demo are still there in the next. Delete that directory to start empty.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MongoClient } from 'mongodb';
import { FERRETDB_VERSION, ensureFerretDB, ferretdbCacheDir, startFerretDB } from './ferretdb.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const host = '127.0.0.1';
const port = Number(process.env.DEMO_PORT ?? 27018);
const metricsPort = Number(process.env.DEMO_METRICS_PORT ?? 9216);
const say = (message) => process.stderr.write(`[demo] ${message}\n`);

const upstreamChoice = process.env.DEMO_UPSTREAM || 'ferretdb1';
if (!['ferretdb1', 'documentdb', 'ferretdb2'].includes(upstreamChoice)) {
  say(`DEMO_UPSTREAM=${upstreamChoice}: expected ferretdb1, documentdb or ferretdb2`);
  process.exit(2);
}
if (upstreamChoice === 'ferretdb1') await ensureFerretDB();
if (distIsStale()) {
  say('dist/ is missing or older than src/: npm run build');
  await runToCompletion(process.platform === 'win32' ? 'npm.cmd' : 'npm', ['run', 'build']);
}

const dataDir = path.join(ferretdbCacheDir(), 'demo-data');
const ferret = await startDemoUpstream();
say(`${ferret.name} listening at ${ferret.uri}${upstreamChoice === 'ferretdb1' ? ` (data in ${dataDir})` : ''}`);

async function startDemoUpstream() {
  if (upstreamChoice === 'ferretdb1') {
    return { name: `FerretDB ${FERRETDB_VERSION}`, ...(await startFerretDB({ dataDir })) };
  }
  const { startDocumentDB, DOCUMENTDB_VERSION } = await import('./documentdb.mjs');
  const front = upstreamChoice === 'documentdb' ? 'gateway' : 'ferretdb2';
  const instance = await startDocumentDB({ front });
  const name = `DocumentDB ${DOCUMENTDB_VERSION} (${front === 'gateway' ? 'its gateway' : 'FerretDB v2'})`;
  return { name, uri: instance.uri, stop: () => instance.stop() };
}

const proxy = spawn(
  process.execPath,
  [
    path.join(root, 'bin', 'mongo-tenant-proxy'),
    'serve',
    '--config',
    path.join(root, 'config', 'demo.yaml'),
    '--listen',
    `${host}:${port}`,
    '--upstream',
    ferret.uri,
    '--metrics-listen',
    `${host}:${metricsPort}`,
  ],
  { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] },
);
const proxyExit = new Promise((resolve) => {
  proxy.on('exit', (code, signal) => resolve({ code, signal }));
  proxy.on('error', (error) => {
    say(`could not start the proxy: ${error.message}`);
    resolve({ code: 1, signal: null });
  });
});

let shuttingDown = false;
async function shutdown(exitCode) {
  if (shuttingDown) return;
  shuttingDown = true;
  if (proxy.exitCode === null && proxy.signalCode === null) {
    proxy.kill('SIGTERM');
    const timer = setTimeout(() => proxy.kill('SIGKILL'), 10_000);
    const { code } = await proxyExit;
    clearTimeout(timer);
    // A proxy that did not stop cleanly (drain failure, SIGKILL) fails the demo too.
    if (code !== 0) exitCode ||= 1;
  }
  await ferret.stop();
  process.exit(exitCode);
}
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    if (shuttingDown) {
      proxy.kill('SIGKILL'); // a second Ctrl-C: stop waiting
      return;
    }
    say(`${signal}: stopping the proxy and ${ferret.name}`);
    void shutdown(0);
  });
}
// SIGHUP reloads the proxy's configuration (as `kill -HUP` on the proxy itself would); without
// this handler it would end the demo and leave the proxy running.
process.on('SIGHUP', () => {
  if (!shuttingDown) proxy.kill('SIGHUP');
});
void proxyExit.then(({ code, signal }) => {
  if (shuttingDown) return;
  say(`the proxy exited (${signal ?? `code ${code}`}); stopping ${ferret.name}`);
  void shutdown(code || 1);
});

const uri = `mongodb://${host}:${port}/?directConnection=true`;
let ready = false;
try {
  await waitForProxy(uri, 30_000);
  ready = true;
} catch (error) {
  if (!shuttingDown) {
    say(`the proxy did not answer at ${uri}: ${error.message}`);
    void shutdown(1);
  }
}
if (ready && !shuttingDown)
  printBox([
    'mongo-tenant-proxy demo is running',
    '',
    `Connect:   ${uri}`,
    `Shell:     npx mongosh "${uri}"`,
    `Metrics:   http://${host}:${metricsPort}/metrics`,
    `Upstream:  ${ferret.name} at ${ferret.uri.replace(/\/\/[^@/]*@/, '//')}`,
    `Reload:    edit config/demo.yaml, or kill -HUP ${process.pid}`,
    '',
    `Ctrl-C stops the proxy and ${ferret.name}.`,
  ]);

/** True when dist/ is absent or some source or build setting changed after the last build. */
function distIsStale() {
  const dist = path.join(root, 'dist');
  if (!existsSync(dist)) return true;
  const newest = (dir, filter) => {
    let latest = 0;
    for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
      if (!entry.isFile() || !filter(entry.name)) continue;
      latest = Math.max(latest, statSync(path.join(entry.parentPath ?? entry.path, entry.name)).mtimeMs);
    }
    return latest;
  };
  const built = newest(dist, (name) => name.endsWith('.js'));
  const sources = Math.max(
    newest(path.join(root, 'src'), (name) => name.endsWith('.ts')),
    ...['tsconfig.json', 'tsconfig.build.json', 'package.json'].map((file) => statSync(path.join(root, file)).mtimeMs),
  );
  return built < sources;
}

function runToCompletion(command, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: root, stdio: 'inherit' });
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`${command} ${args.join(' ')} exited with ${code}`)),
    );
  });
}

async function waitForProxy(target, timeoutMS) {
  const deadline = Date.now() + timeoutMS;
  let lastError = new Error('not tried');
  while (Date.now() < deadline && !shuttingDown) {
    try {
      await new Promise((resolve, reject) => {
        const socket = net.connect({ host, port }, () => {
          socket.destroy();
          resolve();
        });
        socket.once('error', reject);
      });
      const client = new MongoClient(target, { serverSelectionTimeoutMS: 2_000 });
      try {
        await client.db('admin').command({ ping: 1 });
        return;
      } finally {
        await client.close();
      }
    } catch (error) {
      lastError = error;
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw lastError;
}

function printBox(lines) {
  const width = Math.max(...lines.map((line) => line.length));
  const out = [
    `┌${'─'.repeat(width + 2)}┐`,
    ...lines.map((line) => `│ ${line.padEnd(width)} │`),
    `└${'─'.repeat(width + 2)}┘`,
  ];
  process.stdout.write(`\n${out.join('\n')}\n\n`);
}
