// One upstream per vitest project for the whole run, provided to tests as inject('upstreamUri'),
// inject('upstreamKind') and inject('upstreamFeatures') (typed in ./upstream.ts). The project's
// name says which (vitest.config.ts, ./upstreams.ts):
//   ferretdb1   FerretDB v1 (SQLite) from scripts/ferretdb.mjs;
//   documentdb  a throwaway PostgreSQL 15 cluster with DocumentDB and its gateway
//               (scripts/documentdb.mjs: initdb into a temporary directory, stopped by PID);
//   ferretdb2   the same cluster with FerretDB v2 in front instead of the gateway;
//   mongodb     MONGODB_URI (used as is, never torn down), else mongo:8 through testcontainers.
// Each project also gets inject('testRunDir'): scratch space shared by its test files (e.g. the one
// build of src/, ./cli-process.ts builtDist).
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MongoClient } from 'mongodb';
import type { TestProject } from 'vitest/node';
import { startDistBuild } from './dist-build.js';
import { probeFeatures } from './features.js';
import { startFerretDB } from './upstream.js';
import { UPSTREAM_KINDS, type UpstreamKind, singleUpstream } from './upstreams.js';

interface StartedUpstream {
  uri: string;
  kind: UpstreamKind;
  description: string;
  stop(): Promise<void>;
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const kind = singleUpstream() ?? (project.name as UpstreamKind);
  if (!(UPSTREAM_KINDS as readonly string[]).includes(kind)) {
    throw new Error(`vitest project "${project.name}" names no upstream (${UPSTREAM_KINDS.join(', ')})`);
  }
  const started = Date.now();
  const upstream = await startUpstream(kind);
  try {
    const features = await probeFeatures(upstream.uri);
    const missing = Object.entries(features)
      .filter(([, has]) => !has)
      .map(([name]) => name);
    process.stderr.write(
      `[global-setup] ${project.name}: ${upstream.description} (ready in ${((Date.now() - started) / 1000).toFixed(1)} s; ` +
        `lacks: ${missing.join(', ') || 'nothing probed'})\n`,
    );
    project.provide('upstreamUri', upstream.uri);
    project.provide('upstreamKind', upstream.kind);
    project.provide('upstreamFeatures', features);
  } catch (error) {
    await upstream.stop();
    throw error;
  }
  // Scratch space shared by the project's test files (inside the repository, so node_modules
  // resolves from it): e.g. the one build of src/ (./cli-process.ts builtDist).
  const scratch = path.join(fileURLToPath(new URL('../..', import.meta.url)), '.tmp');
  await mkdir(scratch, { recursive: true });
  const runDir = await mkdtemp(path.join(scratch, 'run-'));
  project.provide('testRunDir', runDir);
  // The CLI and container tests run on FerretDB v1 in the default split (vitest.config.ts).
  const build = kind === 'ferretdb1' || singleUpstream() !== undefined ? startDistBuild(runDir) : undefined;
  return async () => {
    build?.stop();
    await upstream.stop();
    await rm(runDir, { recursive: true, force: true });
  };
}

async function startUpstream(kind: UpstreamKind): Promise<StartedUpstream> {
  switch (kind) {
    case 'mongodb': {
      const fromEnv = process.env.MONGODB_URI;
      if (fromEnv) return { uri: fromEnv, kind, description: 'MONGODB_URI', stop: async () => {} };
      return startMongoContainer();
    }
    case 'ferretdb1': {
      const ferret = await startFerretDB();
      return { uri: ferret.uri, kind, description: `FerretDB v1 at ${ferret.uri}`, stop: () => ferret.stop() };
    }
    case 'documentdb':
    case 'ferretdb2': {
      const front = kind === 'documentdb' ? 'gateway' : 'ferretdb2';
      const instance = await startDocumentDB({ front });
      const name = kind === 'documentdb' ? 'DocumentDB gateway' : 'FerretDB v2 on DocumentDB';
      return {
        uri: instance.uri,
        kind,
        description: `${name} at ${instance.host}:${instance.port}`,
        stop: () => instance.stop(),
      };
    }
  }
}

interface DocumentDBScript {
  startDocumentDB(options: {
    front: 'gateway' | 'ferretdb2';
  }): Promise<{ uri: string; host: string; port: number; stop(): Promise<void> }>;
}

async function startDocumentDB(options: { front: 'gateway' | 'ferretdb2' }) {
  const script = (await import(new URL('../../scripts/documentdb.mjs', import.meta.url).href)) as DocumentDBScript;
  return script.startDocumentDB(options);
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
