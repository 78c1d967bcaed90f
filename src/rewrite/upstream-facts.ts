/**
 * What the isolation engine knows of the upstream server, detected from the upstream itself
 * (never from configuration): its buildInfo and hello replies as read at start
 * (UpstreamServerInfo fits this shape), for introspection answers only. What the server can do
 * is probed, never read from these (src/upstream/capabilities.ts, wired by main).
 */
import type { Document } from '../wire/bson.js';

export interface UpstreamFacts {
  kind?: 'standalone' | 'replicaSet' | 'sharded';
  /** Its buildInfo reply as read at start; undefined when it failed (the server then counts as MongoDB). */
  buildInfo?: Document;
  /** Its hello reply (logicalSessionTimeoutMinutes…). */
  hello?: Document;
}
