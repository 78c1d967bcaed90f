#!/usr/bin/env node
// One-step set-up for a fresh clone, run first by `npm test`, `npm run demo` and `npm run bench`:
// installs the npm dependencies when node_modules is missing or older than package-lock.json,
// then makes sure the FerretDB v1 binary exists (building it on first use). With --upstreams (what
// `npm test` passes) it also builds the upstreams the test run will use (test/helpers/upstreams.ts):
// by default DocumentDB and its gateway (scripts/documentdb.mjs; the first build needs root and
// apt), FerretDB v2 too with MTP_TEST_UPSTREAM=ferretdb2, nothing more with
// MTP_TEST_UPSTREAM=ferretdb1 or mongodb. Each build is cached and stamped: later runs take
// seconds. With --compat (npm test) it also prepares the compatibility suite's client programs
// (pymongo venv, Go driver program; --java adds the Java driver program): scripts/compat-clients.mjs.
// `--helm` (.ci/run) also builds helm for test/integration/helm.test.ts when Go is there, so that
// the timed test run does not (otherwise that test builds it on first use). Uses only Node
// built-ins until the install is done, because nothing else is there yet.
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const lockFile = path.join(root, 'package-lock.json');
const installedLock = path.join(root, 'node_modules', '.package-lock.json');

function dependenciesCurrent() {
  return existsSync(installedLock) && statSync(installedLock).mtimeMs >= statSync(lockFile).mtimeMs;
}

// A node_modules that is a symbolic link is shared with other checkouts (e.g. git worktrees):
// `npm ci` would empty the directory it points to under every one of them. Leave it alone.
const sharedInstall =
  existsSync(path.join(root, 'node_modules')) && lstatSync(path.join(root, 'node_modules')).isSymbolicLink();

if (sharedInstall && !dependenciesCurrent()) {
  process.stderr.write(
    '[setup] node_modules is a shared (symlinked) install: not running npm ci; update it where it points\n',
  );
} else if (!dependenciesCurrent()) {
  process.stderr.write('[setup] installing npm dependencies (npm ci)\n');
  const result = spawnSync('npm', ['ci'], { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) {
    process.stderr.write('[setup] npm ci failed\n');
    process.exit(result.status ?? 1);
  }
}

// A real MongoDB needs no FerretDB.
if (!process.env.MONGODB_URI) {
  const { ensureFerretDB } = await import('./ferretdb.mjs');
  try {
    const binary = await ensureFerretDB();
    if (process.env.CI) process.stderr.write(`[setup] FerretDB: ${binary}\n`);
  } catch (error) {
    process.stderr.write(`[setup] FerretDB: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  }
}

if (process.argv.includes('--upstreams')) {
  const chosen = process.env.MONGODB_URI ? 'mongodb' : process.env.MTP_TEST_UPSTREAM || 'documentdb';
  if (chosen === 'documentdb' || chosen === 'ferretdb2') {
    const { ensureDocumentDB } = await import('./documentdb.mjs');
    const started = Date.now();
    try {
      await ensureDocumentDB({ ferretdb2: chosen === 'ferretdb2' });
      if (process.env.CI) {
        process.stderr.write(`[setup] DocumentDB ready (${((Date.now() - started) / 1000).toFixed(1)} s)\n`);
      }
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      process.stderr.write(`[setup] DocumentDB: ${message}\n`);
      if (error instanceof Error && error.name !== 'MissingPrerequisiteError' && error.stack) {
        process.stderr.write(`${error.stack}\n`);
      }
      process.exit(1);
    }
  }
}

if (process.argv.includes('--compat')) {
  const { ensureGoClient, ensureJavaClient, ensureMongoshHome, ensurePymongo } = await import('./compat-clients.mjs');
  try {
    await ensurePymongo();
    await ensureGoClient();
    await ensureMongoshHome();
    if (process.argv.includes('--java')) await ensureJavaClient();
  } catch (error) {
    process.stderr.write(`[setup] compatibility clients: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  }
}

if (process.argv.includes('--helm')) {
  const { ensureHelm, goAvailable, helmPresent } = await import('./helm.mjs');
  if ((await helmPresent()) || (await goAvailable())) {
    try {
      const binary = await ensureHelm();
      if (process.env.CI) process.stderr.write(`[setup] helm: ${binary}\n`);
    } catch (error) {
      // Not fatal here: the helm test tries again and reports the failure where it belongs.
      process.stderr.write(`[setup] helm: ${error instanceof Error ? error.message : String(error)}\n`);
    }
  }
}
