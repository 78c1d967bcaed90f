// DocumentDB (the MIT PostgreSQL extension under FerretDB v2 and Azure Cosmos DB for MongoDB vCore)
// as a second, more faithful throwaway test upstream: PostgreSQL 15 with the extension, fronted by
// DocumentDB's own Rust gateway (`pg_documentdb_gw`, which has transactions) or by FerretDB v2.
//
// Built from the vendored sources in ../shared/vendor (MTP_VENDOR_DIR overrides; SHA256SUMS is
// checked) into ${MTP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mongo-tenant-proxy}/documentdb-<version>/.
// What a fresh Debian 12 machine lacks comes from apt. PostgreSQL 15 loads extensions only from its
// own directories, so installing them needs root; running a cluster afterwards does not (as root,
// the server runs as the `postgres` user). Gotchas met on the way, each handled below:
//   - Debian's pg_cron 1.4.2 makes `CREATE EXTENSION documentdb CASCADE` fail ("invalid schedule:
//     2 seconds"): pg_cron 1.6.3 is built instead and Debian's package must not be installed;
//   - Debian's libbson 1.23 is too old: libbson 1.28 is built as a static library with -fPIC;
//   - Debian's libintelrdfpmath-dev works once a pkg-config file `intelmathlib.pc` names it;
//   - postgresql-server-dev-15 and postgresql-15-rum from the security repository would upgrade
//     the server: both are pinned to versions that fit the installed postgresql-15.
//
//   node scripts/documentdb.mjs build              build and install (what `node scripts/setup.mjs --upstreams` does)
//   node scripts/documentdb.mjs serve [ferretdb2]   a throwaway upstream until Ctrl-C; prints its URI

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, chown, copyFile, mkdir, mkdtemp, open, readFile, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isExecutable, run } from './lib/exec.mjs';
import { freePort, superviseChildren, tailBuffer } from './lib/processes.mjs';

export const DOCUMENTDB_VERSION = '0.106.0-ferretdb-2.5.0';
/** The extension's own version string (documentdb.control default_version). */
const EXTENSION_VERSION = '0.106-0';
export const FERRETDB2_VERSION = 'v2.5.0';
const FERRETDB2_MODULE = 'github.com/FerretDB/FerretDB/v2';
/** FerretDB 2.5 does not build with Go >= 1.25 (`undefined: setGOMAXPROCS`). */
const FERRETDB2_GOTOOLCHAIN = 'go1.24.6';
const PG_MAJOR = '15';

const ARCHIVES = {
  documentdb: `documentdb-${DOCUMENTDB_VERSION}.tar.gz`,
  pgCron: 'pg_cron-1.6.3.tar.gz',
  pgvector: 'pgvector-0.8.0.tar.gz',
  libbson: 'mongo-c-driver-1.28.0-libbson.tar.gz',
};

/** The `documentdb.*` settings FerretDB's own container sets (packaging/10-preload.sh). */
const DOCUMENTDB_SETTINGS = {
  'documentdb.enableCompact': 'true',
  'documentdb.enableLetAndCollationForQueryMatch': 'true',
  'documentdb.enableNowSystemVariable': 'true',
  'documentdb.enableSortbyIdPushDownToPrimaryKey': 'true',
  'documentdb.enableSchemaValidation': 'true',
  'documentdb.enableBypassDocumentValidation': 'true',
  'documentdb.enableUserCrud': 'true',
  'documentdb.maxUserLimit': '100',
};

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const defaultLog = (message) => process.stderr.write(`[documentdb] ${message}\n`);

/** A missing prerequisite; its message is one line that names the missing piece. */
export class MissingPrerequisiteError extends Error {
  name = 'MissingPrerequisiteError';
}

export function cacheBaseDir() {
  if (process.env.MTP_CACHE_DIR) return path.resolve(process.env.MTP_CACHE_DIR);
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.resolve(base, 'mongo-tenant-proxy');
}

export function documentdbCacheDir() {
  return path.join(cacheBaseDir(), `documentdb-${DOCUMENTDB_VERSION}`);
}

function vendorDir() {
  return path.resolve(process.env.MTP_VENDOR_DIR ?? path.join(root, '..', 'shared', 'vendor'));
}

async function pgConfig(flag) {
  const { stdout } = await run(path.join(pgBinDir(), 'pg_config'), [flag]);
  return stdout.trim();
}

function pgBinDir() {
  return `/usr/lib/postgresql/${PG_MAJOR}/bin`;
}

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;

// ---------------------------------------------------------------------------------------------
// Building

