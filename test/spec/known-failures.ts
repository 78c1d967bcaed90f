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
      'hints naming an index that does not start with the tenant field are refused (hint.not-tenant-prefixed), even _id_',
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
    ],
  },
  {
    cause: 'bypassDocumentValidation: false is refused (field.bypass-validation)',
    issue: 14,
    owner: 'fidelity',
    upstream: 'any',
    tests: [
      'bypassDocumentValidation: InsertOne passes bypassDocumentValidation: false',
      'bypassDocumentValidation: ReplaceOne passes bypassDocumentValidation: false',
      'bypassDocumentValidation: UpdateMany passes bypassDocumentValidation: false',
      'bypassDocumentValidation: UpdateOne passes bypassDocumentValidation: false',
    ],
  },
  {
    cause: 'distinct gets maxTimeMS, which FerretDB refuses (9 FailedToParse)',
    issue: 14,
    owner: 'fidelity',
    upstream: 'ferretdb',
    tests: [
      'distinct-comment: distinct with string comment',
      'distinct-rawdata: distinct with rawData option on less than 8.2.0 - ignore argument',
      'distinct: Distinct without a filter',
      'distinct: Distinct with a filter',
    ],
  },
  {
    cause:
      'upserts lose the query equality fields (the $and tenant wrapper; FerretDB derives nothing from it): _id from the filter',
    issue: 14,
    owner: 'fidelity',
    upstream: 'ferretdb',
    tests: [
      'create-null-ids: inserting _id with type null via updateOne',
      'create-null-ids: inserting _id with type null via updateMany',
      'replaceOne: ReplaceOne with upsert when no documents match without an id specified',
      'updateMany: UpdateMany with upsert when no documents match',
      'updateOne: UpdateOne with upsert when no documents match',
    ],
  },
  {
    cause: 'createIndexes of a key not starting with the tenant field is refused (ddl.index-tenant-prefix)',
    issue: 13,
    owner: 'tenancy',
    upstream: 'any',
    tests: ['findOneAndUpdate-errorResponse: findOneAndUpdate DuplicateKey error is accessible'],
  },
];
