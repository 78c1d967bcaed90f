/**
 * How a direct run and a proxied run of the same scenario are compared: step by step, then the
 * documents and indexes each run left in the upstream, read directly (never through the proxy).
 *
 * Documented tenant differences are normalized here and nowhere else (they are what the proxy is
 * for, not bugs): the tenant field on documents read through the proxy while
 * `isolation.tenantFieldInReplies` is `show`, the tenant field on every stored document, and the
 * tenant field leading every index key of a shared collection. Everything else that differs is a
 * difference, to be listed in known-differences.ts with its issue, or fixed.
 */
import { BSON, type MongoClient } from 'mongodb';

const { EJSON } = BSON;
import type { ClientName, ClientReport, Step, StepError, StepOutcome } from './scenario.js';

export interface Tenant {
  field: string;
  value: string;
}

export interface Difference {
  client: ClientName;
  /** `step:<id>`, `stored:<collection>` or `indexes:<collection>`. */
  where: string;
  direct: unknown;
  proxy: unknown;
}

/** Generated values (ObjectIds, dates) differ between any two runs: compared by type only. */
export function normalize(value: unknown, tenant?: Tenant): unknown {
  if (Array.isArray(value)) return value.map((item) => normalize(item, tenant));
  if (value === null || typeof value !== 'object') return value;
  const entries = Object.entries(value as Record<string, unknown>);
  if (entries.length === 1 && entries[0]![0] === '$oid') return '<ObjectId>';
  if (entries.length === 1 && entries[0]![0] === '$date') return '<Date>';
  const out: Record<string, unknown> = {};
  for (const [key, item] of entries) {
    if (tenant && key === tenant.field && item === tenant.value) continue;
    out[key] = normalize(item, tenant);
  }
  return out;
}

function sortedList(value: unknown): unknown {
  if (!Array.isArray(value)) return value;
  return [...value].sort((x, y) => stableKey(x).localeCompare(stableKey(y)));
}

function stableKey(value: unknown): string {
  return JSON.stringify(value, (_key, item: unknown) =>
    item && typeof item === 'object' && !Array.isArray(item)
      ? Object.fromEntries(Object.entries(item as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b)))
      : item,
  );
}

/** What applications branch on: the code (or client-side error name) and per-write codes. */
function errorKey(error: StepError | undefined): unknown {
  if (!error) return undefined;
  return { code: error.code ?? error.name, ...(error.writeErrors && { writeErrors: error.writeErrors }) };
}

/** Index keys of a shared collection lead with the tenant field through the proxy (per-tenant uniqueness). */
function withoutLeadingTenant(result: unknown, tenant: Tenant): unknown {
  if (!Array.isArray(result)) return result;
  return result.map((index: { key?: Record<string, unknown> }) => {
    const keys = Object.keys(index.key ?? {});
    if (keys[0] !== tenant.field || keys.length < 2) return index;
    const { [tenant.field]: _, ...rest } = index.key!;
    return { ...index, key: rest, name: '<tenant-prefixed>' };
  });
}

function view(step: Step, outcome: StepOutcome | undefined, tenant?: Tenant): unknown {
  if (!outcome) return '<not run>';
  if (outcome.skipped) return { skipped: true };
  const compare = step.compare ?? 'result';
  if (!outcome.ok) return { error: errorKey(outcome.error) };
  if (compare === 'outcome') return { ok: true };
  let result = normalize(outcome.result, tenant);
  if (step.op === 'listIndexes') {
    // Names are not compared: a tenant-prefixed index may carry another generated name.
    if (tenant) result = withoutLeadingTenant(result, tenant);
    result = (result as { name?: string }[]).map(({ name: _name, ...rest }) => rest);
  }
  return { ok: true, result: step.unordered || step.op === 'listIndexes' ? sortedList(result) : result };
}

