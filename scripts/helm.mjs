#!/usr/bin/env node
// Helm for the chart tests and for rendering the chart locally, without a system package.
//
// Helm is not in Debian, so it is built from its Go module into a per-user cache outside the
// repository, once:
//   ${XDG_CACHE_HOME:-$HOME/.cache}/mongo-tenant-proxy/helm-<version>/bin/helm
// with `GOBIN=<that bin> go install -ldflags=… helm.sh/helm/v3/cmd/helm@<version>`, about 1.5
// minutes on a cold Go cache (the ldflags set the version and the default Kubernetes version, as
// helm's release build does). MTP_HELM_BIN=/path/to/helm skips all of this and uses an existing binary.
//
// As a command, it ensures helm and runs it with the given arguments:
//   node scripts/helm.mjs template my-proxy helm/mongo-tenant-proxy -f values.yaml

import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isExecutable, run } from './lib/exec.mjs';

export const HELM_VERSION = 'v3.22.0';
const HELM_MODULE = 'helm.sh/helm/v3';
// What helm's Makefile sets with -ldflags for a release: without them `helm version` says "v3.22"
// and `helm template` assumes Kubernetes v1.20 (this release's client-go is v0.37: 1.37).
const HELM_LDFLAGS = [
  `-X ${HELM_MODULE}/internal/version.version=${HELM_VERSION}`,
  ...['pkg/chartutil', 'pkg/lint/rules'].flatMap((pkg) => [
    `-X ${HELM_MODULE}/${pkg}.k8sVersionMajor=1`,
    `-X ${HELM_MODULE}/${pkg}.k8sVersionMinor=37`,
  ]),
].join(' ');

const defaultLog = (message) => process.stderr.write(`[helm] ${message}\n`);

/** The directory holding bin/helm for HELM_VERSION. */
export function helmCacheDir() {
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.resolve(base, 'mongo-tenant-proxy', `helm-${HELM_VERSION}`);
}

/** True when the Go toolchain runs (needed only when helm is not built yet). */
export async function goAvailable() {
  try {
    await run('go', ['version'], { env: goEnv() });
    return true;
  } catch {
    return false;
  }
}

/** True when a helm binary is already there (MTP_HELM_BIN or the cache): no Go needed. */
export async function helmPresent() {
  const override = process.env.MTP_HELM_BIN;
  return isExecutable(override ? path.resolve(override) : path.join(helmCacheDir(), 'bin', 'helm'));
}

/**
 * Returns the path of a runnable helm binary, building it into the cache when it is missing.
 * @param {{ log?: (message: string) => void }} [options]
 */
export async function ensureHelm({ log = defaultLog } = {}) {
  const override = process.env.MTP_HELM_BIN;
  if (override) {
    const binary = path.resolve(override);
    if (!(await isExecutable(binary))) throw new Error(`MTP_HELM_BIN=${override} is not an executable file`);
    return binary;
  }
  const dir = helmCacheDir();
  const binary = path.join(dir, 'bin', 'helm');
  if ((await isExecutable(binary)) && (await reportsVersion(binary))) return binary;
  await buildHelm(dir, binary, log);
  return binary;
}

/** False for a binary from an interrupted or differently built install: it is rebuilt. */
async function reportsVersion(binary) {
  try {
    const { stdout } = await run(binary, ['version', '--short'], { env: helmEnv(path.dirname(binary)) });
    return stdout.trim().startsWith(`${HELM_VERSION}+`) || stdout.trim() === HELM_VERSION;
  } catch {
    return false;
  }
}

async function buildHelm(dir, binary, log) {
  const started = Date.now();
  const env = goEnv();
  if (!(await goAvailable())) {
    throw new Error(
      `helm ${HELM_VERSION} is not built yet and building it needs the Go toolchain on PATH. ` +
        'Alternative: MTP_HELM_BIN=<helm binary>.',
    );
  }
  log(`building helm ${HELM_VERSION} into ${dir} (about 1.5 minutes on a cold Go cache)`);
  await mkdir(dir, { recursive: true });
  // Installed into a private directory, then renamed: a concurrent build simply wins or loses.
  const staging = await mkdtemp(path.join(dir, 'bin.tmp-'));
  const heartbeat = setInterval(() => log(`still building (${Math.round((Date.now() - started) / 1000)} s)`), 15_000);
  try {
    await run('go', ['install', `-ldflags=${HELM_LDFLAGS}`, `${HELM_MODULE}/cmd/helm@${HELM_VERSION}`], {
      env: { ...env, GOBIN: staging },
    });
    const built = path.join(staging, 'helm');
    if (!(await reportsVersion(built))) throw new Error(`the built helm does not report version ${HELM_VERSION}`);
    await mkdir(path.dirname(binary), { recursive: true });
    await rename(built, binary);
    log(`built ${binary} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    clearInterval(heartbeat);
    await rm(staging, { recursive: true, force: true });
  }
}

/** Go needs a home for its module and build caches; CI shells sometimes have no HOME. */
function goEnv() {
  const env = {
    ...process.env,
    GOWORK: 'off',
    GOFLAGS: [process.env.GOFLAGS, '-buildvcs=false'].filter(Boolean).join(' '),
  };
  if (!env.HOME) env.HOME = os.homedir();
  return env;
}

/**
 * Environment for running helm without touching the user's helm set-up: its cache, config and
 * data directories (repositories, plugins, registry logins) under `home`.
 */
export function helmEnv(home) {
  return {
    ...process.env,
    HELM_CACHE_HOME: path.join(home, 'cache'),
    HELM_CONFIG_HOME: path.join(home, 'config'),
    HELM_DATA_HOME: path.join(home, 'data'),
  };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const helm = await ensureHelm();
    const result = spawnSync(helm, process.argv.slice(2), { stdio: 'inherit' });
    process.exit(result.status ?? 1);
  } catch (error) {
    defaultLog(error instanceof Error ? error.message : String(error));
    process.exit(1);
  }
}
