/**
 * Unified CRUD spec tests that pass direct but fail through the proxy, grouped by cause with the
 * issue and branch that own it. `npm run test:spec` fails on a proxy-only failure missing here
 * and on an entry that passes again (delete it when its fix merges). docs/testing.md
 * ("Compatibility") lists the same groups.
 */
import type { UpstreamKind } from '../helpers/upstream.js';

export interface KnownSpecFailure {
  cause: string;
  issue: number;
  /** The branch fixing it, or `design`: an isolation rule that stays (the catalogue entry in `cause`). */
  owner: 'fidelity' | 'tenancy' | 'design';
  upstream: UpstreamKind | 'any';
  /** `<file>: <test description>` */
  tests: string[];
}

export const KNOWN_SPEC_FAILURES: KnownSpecFailure[] = [
  {
    cause:
      'FerretDB v1 replaces a null _id set by $setOnInsert (what the proxy supplies for {_id: null}) with an ObjectId',
    issue: 14,
    owner: 'fidelity',
    upstream: 'ferretdb1',
    tests: [
      'create-null-ids: inserting _id with type null via updateOne',
      'create-null-ids: inserting _id with type null via updateMany',
    ],
  },
  {
    cause:
      'a unique index needs a per-tenant partial index, which FerretDB v1 cannot build (tenancy.index-per-tenant-unsupported)',
    issue: 13,
    owner: 'tenancy',
    upstream: 'ferretdb1',
    tests: ['findOneAndUpdate-errorResponse: findOneAndUpdate DuplicateKey error is accessible'],
  },
  // DocumentDB runs what FerretDB v1 refuses direct, so these isolation refusals show there (and would
  // on MongoDB): docs/testing.md, "Drivers' unified CRUD spec tests".
  {
    cause:
      "$out / $merge into a shared collection would replace or merge into every tenant's documents (pipeline.out, pipeline.merge)",
    issue: 14,
    owner: 'design',
    upstream: 'documentdb',
    tests: [
      'aggregate-let: Aggregate to collection with let option',
      'aggregate-merge: Aggregate with $merge',
      'aggregate-merge: Aggregate with $merge and available readConcern',
      'aggregate-merge: Aggregate with $merge and batch size of 0',
      'aggregate-merge: Aggregate with $merge and local readConcern',
      'aggregate-merge: Aggregate with $merge and majority readConcern',
      'aggregate-out-readConcern: readConcern available with out stage',
      'aggregate-out-readConcern: readConcern local with out stage',
      'aggregate-out-readConcern: readConcern majority with out stage',
      'aggregate-out: Aggregate with $out',
      'aggregate-out: Aggregate with $out and batch size of 0',
      'aggregate-write-readPreference: Aggregate with $merge includes read preference for 5.0+ server',
      'aggregate-write-readPreference: Aggregate with $out includes read preference for 5.0+ server',
      'bypassDocumentValidation: Aggregate with $out passes bypassDocumentValidation: false',
    ],
  },
  {
    cause:
      'top-level dotted or $-prefixed field names in stored documents (catalogue 42: document.dotted-field, document.dollar-field)',
    issue: 14,
    owner: 'design',
    upstream: 'documentdb',
    tests: [
      'bulkWrite-insertOne-dots_and_dollars: Inserting document with top-level dollar-prefixed key on 5.0+ server',
      'bulkWrite-insertOne-dots_and_dollars: Inserting document with top-level dotted key',
      'bulkWrite-replaceOne-dots_and_dollars: Replacing document with top-level dotted key on 3.6+ server',
      'findOneAndReplace-dots_and_dollars: Replacing document with top-level dotted key on 3.6+ server',
      'insertMany-dots_and_dollars: Inserting document with top-level dollar-prefixed key on 5.0+ server',
      'insertMany-dots_and_dollars: Inserting document with top-level dotted key',
      'insertOne-dots_and_dollars: Inserting document with top-level dollar-prefixed key on 5.0+ server',
      'insertOne-dots_and_dollars: Inserting document with top-level dotted key',
      'replaceOne-dots_and_dollars: Replacing document with top-level dotted key on 3.6+ server',
    ],
  },
  {
    cause:
      'a collation strength below 3 would compare string tenant ids loosely (catalogue 9: collation.tenant-string)',
    issue: 14,
    owner: 'design',
    upstream: 'documentdb',
    tests: ['count-collation: Deprecated count with collation'],
  },
  {
    cause: 'collMod of a shared collection would act on every tenant (catalogue 23: ddl.shared)',
    issue: 13,
    owner: 'tenancy',
    upstream: 'documentdb',
    tests: ['findOneAndUpdate-errorResponse: findOneAndUpdate document validation errInfo is accessible'],
  },
];
