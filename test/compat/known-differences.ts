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
import type { ClientName } from './scenario.js';
import type { UpstreamKind } from '../helpers/upstream.js';

export interface KnownDifference {
  /** Short name used in reports and docs. */
  cause: string;
  issue: number;
  /** The branch (engineer) fixing it, or `design`: what the proxy does on purpose (never to be removed). */
  owner: 'fidelity' | 'tenancy' | 'design';
  /** Where it shows. */
  where: string[];
  /** The clients it shows in (`all`: every client that runs those steps). */
  clients: readonly ClientName[] | 'all';
  /** The upstream it happens on (`any`: every upstream). */
  upstream: UpstreamKind | 'any';
  reason: string;
}

export const KNOWN_DIFFERENCES: KnownDifference[] = [
  {
    cause: "the Java driver cannot read FerretDB v1's write error for an unknown update operator",
    issue: 14,
    owner: 'fidelity',
    where: ['step:error-unknown-update-operator'],
    clients: ['java'],
    upstream: 'ferretdb1',
    reason:
      'direct, FerretDB v1 answers the unknown update operator with a write error without `n`, which the Java ' +
      'sync driver cannot decode (BsonInvalidOperationException); through the proxy it gets the refusal as a ' +
      'server error (code 9, as MongoDB answers an unknown modifier)',
  },
  {
    cause: 'upserts lose some query equality fields',
    issue: 14,
    owner: 'fidelity',
    where: ['step:upsert-find', 'stored:upserts', 'stored:users'],
    clients: 'all',
    upstream: 'ferretdb1',
    reason:
      'the proxy supplies the fields MongoDB derives (rewrite/upsert.ts) where FerretDB v1 derives nothing from the ' +
      "tenant $and; what is left differs in the scenario's remaining upsert (read back and stored)",
  },
  {
    cause: 'unknown stage answered 40324, FerretDB says 40234',
    issue: 14,
    owner: 'fidelity',
    where: ['step:error-unknown-stage'],
    clients: 'all',
    upstream: 'ferretdb1',
    reason: 'the proxy answers an unknown stage as MongoDB does (40324); FerretDB v1 answers 40234',
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
      'step:odm-hydrated',
      'indexes:users',
      'stored:users',
    ],
    clients: 'all',
    upstream: 'ferretdb1',
    reason:
      'non-unique indexes are confined per tenant now; a unique index is confined with a per-tenant partial ' +
      'index, which FerretDB v1 cannot build, so it is refused there unless the operator declares it shared: ' +
      'Mongoose autoIndex of a unique field fails, duplicates are stored (and read back), listIndexes lacks that index',
  },
  {
    cause: 'the proxy answers getParameter and serverStatus itself; the DocumentDB gateway cannot',
    issue: 14,
    owner: 'design',
    where: ['step:cmd-getParameter', 'step:cmd-serverStatus'],
    clients: 'all',
    upstream: 'documentdb',
    reason:
      'by design, not to be fixed: the proxy answers server introspection with what a tenant may see (issue 14, ' +
      '"Server introspection") so drivers, shells and monitoring agents start; direct, the gateway answers ' +
      'serverStatus with 115 CommandNotSupported and getParameter with 52461700 (its get_parameter function is ' +
      'missing in DocumentDB 0.106.0)',
  },
];
