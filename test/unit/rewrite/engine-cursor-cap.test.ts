/**
 * Issue 15: a per-tenant cap on open upstream cursors, and the cursors of a client connection
 * that leaves handed over to be killed upstream.
 */
import { Long, UUID, serialize } from 'bson';
import { describe, expect, it } from 'vitest';
import { configFromObject } from '../../../src/config/index.js';
import { ErrorCodes } from '../../../src/errors.js';
import { CursorRegistry, type OrphanedCursor } from '../../../src/policy/cursors.js';
import type { ReplyPlan } from '../../../src/policy/types.js';
import { IsolationEngine, commandInput, type Decision } from '../../../src/rewrite/engine.js';

function setup(cap: number) {
  const cursors = new CursorRegistry();
  const orphaned: Array<[string, OrphanedCursor[]]> = [];
  const engine = new IsolationEngine({
    config: configFromObject({}).isolation,
    cursors,
    sessionKey: Buffer.alloc(32, 1),
    collationSupported: () => true,
    maxOpenCursorsPerTenant: () => cap,
    onOrphanedCursors: (tenant, list) => orphaned.push([tenant, list]),
  });
  return { cursors, engine, orphaned };
}

const find = () => commandInput('find', 'app', serialize({ find: 'c', filter: {}, $db: 'app' }), [], false);
const getMore = (id: bigint) =>
  commandInput('getMore', 'app', serialize({ getMore: Long.fromBigInt(id), collection: 'c', $db: 'app' }), [], false);

function plan(decision: Decision): ReplyPlan {
  if (decision.action !== 'forward') throw new Error(`expected forward, got ${decision.action}`);
  return decision.result.reply;
}

/** The server's reply to a find/getMore on the tenant's physical namespace. */
function cursorReply(id: bigint, ns = 'app.c'): Uint8Array {
  return serialize({ cursor: { id: Long.fromBigInt(id), ns, firstBatch: [] }, ok: 1 });
}

describe('per-tenant open cursor cap', () => {
  it('refuses a command that would open one more cursor; getMore still passes; others are unaffected', () => {
    const { engine, cursors } = setup(2);
    const acme = engine.forTenant('acme');
    acme.reply(plan(acme.decide(find())), cursorReply(11n));
    acme.reply(plan(acme.decide(find())), cursorReply(12n));
    expect(cursors.countFor('acme')).toBe(2);
    const refused = acme.decide(find());
    expect(refused).toMatchObject({
      action: 'refuse',
      refusal: { rule: 'limit.cursors', code: ErrorCodes.OperationFailed },
    });
    if (refused.action === 'refuse') expect(refused.refusal.message).toMatch(/open cursor limit \(2\) reached/);
    expect(refused.action === 'refuse' && refused.refusal.labels).toEqual([]);
    expect(engine.forTenant('globex').decide(find()).action).toBe('forward');
    // An exhausted cursor frees its slot.
    const more = plan(acme.decide(getMore(11n)));
    acme.reply(more, serialize({ cursor: { id: Long.fromNumber(0), ns: 'app.c', nextBatch: [] }, ok: 1 }));
    expect(cursors.countFor('acme')).toBe(1);
    expect(acme.decide(find()).action).toBe('forward');
  });

  it('0 turns the cap off', () => {
    const { engine } = setup(0);
    const acme = engine.forTenant('acme');
    for (let i = 1n; i <= 5n; i++) acme.reply(plan(acme.decide(find())), cursorReply(i));
    expect(acme.decide(find()).action).toBe('forward');
  });
});

describe('cursors of a connection that leaves', () => {
  it('are released to onOrphanedCursors; a cursor continued on another connection goes with it', () => {
    const { engine, cursors, orphaned } = setup(0);
    const first = engine.forTenant('acme');
    const second = engine.forTenant('acme');
    first.reply(plan(first.decide(find())), cursorReply(21n));
    first.reply(plan(first.decide(find())), cursorReply(22n));
    // The driver continues cursor 22 on its other pooled connection.
    second.reply(plan(second.decide(getMore(22n))), cursorReply(22n));
    first.close();
    expect(orphaned).toHaveLength(1);
    const [tenant, list] = orphaned[0]!;
    expect(tenant).toBe('acme');
    expect(list.map((cursor) => cursor.id)).toEqual([21n]);
    expect(cursors.countFor('acme')).toBe(1);
    first.close(); // idempotent: nothing left
    expect(orphaned).toHaveLength(1);
    second.close();
    expect(orphaned[1]![1].map((cursor) => cursor.id)).toEqual([22n]);
    expect(cursors.size).toBe(0);
  });
});

describe('cursors of sessions that end', () => {
  it('endSessions releases the cursors opened in those sessions, only the tenant’s own', () => {
    const { engine, cursors, orphaned } = setup(0);
    const acme = engine.forTenant('acme');
    const globex = engine.forTenant('globex');
    const lsid = (byte: number) => ({ id: new UUID(Buffer.alloc(16, byte)) });
    const findIn = (session: object) =>
      commandInput('find', 'app', serialize({ find: 'c', filter: {}, lsid: session, $db: 'app' }), [], false);
    acme.reply(plan(acme.decide(findIn(lsid(1)))), cursorReply(31n));
    acme.reply(plan(acme.decide(findIn(lsid(2)))), cursorReply(32n));
    globex.reply(plan(globex.decide(findIn(lsid(1)))), cursorReply(33n));
    const end = commandInput('endSessions', 'admin', serialize({ endSessions: [lsid(1)], $db: 'admin' }), [], false);
    expect(acme.decide(end).action).toBe('forward');
    expect(orphaned).toEqual([['acme', [{ id: 31n, db: expect.any(String), coll: expect.any(String) }]]]);
    expect(cursors.countFor('acme')).toBe(1);
    expect(cursors.countFor('globex')).toBe(1);
  });
});
