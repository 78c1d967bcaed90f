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
      'hints by a name or key the tenant has no index under are refused (hint.not-tenant-prefixed), _id_ and {_id: 1} included',
    issue: 14,
    owner: 'fidelity',
    upstream: 'any',
    tests: [
      'bulkWrite-delete-hint: BulkWrite deleteOne with hints',
      'bulkWrite-delete-hint: BulkWrite deleteMany with hints',
      'bulkWrite-update-hint: BulkWrite updateOne with update hints',
      'bulkWrite-update-hint: BulkWrite updateMany with update hints',
      'bulkWrite-update-hint: BulkWrite replaceOne with update hints',
      'deleteMany-hint: DeleteMany with hint document',
      'deleteOne-hint: deleteOne with hint document',
      'findOneAndDelete-hint: FindOneAndDelete with hint document',
      'findOneAndReplace-hint: FindOneAndReplace with hint document',
      'findOneAndUpdate-hint: FindOneAndUpdate with hint document',
      'replaceOne-hint: ReplaceOne with hint document',
      'updateMany-hint: UpdateMany with hint document',
      'updateOne-hint: UpdateOne with hint document',
      'deleteMany-hint: DeleteMany with hint string',
      'deleteOne-hint: DeleteOne with hint string',
      'findOneAndDelete-hint: FindOneAndDelete with hint string',
      'findOneAndReplace-hint: FindOneAndReplace with hint string',
      'findOneAndUpdate-hint: FindOneAndUpdate with hint string',
      'replaceOne-hint: ReplaceOne with hint string',
      'updateMany-hint: UpdateMany with hint string',
      'updateOne-hint: UpdateOne with hint string',
    ],
  },
  {
    cause: 'distinct gets maxTimeMS, which FerretDB refuses (9 FailedToParse)',
    issue: 14,
    owner: 'fidelity',
    upstream: 'ferretdb1',
    tests: [
      'distinct-comment: distinct with string comment',
      'distinct-rawdata: distinct with rawData option on less than 8.2.0 - ignore argument',
      'distinct: Distinct without a filter',
      'distinct: Distinct with a filter',
    ],
  },
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
