/**
 * How each client program is started. Node driver 6/7 and Mongoose run in-process; mongosh,
 * pymongo, the Go driver and the Java driver are separate programs that read the scenario file
 * and print one JSON report (see their sources next to this file). The external toolchains are
 * prepared (idempotently) by scripts/compat-clients.mjs, which `npm test` runs through
 * scripts/setup.mjs.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { ClientName, ClientReport, Scenario, Step } from '../scenario.js';
import { runNodeDriver } from './node-driver.js';
import { runMongoose } from './mongoose.js';

export interface RunInput {
  uri: string;
  dbName: string;
  scenarioFile: string;
  scenario: Scenario;
  steps: Step[];
}

export type ClientRunner = (input: RunInput) => Promise<ClientReport>;

interface CompatTools {
  ensurePymongo(): Promise<string>;
  ensureGoClient(): Promise<string>;
  ensureJavaClient(): Promise<{ java: string; classpath: string }>;
  javaAvailable(): Promise<boolean>;
  ensureMongoshHome(): Promise<string>;
}

const toolsUrl = new URL('../../../scripts/compat-clients.mjs', import.meta.url).href;
export const tools = async (): Promise<CompatTools> => (await import(toolsUrl)) as CompatTools;

/** One preparation per process, shared by the direct and the proxied run that start together. */
function once<T>(prepare: () => Promise<T>): () => Promise<T> {
  let pending: Promise<T> | undefined;
  return () => (pending ??= prepare());
}
const pymongo = once(async () => (await tools()).ensurePymongo());
const goClient = once(async () => (await tools()).ensureGoClient());
const javaClient = once(async () => (await tools()).ensureJavaClient());
const mongoshHome = once(async () => (await tools()).ensureMongoshHome());

const here = (name: string) => fileURLToPath(new URL(name, import.meta.url));
const root = fileURLToPath(new URL('../../../', import.meta.url));

/** A client program's report is the last stdout line starting with this marker. */
const MARKER = '@@compat-report@@';

function runProgram(command: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<ClientReport> {
  return new Promise((resolve, reject) => {
    execFile(
      command,
      args,
      { cwd: root, env: { ...process.env, ...env }, timeout: 90_000, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const line = `${stdout}`
          .split('\n')
          .reverse()
          .find((l) => l.startsWith(MARKER));
        if (line === undefined) {
          const detail = `${stderr}`.trim().split('\n').slice(-20).join('\n');
          reject(new Error(`${command} printed no report (${error?.message ?? 'exit 0'})\n${detail}`));
          return;
        }
        resolve(JSON.parse(line.slice(MARKER.length)) as ClientReport);
      },
    );
  });
}

export const RUNNERS: Record<ClientName, ClientRunner> = {
  node7: ({ uri, dbName, steps }) => runNodeDriver(7, uri, dbName, steps),
  node6: ({ uri, dbName, steps }) => runNodeDriver(6, uri, dbName, steps),
  mongoose: ({ uri, dbName, scenario, steps }) => runMongoose(uri, dbName, scenario, steps),
  mongosh: async ({ uri, dbName, scenarioFile }) =>
    runProgram(
      `${root}node_modules/.bin/mongosh`,
      ['--quiet', '--norc', uri, '--file', here('./mongosh-client.js')],
      // Its own home: telemetry off (its flush waits on the network at exit), no user config or logs touched.
      { HOME: await mongoshHome(), MTP_COMPAT_DB: dbName, MTP_COMPAT_SCENARIO: scenarioFile },
    ),
  pymongo: async ({ uri, dbName, scenarioFile }) =>
    runProgram(await pymongo(), [here('./pymongo_client.py'), uri, dbName, scenarioFile]),
  go: async ({ uri, dbName, scenarioFile }) => runProgram(await goClient(), [uri, dbName, scenarioFile]),
  java: async ({ uri, dbName, scenarioFile }) => {
    const { java, classpath } = await javaClient();
    return runProgram(java, ['-cp', classpath, 'CompatClient', uri, dbName, scenarioFile]);
  },
};
