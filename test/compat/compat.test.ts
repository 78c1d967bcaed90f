/**
 * Compatibility suite (issue 14): every scenario under test/compat/scenarios/ runs once per
 * client program direct against the test upstream and once through the proxy (one static tenant,
 * a fresh database per run). Each step's result and every document and index left in the
 * upstream (read directly) must match, except the documented tenant differences normalized in
 * compare.ts and the open differences listed, with their issue, in known-differences.ts.
 *
 * Clients: Node driver 7 and 6, Mongoose 9, mongosh, pymongo, Go driver v2; Java sync only with
 * MTP_COMPAT_JAVA=1 (`npm run test:compat:java`: Maven downloads are not offline-safe).
 * MTP_COMPAT_CLIENTS=node7,go narrows the run; MTP_COMPAT_REPORT=<file> writes every difference
 * seen (known or not) as JSON.
 */
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MongoClient } from 'mongodb';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { directClient, uniqueDbName, upstreamKind, upstreamUri } from '../helpers/upstream.js';
import { RUNNERS } from './clients/index.js';
import { compareSteps, compareStored, readStored, type Difference, type Tenant } from './compare.js';
import { KNOWN_DIFFERENCES } from './known-differences.js';
import {
  CLIENTS,
  loadScenarios,
  stepsFor,
  type ClientName,
  type ClientReport,
  type Scenario,
  type Step,
} from './scenario.js';

const TENANT = 'test-tenant';

function selectedClients(): ClientName[] {
  const wanted = process.env.MTP_COMPAT_CLIENTS?.split(',').map((name) => name.trim());
  const java = process.env.MTP_COMPAT_JAVA === '1';
  return CLIENTS.filter((client) => (wanted ? wanted.includes(client) : client !== 'java' || java));
}

let proxy: TestProxy;
let direct: MongoClient;
const seen: Difference[] = [];

beforeAll(async () => {
  proxy = await startTestProxy({
    listeners: [
      { name: 'compat', listen: { host: '127.0.0.1', port: 0 }, tls: null, methods: ['static'], staticTenant: TENANT },
    ],
  });
  direct = directClient();
});

afterAll(async () => {
  await direct?.close();
  await proxy?.stop();
  const reportFile = process.env.MTP_COMPAT_REPORT;
  if (reportFile) writeFileSync(reportFile, `${JSON.stringify(seen, null, 2)}\n`);
});

/** The tenant field is shown in replies unless the proxy is configured to hide it. */
function repliesTenant(): Tenant | undefined {
  const isolation = proxy.config.isolation as { tenantField: string; tenantFieldInReplies?: 'show' | 'hide' };
  return isolation.tenantFieldInReplies === 'hide' ? undefined : { field: isolation.tenantField, value: TENANT };
}

/** Differences no entry explains, and entries (for this client and upstream) that did not happen. */
function matchKnown(client: ClientName, scenario: Scenario, scenarioSteps: Step[], differences: Difference[]) {
  const applicable = KNOWN_DIFFERENCES.filter(
    (known) =>
      (known.clients === 'all' || known.clients.includes(client)) &&
      (known.upstream === 'any' || known.upstream === upstreamKind()),
  );
  const explained = (where: string) => applicable.find((known) => known.where.includes(where));
  const unexpected = differences.filter((difference) => !explained(difference.where));
  // An entry applies only where this client's steps go: its steps, the collections they touch.
  const touched = new Set(scenarioSteps.flatMap((step) => collectionsOf(scenario, step)));
  const runsStep = (where: string) => {
    const [kind, name] = where.split(':') as [string, string];
    return kind === 'step' ? scenarioSteps.some((step) => step.id === name) : touched.has(name);
  };
  const stale = applicable.flatMap((known) =>
    known.where
      .filter((where) => runsStep(where) && !differences.some((difference) => difference.where === where))
      .map(
        (where) =>
          `${where} (${known.cause}, issue ${known.issue}): no longer differs; remove it from known-differences.ts`,
      ),
  );
  return { unexpected, stale };
}

function collectionsOf(scenario: Scenario, step: Step): string[] {
  if (typeof step.collection === 'string') return [step.collection];
  const models = (scenario.models ?? {}) as Record<string, { collection: string }>;
  if (typeof step.model === 'string') return [models[step.model]!.collection];
  // odmInit and the like act on every declared model.
  return step.op.startsWith('odm') ? Object.values(models).map((model) => model.collection) : [];
}

function assertComplete(report: ClientReport, steps: Step[], label: string): void {
  const ids = report.steps.map((outcome) => outcome.id);
  expect(ids, `${label}: every step reported, in order`).toEqual(steps.map((step) => step.id));
}

for (const { file, scenario } of loadScenarios()) {
  describe(`compat scenario ${scenario.name}`, () => {
    for (const client of selectedClients()) {
      it(`${client}: the same steps and stored documents direct and through the proxy`, async () => {
        const steps = stepsFor(scenario, client);
        const dbDirect = uniqueDbName(`compat_${client}_d`);
        const dbProxy = uniqueDbName(`compat_${client}_p`);
        try {
          const run = (uri: string, dbName: string) =>
            RUNNERS[client]({ uri, dbName, scenarioFile: file, scenario, steps });
          const [viaDirect, viaProxy] = await Promise.all([run(upstreamUri(), dbDirect), run(proxy.uri, dbProxy)]);
          assertComplete(viaDirect, steps, `${client} direct`);
          assertComplete(viaProxy, steps, `${client} proxy`);
          assertDirectAsScenarioSays(viaDirect, steps, client);

          const tenant: Tenant = { field: proxy.config.isolation.tenantField, value: TENANT };
          const differences = [
            ...compareSteps(client, steps, viaDirect, viaProxy, repliesTenant()),
            ...compareStored(client, await readStored(direct, dbDirect), await readStored(direct, dbProxy, tenant)),
          ];
          seen.push(...differences);
          const { unexpected, stale } = matchKnown(client, scenario, steps, differences);
          expect({ unexpected, stale }, `${client}: differences between direct and proxy`).toEqual({
            unexpected: [],
            stale: [],
          });
        } finally {
          await Promise.allSettled([direct.db(dbDirect).dropDatabase(), direct.db(dbProxy).dropDatabase()]);
        }
      }, 120_000);
    }
  });
}

/**
 * The direct run is the reference, so it must itself be right: a step the scenario expects to
 * fail must fail direct, the others succeed (a broken client program cannot pass as "equal").
 */
function assertDirectAsScenarioSays(report: ClientReport, steps: Step[], client: ClientName): void {
  const wrong: string[] = [];
  for (const step of steps) {
    const outcome = report.steps.find((candidate) => candidate.id === step.id);
    const expected = expectedDirect(step);
    if (!outcome || expected === 'any') continue;
    if (expected === 'ok' && !outcome.ok) wrong.push(`${step.id}: failed direct (${outcome.error?.message ?? ''})`);
    if (expected === 'error' && outcome.ok) wrong.push(`${step.id}: succeeded direct`);
  }
  expect(wrong, `${client}: the direct run as the scenario expects`).toEqual([]);
}

function expectedDirect(step: Step): 'ok' | 'error' | 'any' {
  const byUpstream = step.direct as Record<string, 'ok' | 'error' | 'any'> | 'ok' | 'error' | 'any' | undefined;
  if (typeof byUpstream === 'string') return byUpstream;
  const kind = upstreamKind();
  return byUpstream?.[kind] ?? (kind === 'ferretdb1' ? byUpstream?.ferretdb : undefined) ?? byUpstream?.any ?? 'ok';
}
