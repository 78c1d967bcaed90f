// The database every test of a vitest project talks to, started once per run by
// test/helpers/global-setup.ts (which upstream: vitest.config.ts and test/helpers/upstreams.ts).
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MongoClient, type MongoClientOptions } from 'mongodb';
import { inject } from 'vitest';
import type { UpstreamFeatures } from './features.js';
import type { UpstreamKind } from './upstreams.js';

export type { UpstreamKind } from './upstreams.js';
export type { UpstreamFeatures } from './features.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Connection string of the shared upstream, usable as is by a driver (credentials included). */
    upstreamUri: string;
    upstreamKind: UpstreamKind;
    /** What the shared upstream did when probed at the start of the run (features.ts). */
    upstreamFeatures: UpstreamFeatures;
  }
}

export function upstreamUri(): string {
  return inject('upstreamUri');
}

export function upstreamKind(): UpstreamKind {
  return inject('upstreamKind');
}

export function upstreamFeatures(): UpstreamFeatures {
  return inject('upstreamFeatures');
}

/**
 * For `it.skipIf(lacks('views', 'why'))`: true (skip) when the shared upstream did not do
 * `feature` when probed. Tests are gated on what the server does, never on its name, so a test
 * runs on every upstream that can run it (MongoDB, DocumentDB, FerretDB v2 …). The reason is
 * mandatory so every skipped test says why at its call site.
 */
export function lacks(feature: keyof UpstreamFeatures, reason: string): boolean {
  if (reason.trim() === '') throw new Error(`lacks(${feature}): give the reason the test needs it`);
  return !upstreamFeatures()[feature];
}

/**
 * For `it.skipIf(needsMongoDB('why'))`: true (skip) unless the upstream is a real MongoDB. Only
 * for what no probe can stand for (a replica set to step down, MongoDB's own command list);
 * features go through `lacks`.
 */
export function needsMongoDB(reason: string): boolean {
  if (reason.trim() === '') throw new Error('needsMongoDB: give the reason no other upstream can run this test');
  return upstreamKind() !== 'mongodb';
}

/**
 * A client straight to the upstream, bypassing the proxy: for reading what really reached the
 * database. The caller closes it.
 */
export function directClient(options: MongoClientOptions = {}): MongoClient {
  return new MongoClient(upstreamUri(), { serverSelectionTimeoutMS: 10_000, ...options });
}

let dbCounter = 0;

/** A database name no other test, worker or earlier run uses; valid for MongoDB and FerretDB. */
export function uniqueDbName(prefix = 'test'): string {
  const suffix = `_${process.pid.toString(36)}_${Date.now().toString(36)}_${(dbCounter++).toString(36)}`;
  const safePrefix = prefix.replace(/[^A-Za-z0-9_-]/g, '_').replace(/^[^A-Za-z]/, 't$&') || 't';
  return safePrefix.slice(0, 63 - suffix.length) + suffix;
}

// ---------------------------------------------------------------------------------------------
// FerretDB instances of a test's own (for example with SCRAM users or TLS): typed access to
// scripts/ferretdb.mjs, which is plain JavaScript shared with the demo and the bench.

export interface FerretDBOptions {
  /** Default: a free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** Creates this SCRAM user at start-up and enables authentication. */
  auth?: { username: string; password: string; database: string };
  /** Adds a TLS listener on its own free port; `caFile` makes FerretDB verify client certificates. */
  tls?: { certFile: string; keyFile: string; caFile?: string };
  /** Makes hello describe a replica-set member with this set name. */
  replSetName?: string;
  extraArgs?: string[];
  /** Keep the SQLite data here across runs; default: the instance's temporary directory, removed by stop(). */
  dataDir?: string;
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
  startTimeoutMS?: number;
  stopTimeoutMS?: number;
  log?: (message: string) => void;
}

export interface FerretDBInstance {
  /** `mongodb://[user:pass@]host:port/?directConnection=true[&authSource=db]` (plain TCP). */
  uri: string;
  host: string;
  port: number;
  /** Same as `uri` on the TLS listener, with `tls=true` (and `tlsCAFile` when a CA was given). */
  tlsUri: string | undefined;
  tlsPort: number | undefined;
  /** FerretDB also listens on this Unix socket (inside its temporary directory). */
  socketPath: string;
  /** Where the SQLite files are. */
  dataDir: string;
  process: ChildProcess;
  /** The last lines FerretDB wrote. */
  logTail(): string;
  /** SIGTERM, SIGKILL after a timeout, then removes the temporary directory. Idempotent. */
  stop(): Promise<void>;
}

interface FerretDBScript {
  ensureFerretDB(options?: { log?: (message: string) => void }): Promise<string>;
  startFerretDB(options?: FerretDBOptions): Promise<FerretDBInstance>;
}

const ferretdbScriptUrl = new URL('../../scripts/ferretdb.mjs', import.meta.url).href;

export async function startFerretDB(options: FerretDBOptions = {}): Promise<FerretDBInstance> {
  const script = (await import(ferretdbScriptUrl)) as FerretDBScript;
  return script.startFerretDB(options);
}

/** A FerretDB the test can kill and start again on the same port with the same data. */
export interface RestartableFerretDB {
  /** Stays the same across restarts. */
  readonly uri: string;
  readonly port: number;
  readonly running: boolean;
  /** SIGKILL, no shutdown: connections are reset, the data stays. Resolves once the process is gone. */
  kill(): Promise<void>;
  /** Starts it again on the same port and data directory; resolves once it answers hello. */
  restart(): Promise<void>;
  /** Stops it and removes its data. Idempotent. */
  stop(): Promise<void>;
}

export async function startRestartableFerretDB(
  options: Omit<FerretDBOptions, 'port' | 'dataDir'> = {},
): Promise<RestartableFerretDB> {
  const dataDir = await mkdtemp(join(tmpdir(), 'mtp-ferretdb-restartable-'));
  let instance: FerretDBInstance | undefined;
  try {
    instance = await startFerretDB({ ...options, dataDir });
  } catch (error) {
    await rm(dataDir, { recursive: true, force: true });
    throw error;
  }
  const { uri, port } = instance;
  return {
    uri,
    port,
    get running() {
      return instance !== undefined;
    },
    async kill() {
      const current = instance;
      if (current === undefined) return;
      instance = undefined;
      current.process.kill('SIGKILL');
      await current.stop(); // waits for the exit, removes the run directory (not dataDir)
    },
    async restart() {
      if (instance !== undefined) throw new Error('restart: FerretDB is still running');
      // The port was just released; a moment's retry covers a slow release by the kernel.
      for (let attempt = 1; ; attempt++) {
        try {
          instance = await startFerretDB({ ...options, port, dataDir });
          return;
        } catch (error) {
          if (attempt >= 5 || !/address already in use/i.test(String(error))) throw error;
          await new Promise((resolve) => setTimeout(resolve, 200 * attempt));
        }
      }
    },
    async stop() {
      const current = instance;
      instance = undefined;
      await current?.stop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
