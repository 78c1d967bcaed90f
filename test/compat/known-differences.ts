/**
 * Every difference the compatibility suite sees between a direct run and a proxied run, with the
 * issue and branch that own it. The suite fails on a difference missing here AND on an entry
 * here that no longer happens, so this list shrinks as the fixes land: delete an entry (or the
 * `where` items) when its fix merges. docs/testing.md ("Compatibility") summarizes it.
 *
 * `where`: `step:<id>` (a step's result or error), `stored:<collection>` (documents left in the
 * upstream, read directly), `indexes:<collection>` (their index keys). A `where` may appear in
 * two entries when two causes show in the same place (e.g. the documents of `users`).
 */
import { CLIENTS, type ClientName } from './scenario.js';
import type { UpstreamKind } from '../helpers/upstream.js';

export interface KnownDifference {
  /** Short name used in reports and docs. */
  cause: string;
  issue: number;
  /** The branch (engineer) fixing it. */
  owner: 'fidelity' | 'tenancy';
  /** Where it shows. */
  where: string[];
  /** The clients it shows in (`all`: every client that runs those steps). */
  clients: readonly ClientName[] | 'all';
  /** The upstream it happens on (`any`: every upstream). */
  upstream: UpstreamKind | 'any';
  reason: string;
}

const ALL_BUT = (...excluded: ClientName[]): ClientName[] => CLIENTS.filter((client) => !excluded.includes(client));

export const KNOWN_DIFFERENCES: KnownDifference[] = [
  {
    cause: 'tenant field in replies',
    issue: 14,
    owner: 'fidelity',
    where: ['step:findStrict', 'step:odm-hydrated'],
    clients: 'all',
    upstream: 'any',
    reason:
      'every document read through the proxy carries tenantId (isolation.tenantFieldInReplies does not exist yet): ' +
      'a closed schema (pydantic extra=forbid, Java records, additionalProperties: false) rejects it, and a ' +
      'Mongoose hydrated document holds a field its schema does not declare',
  },
  {
    cause: 'distinct gets maxTimeMS',
    issue: 14,
    owner: 'fidelity',
    where: ['step:distinct'],
    clients: 'all',
    upstream: 'ferretdb',
    reason: 'the proxy adds maxTimeMS to every distinct; FerretDB v1 refuses the field (9 FailedToParse)',
  },
  {
    cause: 'upserts lose the query equality fields',
    issue: 14,
    owner: 'fidelity',
    where: [
      'step:upsert-id',
      'step:upsert-inc-1',
      'step:upsert-inc-2',
      'step:upsert-inc-3',
      'step:upsert-replace',
      'step:upsert-findOneAndUpdate',
      'step:upsert-find',
      'step:bulkWrite',
      'step:odm-findOneAndUpdate-upsert',
      'stored:upserts',
      'stored:bulk',
      'stored:users',
    ],
    clients: 'all',
    upstream: 'ferretdb',
    reason:
      'the tenant filter wraps the query in $and, from which FerretDB derives nothing on insert: the upserted ' +
      'document lacks sku/_id/a.b/c/e/f (a new ObjectId instead of the query _id), so a repeated upsert inserts again',
  },
  {
    cause: 'unknown update operator answered 13',
    issue: 14,
    owner: 'fidelity',
    where: ['step:error-unknown-update-operator'],
    // Mongoose casts the update and drops the unknown operator before sending it.
    clients: ALL_BUT('mongoose'),
    upstream: 'any',
    reason: 'refused as operator.unknown (13 Unauthorized); the server answers 9 FailedToParse',
  },
  {
    cause: 'unknown query operator / stage answered 13 / 115',
    issue: 14,
    owner: 'fidelity',
    where: ['step:error-unknown-query-operator', 'step:error-unknown-stage'],
    clients: 'all',
    upstream: 'any',
    reason:
      'refused as operator.unknown (13) and pipeline.unknown-stage (115 CommandNotSupported); the server answers ' +
      '2 BadValue and 40324 (FerretDB: 40234) for the same malformed requests',
  },
  {
    cause: 'bypassDocumentValidation: false refused',
    issue: 14,
    owner: 'fidelity',
    where: ['step:bypassDocumentValidation-false', 'stored:items'],
    // The Go driver does not send the field when it is false; Mongoose's lean insertMany drops it.
    clients: ALL_BUT('go', 'mongoose'),
    upstream: 'any',
    reason: 'field.bypass-validation refuses the field whatever its value; false bypasses nothing',
  },
  {
    cause: 'unique indexes need partial indexes upstream (FerretDB v1 has none)',
    issue: 13,
    owner: 'tenancy',
    where: [
      'step:createIndex',
      'step:error-unique-index',
      'step:listIndexes',
      'stored:indexed',
      'indexes:indexed',
      'step:odm-init',
      'step:odm-listIndexes-users',
      'step:odm-create-duplicate-email',
      'step:odm-count',
      'indexes:users',
      'stored:users',
    ],
    clients: 'all',
    upstream: 'any',
    reason:
      'non-unique indexes are confined per tenant now; a unique index is confined with a per-tenant partial ' +
      'index, which FerretDB v1 cannot build, so it is refused there unless the operator declares it shared: ' +
      'Mongoose autoIndex of a unique field fails, duplicates are stored, listIndexes lacks that index',
  },
  {
    cause: 'server introspection refused',
    issue: 14,
    owner: 'fidelity',
    where: [
      'step:cmd-hostInfo',
      'step:cmd-whatsmyuri',
      'step:cmd-getParameter',
      'step:cmd-serverStatus',
      'step:cmd-getCmdLineOpts',
    ],
    clients: 'all',
    upstream: 'any',
    reason:
      'refused with 13 Unauthorized (command.admin / command.diagnostic / command.stats) instead of a tenant-safe answer',
  },
  {
    cause: 'explain beyond queryPlanner refused',
    issue: 14,
    owner: 'fidelity',
    where: ['step:cmd-explain-executionStats'],
    clients: 'all',
    upstream: 'any',
    reason: 'explain.verbosity refuses executionStats (figures include other tenants) instead of filtering them',
  },
];