export function compareSteps(
  client: ClientName,
  steps: Step[],
  direct: ClientReport,
  proxy: ClientReport,
  /** The tenant field shown in the proxy's replies, removed before comparing; undefined when hidden. */
  tenant: Tenant | undefined,
): Difference[] {
  const differences: Difference[] = [];
  const byId = (report: ClientReport) => new Map(report.steps.map((outcome) => [outcome.id, outcome]));
  const directById = byId(direct);
  const proxyById = byId(proxy);
  for (const step of steps) {
    if ((step.compare ?? 'result') === 'none') continue;
    const d = view(step, directById.get(step.id));
    const p = view(step, proxyById.get(step.id), tenant);
    if (stableKey(d) !== stableKey(p)) {
      differences.push({
        client,
        where: `step:${step.id}`,
        direct: d,
        proxy: withMessage(p, proxyById.get(step.id)),
      });
    }
  }
  return differences;
}

/** The proxy's message helps whoever reads the report; it is never part of the comparison. */
function withMessage(viewed: unknown, outcome: StepOutcome | undefined): unknown {
  if (outcome && !outcome.ok && outcome.error?.message) {
    return { ...(viewed as object), message: outcome.error.message.slice(0, 300) };
  }
  return viewed;
}

export interface StoredState {
  /** Per collection: its documents (normalized, sorted) and index keys. */
  collections: Record<string, { documents: unknown[]; indexes: unknown[] }>;
}

/**
 * What a run left in `dbName`, read with a direct client. With `tenant`, each document must carry
 * exactly that tenant (then the field is removed); a document without it stays as it is and so
 * shows up as a difference.
 */
export async function readStored(direct: MongoClient, dbName: string, tenant?: Tenant): Promise<StoredState> {
  const db = direct.db(dbName);
  const names = (await db.listCollections({}, { nameOnly: true }).toArray()).map((c) => c.name).sort();
  const collections: StoredState['collections'] = {};
  for (const name of names) {
    const coll = db.collection(name);
    const docs = (await coll.find({}).toArray()).map((doc) => EJSON.serialize(doc, { relaxed: false }));
    const documents = sortedList(docs.map((doc) => normalize(doc, tenant))) as unknown[];
    const rawIndexes = (await coll.listIndexes().toArray()).map((index) => ({
      key: index.key as Record<string, unknown>,
      unique: index.unique === true,
    }));
    const indexes = sortedList(tenant ? withoutLeadingTenant(rawIndexes, tenant) : rawIndexes) as unknown[];
    collections[name] = {
      documents,
      indexes: (indexes as { name?: string }[]).map(({ name: _n, ...rest }) => rest),
    };
  }
  return { collections };
}

export function compareStored(client: ClientName, direct: StoredState, proxy: StoredState): Difference[] {
  const differences: Difference[] = [];
  const names = [...new Set([...Object.keys(direct.collections), ...Object.keys(proxy.collections)])].sort();
  for (const name of names) {
    const d = direct.collections[name];
    const p = proxy.collections[name];
    if (stableKey(d?.documents ?? '<no collection>') !== stableKey(p?.documents ?? '<no collection>')) {
      differences.push({ client, where: `stored:${name}`, ...documentDelta(d?.documents, p?.documents) });
    }
    if (stableKey(d?.indexes ?? []) !== stableKey(p?.indexes ?? [])) {
      differences.push({ client, where: `indexes:${name}`, direct: d?.indexes, proxy: p?.indexes });
    }
  }
  return differences;
}

/** Only the documents that differ, so a report stays readable. */
function documentDelta(direct: unknown[] = [], proxy: unknown[] = []): { direct: unknown; proxy: unknown } {
  const proxyKeys = new Set(proxy.map(stableKey));
  const directKeys = new Set(direct.map(stableKey));
  return {
    direct: direct.filter((doc) => !proxyKeys.has(stableKey(doc))),
    proxy: proxy.filter((doc) => !directKeys.has(stableKey(doc))),
  };
}
