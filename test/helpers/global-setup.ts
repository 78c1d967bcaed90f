// One upstream for the whole test run, provided to tests as inject('upstreamUri') and
// inject('upstreamKind') (typed in ./upstream.ts). In order of preference:
//   1. MONGODB_URI: a real MongoDB, used as is and never torn down;
//   2. mongo:8 through testcontainers, when a Docker engine answers;
//   3. FerretDB v1 (SQLite) from scripts/ferretdb.mjs, built on first use.
// MTP_TEST_UPSTREAM=ferretdb skips the Docker probe.
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MongoClient } from 'mongodb';
import type { TestProject } from 'vitest/node';
import { startFerretDB, type UpstreamKind } from './upstream.js';

interface StartedUpstream {
  uri: string;
  kind: UpstreamKind;
  description: string;
  stop(): Promise<void>;
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const upstream = await startUpstream();
  process.stderr.write(`[global-setup] upstream: ${upstream.description}\n`);
  project.provide('upstreamUri', upstream.uri);
  project.provide('upstreamKind', upstream.kind);
  // Scratch space shared by the run's test files (inside the repository, so node_modules
  // resolves from it): e.g. the one build of src/ (./cli-process.ts builtDist).
  const scratch = path.join(fileURLToPath(new URL('../..', import.meta.url)), '.tmp');
  await mkdir(scratch, { recursive: true });
  const runDir = await mkdtemp(path.join(scratch, 'run-'));
  project.provide('testRunDir', runDir);
  return async () => {
    await upstream.stop();
    await rm(runDir, { recursive: true, force: true });
  };
}

async function startUpstream(): Promise<StartedUpstream> {
  const fromEnv = process.env.MONGODB_URI;
  if (fromEnv) {
    return { uri: fromEnv, kind: 'mongodb', description: 'MONGODB_URI', stop: async () => {} };
  }
  if (process.env.MTP_TEST_UPSTREAM !== 'ferretdb' && (await dockerAnswers())) {
    return startMongoContainer();
  }
  const ferret = await startFerretDB();
  return { uri: ferret.uri, kind: 'ferretdb', description: `FerretDB at ${ferret.uri}`, stop: () => ferret.stop() };
}

/** testcontainers' own runtime discovery, bounded in time and never throwing. */
async function dockerAnswers(): Promise<boolean> {
  try {
    const { getContainerRuntimeClient } = await import('testcontainers');
    await withTimeout(getContainerRuntimeClient(), 5_000);
    return true;
  } catch {
    return false;
  }
}

/** A single-node replica set, so sessions, transactions and retryable writes are available. */
async function startMongoContainer(): Promise<StartedUpstream> {
  const { GenericContainer, Wait } = await import('testcontainers');
  const container = await new GenericContainer('mongo:8')
    .withCommand(['--replSet', 'rs0', '--bind_ip_all'])
    .withExposedPorts(27017)
    .withWaitStrategy(Wait.forLogMessage(/Waiting for connections/))
    .withStartupTimeout(120_000)
    .start();
  try {
    const initiate = await container.exec([
      'mongosh',
      '--quiet',
      '--eval',
      "rs.initiate({ _id: 'rs0', members: [{ _id: 0, host: 'localhost:27017' }] })",
    ]);
    if (initiate.exitCode !== 0) throw new Error(`rs.initiate failed: ${initiate.output}`);
    const uri = `mongodb://${container.getHost()}:${container.getMappedPort(27017)}/?directConnection=true`;
    await waitForWritablePrimary(uri, 60_000);
    return {
      uri,
      kind: 'mongodb',
      description: `mongo:8 container at ${uri}`,
      stop: async () => {
        await container.stop();
      },
    };
  } catch (error) {
    await container.stop();
    throw error;
  }
}

async function waitForWritablePrimary(uri: string, timeoutMS: number): Promise<void> {
  const deadline = Date.now() + timeoutMS;
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 2_000 });
  try {
    for (;;) {
      try {
        const hello = await client.db('admin').command({ hello: 1 });
        if (hello.isWritablePrimary === true) return;
      } catch (error) {
        if (Date.now() > deadline) throw error;
      }
      if (Date.now() > deadline) throw new Error(`${uri} did not become a writable primary in ${timeoutMS} ms`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  } finally {
    await client.close();
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