/**
 * Makes sure the extension is installed into PostgreSQL and the gateway (and, with
 * `ferretdb2: true`, FerretDB v2) is built; fast when a previous run left its stamp and the
 * installed files are still the ones it installed.
 * @param {{ log?: (message: string) => void, ferretdb2?: boolean }} [options]
 * @returns {Promise<{ gateway: string, certFile: string, keyFile: string, ferretdb2?: string }>}
 */
export async function ensureDocumentDB({ log = defaultLog, ferretdb2 = false } = {}) {
  const dir = documentdbCacheDir();
  const artifacts = {
    gateway: path.join(dir, 'bin', 'pg_documentdb_gw'),
    certFile: path.join(dir, 'gateway-cert.pem'),
    keyFile: path.join(dir, 'gateway-key.pem'),
  };
  if (!(await upToDate(dir, artifacts))) {
    await withLock(dir, log, async () => {
      if (await upToDate(dir, artifacts)) return;
      await build(dir, artifacts, log);
    });
  }
  if (!ferretdb2) return artifacts;
  return { ...artifacts, ferretdb2: await ensureFerretDB2({ log }) };
}

const stampFile = (dir) => path.join(dir, 'stamp.json');

async function readStamp(dir) {
  try {
    return JSON.parse(await readFile(stampFile(dir), 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * This cache's stamp is for this version and this server, its gateway is there, and the extension
 * this version needs is installed (by this cache's build or by another one: the installed files
 * are shared by every user and cache directory of the machine).
 */
async function upToDate(dir, artifacts) {
  const stamp = await readStamp(dir);
  if (stamp?.version !== DOCUMENTDB_VERSION) return false;
  for (const file of Object.values(artifacts)) if (!existsSync(file)) return false;
  try {
    return stamp.pgVersion === (await pgConfig('--version')) && (await extensionInstalled());
  } catch {
    return false;
  }
}

/** The files whose presence says the extension and its dependencies are installed. */
async function installedFiles() {
  const lib = await pgConfig('--pkglibdir');
  const ext = path.join(await pgConfig('--sharedir'), 'extension');
  return [
    path.join(lib, 'pg_documentdb_core.so'),
    path.join(lib, 'pg_documentdb.so'),
    path.join(lib, 'pg_cron.so'),
    path.join(lib, 'vector.so'),
    path.join(ext, 'documentdb.control'),
    path.join(ext, 'documentdb_core.control'),
    path.join(ext, 'pg_cron.control'),
    path.join(ext, 'vector.control'),
    path.join(ext, 'rum.control'),
    path.join(ext, 'postgis.control'),
    path.join(ext, 'tsm_system_rows.control'),
  ];
}

/** Every file in place, and the versions this script builds (another version would not match the gateway). */
async function extensionInstalled() {
  try {
    const files = await installedFiles();
    for (const file of files) if (!existsSync(file)) return false;
    const control = async (name) =>
      readFile(
        files.find((file) => file.endsWith(`/${name}.control`)),
        'utf8',
      );
    return (
      (await control('documentdb')).includes(`default_version = '${EXTENSION_VERSION}'`) &&
      (await control('pg_cron')).includes("default_version = '1.6'")
    );
  } catch {
    return false;
  }
}

async function sha256(file) {
  return createHash('sha256')
    .update(await readFile(file))
    .digest('hex');
}

/** One build at a time per cache directory (two worktrees may run setup at once). */
async function withLock(dir, log, fn) {
  await mkdir(dir, { recursive: true });
  const lock = path.join(dir, '.lock');
  for (let waited = 0; ; waited++) {
    try {
      const handle = await open(lock, 'wx');
      await handle.writeFile(String(process.pid));
      await handle.close();
      break;
    } catch (error) {
      if (error.code !== 'EEXIST') throw error;
      const owner = Number(await readFile(lock, 'utf8').catch(() => ''));
      if (!Number.isInteger(owner) || owner <= 0 || !processAlive(owner)) {
        await rm(lock, { force: true });
        continue;
      }
      if (waited % 30 === 0) log(`waiting for the build of process ${owner} to finish`);
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    }
  }
  try {
    return await fn();
  } finally {
    await rm(lock, { force: true });
  }
}

function processAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return error.code === 'EPERM';
  }
}

async function build(dir, artifacts, log) {
  const started = Date.now();
  const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;
  const checksums = await verifyArchives(log);
  const stamp = await readStamp(dir);
  const pgVersion = await pgConfig('--version');
  // Installed already (by root, for another user or cache directory): only the gateway may be missing.
  const installExtension =
    process.env.MTP_DOCUMENTDB_REBUILD === '1' ||
    !(await extensionInstalled()) ||
    (stamp?.pgVersion !== undefined && stamp.pgVersion !== pgVersion);
  const buildTheGateway = stamp?.version !== DOCUMENTDB_VERSION || !existsSync(artifacts.gateway);
  if (installExtension && !isRoot()) {
    throw new MissingPrerequisiteError(
      `DocumentDB ${DOCUMENTDB_VERSION} is not installed into PostgreSQL ${PG_MAJOR} and installing it needs root ` +
        '(apt-get install and make install into its directories): run `node scripts/setup.mjs --upstreams` as root once, ' +
        'or choose MTP_TEST_UPSTREAM=ferretdb1',
    );
  }
  log(`building DocumentDB ${DOCUMENTDB_VERSION} into ${dir} (a few minutes on a fresh machine)`);
  const heartbeat = setInterval(() => log(`still building (${elapsed()})`), 30_000);
  try {
    // Without a Rust toolchain (rustup's ~/.cargo/bin), Debian 12's own recent one builds the gateway.
    const rust = (await findCargo()) === undefined ? ['rustc-web', 'cargo-web'] : [];
    if (isRoot()) await installSystemPackages(log, rust);
    log(`packages ready (${elapsed()})`);
    const sources = path.join(dir, 'src');
    await rm(sources, { recursive: true, force: true });
    await mkdir(sources, { recursive: true });
    for (const archive of Object.values(ARCHIVES)) {
      await run('tar', ['-xzf', path.join(vendorDir(), archive), '-C', sources]);
    }
    const cargo = await findCargo();
    if (cargo === undefined && buildTheGateway) {
      throw new MissingPrerequisiteError(
        'building the DocumentDB gateway needs cargo (Rust): install rustup, or Debian 12 `apt-get install cargo-web rustc-web`',
      );
    }
    // The gateway (Rust) and the extension (C) share nothing: build them side by side.
    const gateway = buildTheGateway
      ? buildGateway(dir, sources, cargo, artifacts, log).then(() => log(`gateway built (${elapsed()})`))
      : Promise.resolve();
    const extension = installExtension
      ? buildExtension(dir, sources, log).then(() => log(`extension installed (${elapsed()})`))
      : Promise.resolve(log(`extension ${EXTENSION_VERSION} already installed in PostgreSQL ${PG_MAJOR}`));
    const results = await Promise.allSettled([gateway, extension]);
    for (const result of results) if (result.status === 'rejected') throw result.reason;
    if (!existsSync(artifacts.certFile) || !existsSync(artifacts.keyFile)) await makeCertificate(artifacts);
    await writeFile(
      stampFile(dir),
      JSON.stringify({ version: DOCUMENTDB_VERSION, archives: checksums, pgVersion }, null, 2) + '\n',
    );
    await rm(sources, { recursive: true, force: true });
    log(`DocumentDB ${DOCUMENTDB_VERSION} ready in ${elapsed()}`);
  } finally {
    clearInterval(heartbeat);
  }
}

/** Checks every archive against SHA256SUMS; returns their sums. */
async function verifyArchives(log) {
  const dir = vendorDir();
  let sums;
  try {
    sums = await readFile(path.join(dir, 'SHA256SUMS'), 'utf8');
  } catch {
    throw new MissingPrerequisiteError(
      `the vendored DocumentDB sources are missing: no ${path.join(dir, 'SHA256SUMS')} (../shared/vendor beside the clone, or set MTP_VENDOR_DIR)`,
    );
  }
  const expected = new Map(
    sums
      .split('\n')
      .map((line) => line.trim().split(/\s+\*?/))
      .filter((parts) => parts.length === 2)
      .map(([hash, name]) => [name, hash]),
  );
  const result = {};
  for (const archive of Object.values(ARCHIVES)) {
    const want = expected.get(archive);
    if (want === undefined) throw new Error(`SHA256SUMS in ${dir} has no line for ${archive}`);
    const file = path.join(dir, archive);
    if (!existsSync(file)) throw new MissingPrerequisiteError(`the vendored archive ${file} is missing`);
    const got = await sha256(file);
    if (got !== want) throw new Error(`${file}: SHA-256 ${got}, SHA256SUMS says ${want}; refusing to build it`);
    result[archive] = got;
  }
  log(`vendored sources verified (${Object.keys(result).length} archives)`);
  return result;
}

// --- apt -------------------------------------------------------------------------------------

const PACKAGES = [
  'build-essential',
  'cmake',
  'pkg-config',
  'openssl',
  'libssl-dev',
  'libkrb5-dev',
  'libpcre2-dev',
  'libintelrdfpmath-dev',
  `postgresql-${PG_MAJOR}`,
  `postgresql-server-dev-${PG_MAJOR}`,
  `postgresql-${PG_MAJOR}-rum`,
  `postgresql-${PG_MAJOR}-postgis-3`,
];

async function installedVersion(pkg) {
  try {
    const { stdout } = await run('dpkg-query', ['-W', '-f=${Status}\t${Version}', pkg]);
    const [status, version] = stdout.split('\t');
    return status?.endsWith(' installed') ? version : undefined;
  } catch {
    return undefined;
  }
}

async function installSystemPackages(log, extra = []) {
  const missing = [];
  for (const pkg of [...PACKAGES, ...extra]) if ((await installedVersion(pkg)) === undefined) missing.push(pkg);
  const debianCron = await installedVersion(`postgresql-${PG_MAJOR}-cron`);
  if (missing.length === 0 && debianCron === undefined) return;
  if (!(await commandExists('apt-get'))) {
    throw new MissingPrerequisiteError(
      `building DocumentDB needs these Debian packages, and apt-get is not available to install them: ${missing.join(' ')}`,
    );
  }
  const apt = (args) => run('apt-get', args, { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  if (debianCron !== undefined) {
    // Its 1.4.2 shares file names with the 1.6.3 built here and cannot run DocumentDB's jobs.
    log(`removing Debian's postgresql-${PG_MAJOR}-cron ${debianCron} (DocumentDB needs pg_cron 1.6)`);
    await apt(['remove', '-y', `postgresql-${PG_MAJOR}-cron`]);
  }
  if (missing.length === 0) return;
  log(`apt-get update; apt-get install ${missing.join(' ')}`);
  await apt(['update', '-q']);
  const server = await installedVersion(`postgresql-${PG_MAJOR}`);
  const wanted = [];
  for (const pkg of missing) {
    if (server !== undefined && pkg === `postgresql-server-dev-${PG_MAJOR}`) wanted.push(`${pkg}=${server}`);
    else if (server !== undefined && pkg.startsWith(`postgresql-${PG_MAJOR}-`))
      wanted.push(await fittingVersion(pkg, server));
    else wanted.push(pkg);
  }
  try {
    await apt(['install', '-y', '-q', '--no-install-recommends', ...wanted]);
  } catch (error) {
    throw new Error(`apt-get install ${wanted.join(' ')} failed: ${error.message}`, { cause: error });
  }
}

/**
 * `pkg=version` for the newest version of an extension package whose dependency on
 * postgresql-15 the installed server satisfies (a newer build from the security repository may
 * require a newer server, which apt would then install: an upgrade nobody asked for).
 */
async function fittingVersion(pkg, server) {
  const { stdout } = await run('apt-cache', ['show', pkg]);
  const candidates = [];
  for (const stanza of stdout.split(/\n\n+/)) {
    const version = /^Version: (.+)$/m.exec(stanza)?.[1];
    const depends = /^Depends: (.+)$/m.exec(stanza)?.[1] ?? '';
    if (version === undefined) continue;
    const constraint = new RegExp(`(?:^|, )postgresql-${PG_MAJOR} \\((>>|>=|=|<=|<<) ([^)]+)\\)`).exec(depends);
    if (constraint !== null) {
      const op = { '>>': 'gt', '>=': 'ge', '=': 'eq', '<=': 'le', '<<': 'lt' }[constraint[1]];
      if (!(await dpkgCompare(server, op, constraint[2]))) continue;
    }
    candidates.push(version);
  }
  if (candidates.length === 0) {
    throw new MissingPrerequisiteError(
      `no version of ${pkg} in the apt lists fits the installed postgresql-${PG_MAJOR} ${server}`,
    );
  }
  let best = candidates[0];
  for (const version of candidates.slice(1)) if (await dpkgCompare(version, 'gt', best)) best = version;
  return `${pkg}=${best}`;
}

async function dpkgCompare(a, op, b) {
  try {
    await run('dpkg', ['--compare-versions', a, op, b]);
    return true;
  } catch {
    return false;
  }
}

async function commandExists(command) {
  try {
    await run('sh', ['-c', `command -v ${command}`]);
    return true;
  } catch {
    return false;
  }
}

// --- the C side: libbson, pg_cron, pgvector, DocumentDB ---------------------------------------

async function buildExtension(dir, sources, log) {
  const jobs = String(Math.max(1, Math.min(os.availableParallelism?.() ?? os.cpus().length, 4)));
  const pgConfigPath = path.join(pgBinDir(), 'pg_config');
  // No LLVM bitcode: it doubles the compile time and only serves JIT, which tests never use.
  const pgxs = [`PG_CONFIG=${pgConfigPath}`, 'with_llvm=no'];
  const prefix = path.join(dir, 'prefix');
  const pkgconfig = path.join(prefix, 'lib', 'pkgconfig');

  log('libbson 1.28 (static, -fPIC)');
  const libbson = path.join(sources, 'mongo-c-driver-1.28.0');
  const cmakeBuild = path.join(libbson, 'cmake-build');
  await rm(prefix, { recursive: true, force: true });
  await run('cmake', [
    '-S',
    libbson,
    '-B',
    cmakeBuild,
    '-DENABLE_MONGOC=OFF',
    '-DENABLE_TESTS=OFF',
    '-DENABLE_EXAMPLES=OFF',
    '-DENABLE_STATIC=ON',
    '-DENABLE_SHARED=OFF',
    '-DCMAKE_C_FLAGS=-fPIC',
    '-DCMAKE_BUILD_TYPE=Release',
    `-DCMAKE_INSTALL_PREFIX=${prefix}`,
  ]);
  await run('cmake', ['--build', cmakeBuild, '--target', 'install', '--parallel', jobs]);
  // Debian's libintelrdfpmath-dev is built with the configuration DocumentDB wants (bid, call by
  // value, no global rounding or flags: libbidgcc000) but ships no pkg-config file.
  await writeFile(
    path.join(pkgconfig, 'intelmathlib.pc'),
    [
      'Name: intelmathlib',
      'Description: Intel Decimal Floating-Point Math Library (Debian libintelrdfpmath-dev)',
      'Version: 2.0u2',
      'Cflags:',
      'Libs: -lbidgcc000',
      '',
    ].join('\n'),
  );

  for (const name of ['pg_cron-1.6.3', 'pgvector-0.8.0']) {
    log(name);
    const source = path.join(sources, name);
    await run('make', ['-j', jobs, ...pgxs], { cwd: source });
    await run('make', ['install', ...pgxs], { cwd: source });
  }

  const env = { ...process.env, PKG_CONFIG_PATH: pkgconfig };
  const documentdb = path.join(sources, `documentdb-${DOCUMENTDB_VERSION}`);
  for (const part of ['pg_documentdb_core', 'pg_documentdb']) {
    log(part);
    await run('make', ['-j', jobs, '-C', part, ...pgxs], { cwd: documentdb, env });
    await run('make', ['-C', part, 'install', ...pgxs], { cwd: documentdb, env });
  }
}

// --- the gateway -----------------------------------------------------------------------------

/** rustup's cargo, else one on PATH; undefined when there is none. */
async function findCargo() {
  for (const candidate of [process.env.CARGO, path.join(os.homedir(), '.cargo', 'bin', 'cargo')]) {
    if (candidate && (await isExecutable(candidate))) return candidate;
  }
  if (await commandExists('cargo')) return 'cargo';
  return undefined;
}

async function buildGateway(dir, sources, cargo, artifacts, log) {
  log('pg_documentdb_gw (cargo build --release)');
  const source = path.join(sources, `documentdb-${DOCUMENTDB_VERSION}`, 'pg_documentdb_gw');
  const target = path.join(dir, 'cargo-target');
  const env = {
    ...process.env,
    CARGO_TARGET_DIR: target,
    CARGO_TERM_COLOR: 'never',
    // opt-level 1 costs ~15% less CPU to build than 3; a test gateway waits on PostgreSQL anyway.
    CARGO_PROFILE_RELEASE_OPT_LEVEL: process.env.CARGO_PROFILE_RELEASE_OPT_LEVEL ?? '1',
  };
  // rustup's proxies find the toolchain through PATH; a job shell may lack ~/.cargo/bin.
  env.PATH = `${path.dirname(cargo) === '.' ? '' : `${path.dirname(cargo)}:`}${env.PATH ?? ''}`;
  await run(cargo, ['build', '--release', '--locked', '--bin', 'documentdb_gateway'], { cwd: source, env });
  await mkdir(path.dirname(artifacts.gateway), { recursive: true });
  const staged = `${artifacts.gateway}.tmp-${process.pid}`;
  await copyFile(path.join(target, 'release', 'documentdb_gateway'), staged);
  await chmod(staged, 0o755);
  await rename(staged, artifacts.gateway);
  // The target directory is ~1 GB of intermediate files; the stamp makes them useless.
  await rm(target, { recursive: true, force: true });
}

/** Release builds of the gateway refuse to start without a certificate, even for plain TCP. */
async function makeCertificate(artifacts) {
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '3650',
    '-subj',
    '/CN=localhost',
    '-keyout',
    artifacts.keyFile,
    '-out',
    artifacts.certFile,
  ]);
  await chmod(artifacts.keyFile, 0o644); // read by the gateway, whoever runs it; a test-only key
}

// --- FerretDB v2 -------------------------------------------------------------------------------

export function ferretdb2CacheDir() {
  return path.join(cacheBaseDir(), `ferretdb-${FERRETDB2_VERSION}`);
}

/** Builds FerretDB v2 from its Go module (only when a run asks for it). */
export async function ensureFerretDB2({ log = defaultLog } = {}) {
  const dir = ferretdb2CacheDir();
  const binary = path.join(dir, 'ferretdb');
  if (await isExecutable(binary)) return binary;
  const env = { ...process.env, GOWORK: 'off', GOTOOLCHAIN: FERRETDB2_GOTOOLCHAIN, GOFLAGS: '-mod=mod' };
  if (!env.HOME) env.HOME = os.homedir();
  if (!(await commandExists('go'))) {
    throw new MissingPrerequisiteError(`building FerretDB ${FERRETDB2_VERSION} needs the Go toolchain (go) on PATH`);
  }
  const started = Date.now();
  log(`building FerretDB ${FERRETDB2_VERSION} into ${dir} (GOTOOLCHAIN=${FERRETDB2_GOTOOLCHAIN})`);
  await mkdir(dir, { recursive: true });
  const { stdout } = await run('go', ['mod', 'download', '-json', `${FERRETDB2_MODULE}@${FERRETDB2_VERSION}`], {
    cwd: dir,
    env,
  });
  const info = JSON.parse(stdout);
  if (info.Error || !info.Dir) throw new Error(`go mod download failed: ${info.Error ?? stdout}`);
  const source = await mkdtemp(path.join(dir, 'src.tmp-'));
  try {
    await run('cp', ['-R', `${info.Dir}/.`, source]);
    await run('chmod', ['-R', 'u+w', source]); // the module cache is read-only
    // The module zip lacks the generated version file the binary reads at start.
    await writeFile(path.join(source, 'build', 'version', 'version.txt'), `${FERRETDB2_VERSION}\n`);
    const output = `${binary}.tmp-${process.pid}`;
    await run('go', ['build', '-buildvcs=false', '-o', output, './cmd/ferretdb'], { cwd: source, env });
    await rename(output, binary);
  } finally {
    await rm(source, { recursive: true, force: true });
  }
  log(`built ${binary} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return binary;
}

// ---------------------------------------------------------------------------------------------
// Running instances

/** uid/gid of `postgres` when running as root (the server refuses to run as root). */
async function serverUser() {
  if (!isRoot()) return undefined;
  const id = async (flag) => Number((await run('id', [flag, 'postgres'])).stdout.trim());
  try {
    return { uid: await id('-u'), gid: await id('-g') };
  } catch {
    throw new MissingPrerequisiteError(
      'running PostgreSQL as root needs the `postgres` user (apt-get install postgresql-15)',
    );
  }
}

/**
 * Starts a throwaway PostgreSQL 15 cluster with DocumentDB (initdb into a temporary directory, no
 * TCP port: its Unix socket lives in that directory) and the gateway or FerretDB v2 in front of it,
 * and resolves once the front answers an authenticated ping. `stop()` ends both by PID and removes
 * the directory.
 *
 * @param {{
 *   front?: 'gateway' | 'ferretdb2', host?: string,
 *   username?: string, password?: string,
 *   startTimeoutMS?: number, stopTimeoutMS?: number, log?: (message: string) => void,
 * }} [options]
 */
export async function startDocumentDB(options = {}) {
  const {
    front = 'gateway',
    host = '127.0.0.1',
    username = 'mtp',
    password = 'mtp-test-password',
    startTimeoutMS = 120_000,
    stopTimeoutMS = 10_000,
    log = defaultLog,
  } = options;
  const built = await ensureDocumentDB({ log, ferretdb2: front === 'ferretdb2' });
  const owner = await serverUser();
  const deadline = Date.now() + startTimeoutMS;

  const runDir = await mkdtemp(path.join(os.tmpdir(), 'mtp-documentdb-'));
  if (owner !== undefined) await chown(runDir, owner.uid, owner.gid);
  const dataDir = path.join(runDir, 'data');
  const pgLog = tailBuffer(200);
  const frontLog = tailBuffer(200);
  // Stopped in the reverse order of start: the front (and its relay) first, then PostgreSQL (fast shutdown).
  const children = superviseChildren(runDir);
  const stop = () => children.stop();

  const asServer = owner === undefined ? {} : { uid: owner.uid, gid: owner.gid };
  const pgPort = 5432; // names the socket file only: there is no TCP listener
  try {
    await run(
      path.join(pgBinDir(), 'initdb'),
      ['-D', dataDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C.UTF-8', '--no-sync'],
      { ...asServer, cwd: runDir, env: { ...process.env, HOME: runDir } },
    );
    const settings = {
      listen_addresses: "''",
      port: String(pgPort),
      unix_socket_directories: `'${runDir}'`,
      unix_socket_permissions: '0700',
      max_connections: '300',
      shared_preload_libraries: "'pg_cron,pg_documentdb_core,pg_documentdb'",
      'cron.database_name': "'postgres'",
      // pg_cron runs DocumentDB's jobs (index builds on existing collections, TTL deletes) over
      // libpq, by default to localhost over TCP, which this cluster does not listen on.
      'cron.host': `'${runDir}'`,
      // …and so do those jobs themselves, to the same server (`host=localhost port=<port>` by default).
      'documentdb.localhost_connection_string': `'host=${runDir}'`,
      // A throwaway cluster: durability only costs time.
      fsync: 'off',
      synchronous_commit: 'off',
      full_page_writes: 'off',
      ...Object.fromEntries(Object.entries(DOCUMENTDB_SETTINGS).map(([key, value]) => [key, value])),
    };
    const conf = Object.entries(settings)
      .map(([key, value]) => `${key} = ${value}`)
      .join('\n');
    await writeFile(path.join(dataDir, 'postgresql.conf'), `\n# mongo-tenant-proxy test cluster\n${conf}\n`, {
      flag: 'a',
    });

    const postgres = spawn(path.join(pgBinDir(), 'postgres'), ['-D', dataDir], {
      ...asServer,
      cwd: runDir,
      env: { ...process.env, HOME: runDir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const postgresExited = children.add(postgres, { log: pgLog, signal: 'INT', killAfterMS: stopTimeoutMS }).exited;

    const psql = async (sql) => {
      const { stdout } = await run(
        path.join(pgBinDir(), 'psql'),
        [
          '-X',
          '-q',
          '-A',
          '-t',
          '-v',
          'ON_ERROR_STOP=1',
          '-h',
          runDir,
          '-p',
          String(pgPort),
          '-U',
          'postgres',
          '-d',
          'postgres',
          '-c',
          sql,
        ],
        { env: { ...process.env, PGCONNECT_TIMEOUT: '5' } },
      );
      return stdout;
    };
    await until(
      deadline,
      () => postgresExited() !== null,
      async () => psql('SELECT 1'),
      'PostgreSQL to accept connections',
    );
    await psql('CREATE EXTENSION documentdb CASCADE');
    // The gateway authenticates clients with SCRAM against PostgreSQL roles (its setup script does this).
    const quotedPassword = password.replaceAll("'", "''");
    await psql(
      `CREATE ROLE "${username}" WITH LOGIN INHERIT PASSWORD '${quotedPassword}' IN ROLE documentdb_admin_role; ` +
        `ALTER ROLE "${username}" CREATEROLE`,
    );

    const port = await freePort(host);
    let child;
    if (front === 'gateway') {
      // The gateway listens on a port of its own behind a relay (scripts/lib/accept-relay.mjs):
      // its accept loop resets connections that arrive together.
      const gatewayPort = await freePort('127.0.0.1');
      const relay = spawn(
        process.execPath,
        [path.join(root, 'scripts', 'lib', 'accept-relay.mjs'), host, String(port), '127.0.0.1', String(gatewayPort)],
        { stdio: ['pipe', 'pipe', 'pipe'] },
      );
      relay.stdin.on('error', () => {});
      children.add(relay, { log: frontLog, signal: 'TERM', killAfterMS: stopTimeoutMS });
      const listening = new Promise((resolve, reject) => {
        relay.stdout.on('data', (chunk) => {
          if (/listening \d+/.test(String(chunk))) resolve();
        });
        relay.once('exit', () => reject(new Error('the gateway relay exited during start-up')));
      });
      await listening;
      const configFile = path.join(runDir, 'gateway.json');
      await writeFile(
        configFile,
        JSON.stringify({
          NodeHostName: 'localhost',
          BlockedRolePrefixes: ['documentdb', 'citus', 'pg', 'internal_role'],
          PostgresHostName: runDir,
          PostgresPort: pgPort,
          PostgresSystemUser: 'postgres',
          PostgresDatabase: 'postgres',
          GatewayListenPort: gatewayPort,
          UseLocalHost: true,
          EnforceSslTcp: false,
          TransactionTimeoutSecs: 30,
          CursorTimeoutSecs: 600,
          PostgresCommandTimeoutSecs: 120,
          PostgresStartupWaitTimeSeconds: 30,
          CertificateOptions: { CertType: 'pem_file', FilePath: built.certFile, KeyFilePath: built.keyFile },
        }),
      );
      child = spawn(built.gateway, [configFile], { cwd: runDir, stdio: ['ignore', 'pipe', 'pipe'] });
    } else {
      const pgUrl = `postgres://${encodeURIComponent(username)}:${encodeURIComponent(password)}@/postgres?host=${encodeURIComponent(runDir)}&port=${pgPort}`;
      child = spawn(
        built.ferretdb2,
        [
          `--postgresql-url=${pgUrl}`,
          `--listen-addr=${host}:${port}`,
          '--listen-unix=',
          '--debug-addr=',
          '--telemetry=disable',
          '--log-level=ERROR',
          `--state-dir=${runDir}`,
        ],
        { cwd: runDir, stdio: ['ignore', 'pipe', 'pipe'] },
      );
    }
    const frontExited = children.add(child, { log: frontLog, signal: 'TERM', killAfterMS: stopTimeoutMS }).exited;

    const query = new URLSearchParams({ directConnection: 'true', authSource: 'admin' });
    const uri = `mongodb://${encodeURIComponent(username)}:${encodeURIComponent(password)}@${host}:${port}/?${query}`;
    await until(
      deadline,
      () => frontExited() !== null,
      () => ping(uri),
      `the ${front} to answer an authenticated ping`,
    );
    return {
      uri,
      host,
      port,
      front,
      username,
      password,
      /** psql's -h: the directory of PostgreSQL's Unix socket. */
      pgSocketDir: runDir,
      pgPort,
      process: child,
      postgresProcess: postgres,
      psql,
      logTail: () => `--- ${front} ---\n${frontLog.text()}\n--- postgres ---\n${pgLog.text()}`,
      stop,
    };
  } catch (error) {
    const logs = `--- ${front} log tail ---\n${frontLog.text()}\n--- postgres log tail ---\n${pgLog.text()}`;
    await stop();
    throw new Error(`DocumentDB did not start: ${error.message}\n${logs}`, { cause: error });
  }
}

async function until(deadline, hasExited, attempt, what) {
  let lastError = new Error('not tried');
  while (Date.now() < deadline) {
    if (hasExited()) throw new Error(`the process exited while waiting for ${what}`);
    try {
      return await attempt();
    } catch (error) {
      lastError = error;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`timed out waiting for ${what}; last error: ${lastError.message}`);
}

async function ping(uri) {
  const { MongoClient } = await import('mongodb');
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 2_000, connectTimeoutMS: 2_000 });
  try {
    const reply = await client.db('admin').command({ ping: 1 });
    if (reply.ok !== 1) throw new Error(`ping answered ${JSON.stringify(reply)}`);
  } finally {
    await client.close();
  }
}

// ---------------------------------------------------------------------------------------------
// CLI

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [command = 'build', front = 'gateway'] = process.argv.slice(2);
  try {
    if (command === 'build') {
      await ensureDocumentDB({ ferretdb2: front === 'ferretdb2' });
    } else if (command === 'serve') {
      const instance = await startDocumentDB({ front: front === 'ferretdb2' ? 'ferretdb2' : 'gateway' });
      process.stdout.write(`${instance.uri}\n`);
      defaultLog(`${instance.front} on PostgreSQL ${PG_MAJOR} + DocumentDB ${DOCUMENTDB_VERSION}; Ctrl-C stops it`);
      const shutdown = () => void instance.stop().then(() => process.exit(0));
      process.on('SIGINT', shutdown);
      process.on('SIGTERM', shutdown);
    } else {
      process.stderr.write('usage: node scripts/documentdb.mjs build [ferretdb2] | serve [ferretdb2]\n');
      process.exit(2);
    }
  } catch (error) {
    defaultLog(error instanceof Error ? error.message : String(error));
    process.exit(1);
  }
}
