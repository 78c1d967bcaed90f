// Which upstream each vitest project runs against (read by vitest.config.ts and global-setup.ts).
//
// By default a run uses two: the semantic suites (isolation catalogue, property test, driver
// transparency, sessions and transactions) run on DocumentDB behind its own gateway, the most
// faithful upstream that builds here; everything that only needs a wire-level upstream runs on
// FerretDB v1, the fastest. One variable puts the whole run on one upstream:
//   MTP_TEST_UPSTREAM=ferretdb1 | ferretdb2 | documentdb | mongodb
// (mongodb: mongo:8 through testcontainers, which needs a Docker engine), and MONGODB_URI (a real
// MongoDB) wins over everything.

export const UPSTREAM_KINDS = ['ferretdb1', 'ferretdb2', 'documentdb', 'mongodb'] as const;
export type UpstreamKind = (typeof UPSTREAM_KINDS)[number];

/** Proven on the faithful upstream in the default split. */
export const SEMANTIC_TEST_FILES = [
  'test/integration/isolation-catalogue-*.test.ts',
  'test/integration/isolation-property.test.ts',
  'test/integration/isolation-models.test.ts',
  'test/integration/transparent-proxy.test.ts',
  'test/integration/presentation-and-upstream.test.ts',
];

/**
 * Run in every project: the harness checks the upstream it was given; tenant-scoped indexes are
 * refused where partial indexes are missing (FerretDB v1) and built per tenant where they exist;
 * the compatibility suite and the mongodump/mongorestore test (skipped without
 * MTP_MONGO_TOOLS_DIR) compare clients direct and through the proxy on each upstream, since what
 * differs depends on it (test/compat/known-differences.ts); upsert fields from `$and` are added by the proxy where the probe finds the upstream does not
 * derive them (FerretDB v1) and left to it where it does.
 */
export const EVERY_PROJECT_TEST_FILES = [
  'test/integration/harness.test.ts',
  'test/integration/tenancy-indexes.test.ts',
  'test/integration/tenancy-replicas.test.ts',
  'test/integration/tenancy-stats-size.test.ts',
  'test/compat/compat.test.ts',
  'test/integration/mongo-tools.test.ts',
  'test/integration/tenant-field-replies.test.ts',
  'test/integration/tenant-field-stages.test.ts',
  'test/integration/upstream-upsert-probe.test.ts',
];

/** The one upstream of the whole run, or undefined for the default split. */
export function singleUpstream(env: NodeJS.ProcessEnv = process.env): UpstreamKind | undefined {
  if (env.MONGODB_URI) return 'mongodb';
  const chosen = env.MTP_TEST_UPSTREAM;
  if (chosen === undefined || chosen === '') return undefined;
  if (chosen === 'ferretdb') return 'ferretdb1'; // the name before there were two
  if ((UPSTREAM_KINDS as readonly string[]).includes(chosen)) return chosen as UpstreamKind;
  throw new Error(`MTP_TEST_UPSTREAM=${chosen}: expected one of ${UPSTREAM_KINDS.join(', ')}`);
}
