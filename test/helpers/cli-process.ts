// The real command line in a child process: the sources compiled as `npm run build` compiles them
// (into a scratch directory inside the repository, so `node_modules` resolves), started through
// the real bin shim, its JSON log lines collected as they arrive.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, cp, mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { inject } from 'vitest';
import { buildingMarker } from './dist-build.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** A directory inside the repository for this test run only (test/helpers/global-setup.ts). */
    testRunDir: string;
  }
}

const root = fileURLToPath(new URL('../..', import.meta.url));

/**
 * src/ compiled as `npm run build` compiles it (`tsc -p tsconfig.build.json`), once per test run
 * for every file that needs it (the compile alone takes 15 s of CPU); returns its `dist`
 * directory. Test files may run in parallel processes: each builds aside, the first rename wins.
 */
export async function builtDist(): Promise<string> {
  const dist = path.join(inject('testRunDir'), 'dist');
  // The global set-up starts this build when the run starts (./dist-build.ts), so that its CPU is
  // spent while other files wait on the upstream, not inside this file's hook.
  while (!existsSync(dist) && existsSync(buildingMarker(dist)))
    await new Promise((resolve) => setTimeout(resolve, 200));
  if (existsSync(dist)) return dist;
  const staging = await mkdtemp(`${dist}.tmp-`);
  try {
    const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    await new Promise<void>((resolve, reject) => {
      execFile(
        process.execPath,
        [tsc, '-p', 'tsconfig.build.json', '--outDir', staging],
        { cwd: root },
        (error, stdout, stderr) => {
          if (error) reject(new Error(`build failed:\n${stdout}${stderr}`));
          else resolve();
        },
      );
    });
    if (!existsSync(dist))
      await rename(staging, dist).catch((error: unknown) => {
        if (!existsSync(dist)) throw error;
      });
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  return dist;
}

export interface BuiltCli {
  /** The bin script to run with `node`. */
  bin: string;
  remove(): Promise<void>;
}

/** The run's build of src/ (builtDist) in a scratch directory, with the bin shim next to it. */
export async function buildCli(): Promise<BuiltCli> {
  await mkdir(path.join(root, '.tmp'), { recursive: true });
  const dir = await mkdtemp(path.join(root, '.tmp', 'cli-'));
  await cp(await builtDist(), path.join(dir, 'dist'), { recursive: true });
  await mkdir(path.join(dir, 'bin'));
  const bin = path.join(dir, 'bin', 'mongo-tenant-proxy');
  await copyFile(path.join(root, 'bin', 'mongo-tenant-proxy'), bin);
  return { bin, remove: () => rm(dir, { recursive: true, force: true }) };
}

export interface CliProcess {
  child: ChildProcess;
  /** Every JSON log line written to stdout so far. */
  readonly lines: Array<Record<string, unknown>>;
  /** Everything written to stdout and stderr, for failure messages. */
  output(): string;
  /** Resolves with the first log line (already written or still to come) that `match` accepts. */
  waitForLine(match: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
}

/** Starts `node <bin> ...args` with exactly `env` (plus PATH). */
export function spawnCli(bin: string, args: string[], env: NodeJS.ProcessEnv = {}): CliProcess {
  const child = spawn(process.execPath, [bin, ...args], {
    env: { PATH: process.env.PATH, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: Array<Record<string, unknown>> = [];
  let text = '';
  let partial = '';
  const waiters = new Set<() => void>();
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    text += chunk;
    partial += chunk;
    const complete = partial.split('\n');
    partial = complete.pop() ?? '';
    for (const line of complete) {
      if (line.trim() === '') continue;
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // Not a log line (never expected from serve); kept in output() only.
      }
    }
    for (const wake of waiters) wake();
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    text += chunk;
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    lines,
    output: () => text,
    exited,
    waitForLine(match, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const found = lines.find(match);
          if (found === undefined) return;
          finish();
          resolve(found);
        };
        const timer = setTimeout(() => {
          finish();
          reject(new Error(`no such log line within ${timeoutMs} ms; output:\n${text}`));
        }, timeoutMs);
        const onExit = (): void => {
          finish();
          reject(new Error(`the process exited; output:\n${text}`));
        };
        const finish = (): void => {
          clearTimeout(timer);
          waiters.delete(check);
          child.off('exit', onExit);
        };
        waiters.add(check);
        child.once('exit', onExit);
        check();
      });
    },
  };
}
