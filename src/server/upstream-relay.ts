/**
 * The identity layer's RelayConnection over a real upstream connection: a client's own SCRAM
 * exchange runs over it (scram-passthrough), then that client's commands do too, so the
 * upstream's RBAC applies. It is never returned to the shared pool.
 */
import type { Document } from '../wire/bson.js';
import type { RelayConnection } from '../identity/types.js';
import type { UpstreamConnection } from '../upstream/connection.js';
import { runCommand } from '../upstream/handshake.js';

export class UpstreamRelay implements RelayConnection {
  constructor(readonly connection: UpstreamConnection) {}

  runCommand(db: string, command: Document): Promise<Document> {
    return runCommand(this.connection, db, command);
  }

  discard(): void {
    this.connection.close();
  }
}
