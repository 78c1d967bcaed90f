/**
 * The handler for every command the classification table rewrites (policy/commands.ts), keyed
 * by handler name. Cursor and session handlers need per-proxy state (the cursor registry, the
 * session key), so the table is built once per engine.
 */
import type { HandlerName } from '../policy/commands.js';
import { createCursorHandlers, type CursorRegistry } from '../policy/cursors.js';
import { DDL_HANDLERS } from './ddl.js';
import { createReadHandlers } from './reads.js';
import { createSessionHandlers } from './sessions.js';
import { createIntrospectionHandlers, type IntrospectionOptions } from './introspection.js';
import type { CommandHandler } from '../policy/types.js';
import { WRITE_HANDLERS } from './writes.js';

/**
 * ping, buildInfo, atlasVersion, getDefaultRWConcern: carry nothing of anyone's (the last two
 * describe the deployment, never a tenant); forwarded as they are (fields allowlisted by the
 * engine), so the server answers.
 */
const passThrough: CommandHandler = (input) => ({
  body: input.body,
  sequences: input.sequences,
  reply: { scrubErrors: false },
  notes: [],
});

export function buildHandlers(
  cursors: CursorRegistry,
  sessionKey: Buffer,
  introspection: IntrospectionOptions = { upstream: () => ({}), startedAt: Date.now() },
): Partial<Record<HandlerName, CommandHandler>> {
  const writes = WRITE_HANDLERS;
  const reads = createReadHandlers({
    update: writes.update,
    delete: writes.delete,
    findAndModify: writes.findAndModify,
  });
  const sessions = createSessionHandlers(sessionKey);
  return {
    ...reads,
    insert: writes.insert,
    update: writes.update,
    delete: writes.delete,
    findAndModify: writes.findAndModify,
    bulkWrite: writes.bulkWrite,
    ...createCursorHandlers(cursors),
    ...DDL_HANDLERS,
    endSessions: sessions.endSessions,
    killSessions: sessions.killSessions,
    refreshSessions: sessions.refreshSessions,
    commitTransaction: sessions.commitTransaction,
    abortTransaction: sessions.abortTransaction,
    ping: passThrough,
    buildInfo: passThrough,
    atlasVersion: passThrough,
    getDefaultRWConcern: passThrough,
    ...createIntrospectionHandlers(introspection),
  };
}
