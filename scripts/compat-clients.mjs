// Toolchains of the compatibility suite's client programs (test/compat/), prepared once into the
// per-user cache and reused: ${XDG_CACHE_HOME:-$HOME/.cache}/mongo-tenant-proxy/compat/
//   pymongo-<version>/      a Python virtual environment with the pinned pymongo (from PyPI)
//   go-client-<hash>        the Go driver v2 program of test/compat/go, built with go.sum
//   java-<hash>/            the Java sync driver program (opt-in: npm run test:compat:java)
// Each is idempotent and atomic (built aside, then renamed), so concurrent callers and an
// interrupted build are safe. `node scripts/compat-clients.mjs [--java]` prepares them.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from './lib/exec.mjs';

/** pymongo is pinned: a new release must not change the suite's results unnoticed. */
export const PYMONGO_VERSION = '4.15.5';
/** The Java sync driver (Maven Central), pinned for the same reason. */
export const JAVA_DRIVER_VERSION = '5.6.1';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const log = (message) => process.stderr.write(`[compat] ${message}\n`);

export function compatCacheDir() {
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.resolve(base, 'mongo-tenant-proxy', 'compat');
}

function hashOf(files) {
  const hash = createHash('sha256');
  for (const file of files) hash.update(file).update(readFileSync(file));
  return hash.digest('hex').slice(0, 12);
}

/** Builds `target` through `build(staging)` unless it exists; the staging path is renamed into place. */
async function buildOnce(target, build) {
  if (existsSync(target)) return target;
  await mkdir(path.dirname(target), { recursive: true });
  const staging = `${target}.tmp-${process.pid}-${Date.now()}`;
  try {
    await build(staging);
    try {
      await rename(staging, target);
    } catch (error) {
      // Another process finished first: use its result.
      if (!existsSync(target)) throw error;
    }
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  return target;
}

/** The Python interpreter of a virtual environment with pymongo PYMONGO_VERSION. */
export async function ensurePymongo() {
  const dir = path.join(compatCacheDir(), `pymongo-${PYMONGO_VERSION}`);
  const python = path.join(dir, 'bin', 'python');
  // A venv records its own path: build it in place, marked complete by a stamp file.
  const stamp = path.join(dir, '.complete');
  if (existsSync(stamp)) return python;
  log(`creating a Python virtual environment with pymongo ${PYMONGO_VERSION} in ${dir}`);
  await rm(dir, { recursive: true, force: true });
  await run(process.env.MTP_PYTHON || 'python3', ['-m', 'venv', dir]);
  await run(python, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', `pymongo==${PYMONGO_VERSION}`]);
  await writeFile(stamp, `${PYMONGO_VERSION}\n`);
  return python;
}

/** The Go driver v2 client program, rebuilt when its source, go.mod or go.sum change. */
export async function ensureGoClient() {
  const source = path.join(root, 'test', 'compat', 'go');
  const files = ['go.mod', 'go.sum', 'main.go'].map((name) => path.join(source, name));
  const binary = path.join(compatCacheDir(), `go-client-${hashOf(files)}`);
  return buildOnce(binary, async (staging) => {
    log(`building the Go driver v2 client program into ${binary}`);
    const env = { ...process.env, GOWORK: 'off', GOFLAGS: '-mod=readonly' };
    if (!env.HOME) env.HOME = os.homedir();
    await run('go', ['build', '-o', staging, '.'], { cwd: source, env });
  });
}

/** A HOME for mongosh runs: telemetry disabled, so nothing waits on (or reaches) the network at exit. */
export async function ensureMongoshHome() {
  const home = path.join(compatCacheDir(), 'mongosh-home');
  const config = path.join(home, '.mongodb', 'mongosh', 'config');
  if (!existsSync(config)) {
    await mkdir(path.dirname(config), { recursive: true });
    await writeFile(config, `${JSON.stringify({ enableTelemetry: false })}\n`);
  }
  return home;
}

/** Whether Java and Maven are on PATH (the Java client is optional). */
export async function javaAvailable() {
  try {
    await run('java', ['-version']);
    await run('mvn', ['--version']);
    return true;
  } catch {
    return false;
  }
}

/** The Java sync driver client program: a classpath (driver jars + compiled class) and `java`. */
export async function ensureJavaClient() {
  const source = path.join(root, 'test', 'compat', 'java');
  const files = ['pom.xml', 'CompatClient.java'].map((name) => path.join(source, name));
  const dir = path.join(compatCacheDir(), `java-${hashOf(files)}`);
  await buildOnce(dir, async (staging) => {
    log(`fetching the Java sync driver ${JAVA_DRIVER_VERSION} with Maven and compiling the client into ${dir}`);
    await mkdir(path.join(staging, 'lib'), { recursive: true });
    await run('mvn', [
      '-q',
      '-B',
      '-f',
      path.join(source, 'pom.xml'),
      `-Dmongodb.driver.version=${JAVA_DRIVER_VERSION}`,
      'dependency:copy-dependencies',
      `-DoutputDirectory=${path.join(staging, 'lib')}`,
    ]);
    await run('javac', ['-d', path.join(staging, 'classes'), '-cp', path.join(staging, 'lib', '*'), files[1]]);
  });
  const jars = (await readdir(path.join(dir, 'lib'))).filter((name) => name.endsWith('.jar'));
  const classpath = [path.join(dir, 'classes'), ...jars.map((jar) => path.join(dir, 'lib', jar))].join(path.delimiter);
  return { java: 'java', classpath };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    log(`python: ${await ensurePymongo()}`);
    log(`go: ${await ensureGoClient()}`);
    if (process.argv.includes('--java')) log(`java: ${(await ensureJavaClient()).classpath}`);
  } catch (error) {
    log(error instanceof Error ? error.message : String(error));
    process.exit(1);
  }
}
