// mongodump and mongorestore for the optional tools test (test/integration/mongo-tools.test.ts).
//
// The MongoDB Database Tools are not on the Go module proxy, so they are built from a copy of the
// github.com/mongodb/mongo-tools repository, offline, with its vendor/ folder:
//   MTP_MONGO_TOOLS_SRC   the repository: a bare git directory or a clone (git archive HEAD is
//                         built), or a plain source tree with go.mod and vendor/;
//                         default /work/.mirror/mongodb+mongo-tools/repo
// into a per-user cache outside the repository:
//   ${XDG_CACHE_HOME:-$HOME/.cache}/mongo-tenant-proxy/mongo-tools-<version>/bin/{mongodump,mongorestore}
// where <version> is `git describe --tags --always` of the snapshot (MTP_MONGO_TOOLS_VERSION for a
// plain source tree). Idempotent: binaries already there are reused.
//
//   node scripts/mongo-tools.mjs        builds if needed, prints the bin directory on stdout:
//   export MTP_MONGO_TOOLS_DIR="$(node scripts/mongo-tools.mjs)"

import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { isExecutable, run } from './lib/exec.mjs';

export const DEFAULT_MONGO_TOOLS_SRC = '/work/.mirror/mongodb+mongo-tools/repo';
export const MONGO_TOOLS = ['mongodump', 'mongorestore'];

const defaultLog = (message) => process.stderr.write(`[mongo-tools] ${message}\n`);

function cacheBase() {
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.resolve(base, 'mongo-tenant-proxy');
}

/** Go needs a home for its build cache; CI shells sometimes have no HOME. Vendored: no network. */
function goEnv() {
  const env = { ...process.env, GOWORK: 'off', GOFLAGS: '-mod=vendor', GOTOOLCHAIN: 'local' };
  if (!env.HOME) env.HOME = os.homedir();
  return env;
}

/** How the source is read: a git repository (bare or not) or a plain tree. */
function describeSource(source) {
  if (!existsSync(source)) {
    throw new Error(
      `the mongo-tools source ${source} does not exist: set MTP_MONGO_TOOLS_SRC to a clone (or bare copy) of ` +
        'github.com/mongodb/mongo-tools (it carries its vendor/ folder, so the build needs no network)',
    );
  }
  if (existsSync(path.join(source, 'HEAD')) && existsSync(path.join(source, 'objects'))) {
    return { kind: 'git', gitArgs: [`--git-dir=${source}`] };
  }
  if (existsSync(path.join(source, '.git'))) return { kind: 'git', gitArgs: ['-C', source] };
  if (existsSync(path.join(source, 'go.mod')) && existsSync(path.join(source, 'vendor'))) return { kind: 'tree' };
  throw new Error(`${source} is neither a git repository nor a source tree with go.mod and vendor/`);
}

async function sourceVersion(source, described) {
  if (described.kind === 'tree') return { version: process.env.MTP_MONGO_TOOLS_VERSION || 'local', commit: 'unknown' };
  const git = (args) => run('git', [...described.gitArgs, ...args]).then(({ stdout }) => stdout.trim());
  const commit = await git(['rev-parse', 'HEAD']);
  const version = await git(['describe', '--tags', '--always', 'HEAD']).catch(() => commit.slice(0, 12));
  return { version, commit };
}

/**
 * Returns the directory holding runnable mongodump and mongorestore, building them into the cache
 * when they are missing.
 * @param {{ log?: (message: string) => void, source?: string }} [options]
 */
export async function ensureMongoTools({ log = defaultLog, source } = {}) {
  const src = path.resolve(source ?? process.env.MTP_MONGO_TOOLS_SRC ?? DEFAULT_MONGO_TOOLS_SRC);
  const described = describeSource(src);
  const { version, commit } = await sourceVersion(src, described);
  const dir = path.join(cacheBase(), `mongo-tools-${version}`);
  const binDir = path.join(dir, 'bin');
  const ready = async () => {
    for (const tool of MONGO_TOOLS) if (!(await isExecutable(path.join(binDir, tool)))) return false;
    return true;
  };
  if (await ready()) return binDir;

  const env = goEnv();
  try {
    await run('go', ['version'], { env });
  } catch (error) {
    throw new Error(
      `building mongodump and mongorestore needs the Go toolchain on PATH (the snapshot's go.mod names the ` +
        `minimum version): ${error.message}`,
      { cause: error },
    );
  }
  const started = Date.now();
  log(`building mongodump and mongorestore ${version} from ${src} into ${dir} (a minute or two)`);
  await mkdir(binDir, { recursive: true });
  // A private copy per build: concurrent builds never share a half-written tree.
  const work = await mkdtemp(path.join(dir, 'src.tmp-'));
  try {
    if (described.kind === 'git') {
      const archive = path.join(work, 'source.tar');
      await run('git', [...described.gitArgs, 'archive', '--format=tar', '-o', archive, 'HEAD']);
      await run('tar', ['-x', '-f', archive, '-C', work]);
      await rm(archive);
    } else {
      await run('cp', ['-R', `${src}/.`, work]);
    }
    // As the project's own build script sets them (buildscript/build.go), minus the release tooling.
    const ldflags = `-X main.VersionStr=${version} -X main.GitCommit=${commit}`;
    for (const tool of MONGO_TOOLS) {
      const output = path.join(binDir, `${tool}.tmp-${process.pid}`);
      log(`go build ./${tool}/main`);
      await run('go', ['build', '-buildvcs=false', '-ldflags', ldflags, '-o', output, `./${tool}/main`], {
        cwd: work,
        env,
      });
      const { stdout } = await run(output, ['--version'], { env });
      if (!stdout.includes(`${tool} version: ${version}`)) {
        throw new Error(`the built ${tool} reports an unexpected version:\n${stdout}`);
      }
      await rename(output, path.join(binDir, tool)); // atomic: a concurrent build simply wins or loses
    }
    log(`built in ${((Date.now() - started) / 1000).toFixed(1)} s: ${binDir}`);
  } finally {
    await rm(work, { recursive: true, force: true });
    for (const tool of MONGO_TOOLS) await rm(path.join(binDir, `${tool}.tmp-${process.pid}`), { force: true });
  }
  return binDir;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  try {
    process.stdout.write(`${await ensureMongoTools()}\n`);
  } catch (error) {
    defaultLog(error instanceof Error ? error.message : String(error));
    process.exitCode = 1;
  }
}
