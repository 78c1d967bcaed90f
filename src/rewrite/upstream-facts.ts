/**
 * What the isolation engine knows of the upstream server, detected from the upstream itself
 * (never from configuration): its buildInfo and hello replies as read at start
 * (UpstreamServerInfo fits this shape).
 */
import type { Document } from '../wire/bson.js';

export interface UpstreamFacts {
  kind?: 'standalone' | 'replicaSet' | 'sharded';
  /** Its buildInfo reply as read at start; undefined when it failed (the server then counts as MongoDB). */
  buildInfo?: Document;
  /** Its hello reply (logicalSessionTimeoutMinutes…). */
  hello?: Document;
}

/**
 * FerretDB v1 (buildInfo carries `ferretdbVersion`) builds an upserted document from top-level
 * equalities only, never through the tenant `$and`; MongoDB (and an unknown server) does.
 */
export function upsertFieldsFromAndBy(buildInfo: Document | undefined): boolean {
  return buildInfo === undefined || !('ferretdbVersion' in buildInfo);
}
