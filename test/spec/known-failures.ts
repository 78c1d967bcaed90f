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
  owner: 'fidelity' | 'tenancy';
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
    upstream: 'any',
    tests: ['findOneAndUpdate-errorResponse: findOneAndUpdate DuplicateKey error is accessible'],
  },
];
