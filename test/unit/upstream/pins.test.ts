import { EventEmitter } from 'node:events';
import { Long, serialize } from 'bson';
import { describe, expect, it } from 'vitest';
import { cursorKey } from '../../../src/upstream/command-traits.js';
import { CursorHomes, CursorServers, TransactionPins, decidePin } from '../../../src/upstream/pins.js';
import { encodeOpMsg } from '../../../src/wire/op-msg.js';
import { type ReplyScan, scanReply } from '../../../src/wire/reply-scan.js';

const base = { lsid: 'abc', inTransaction: false, startTransaction: false };

describe('decidePin', () => {
  it('pins nothing outside a transaction, even with a session', () => {
    expect(decidePin({ ...base, name: 'find' })).toEqual({ kind: 'none' });
    expect(decidePin({ ...base, name: 'insert', lsid: undefined, inTransaction: true })).toEqual({ kind: 'none' });
  });

  it('starts a pin on startTransaction, continues it inside, ends it on commit or abort', () => {
    expect(decidePin({ ...base, name: 'insert', inTransaction: true, startTransaction: true })).toEqual({
      kind: 'start',
      lsid: 'abc',
    });
    expect(decidePin({ ...base, name: 'find', inTransaction: true })).toEqual({ kind: 'continue', lsid: 'abc' });
    expect(decidePin({ ...base, name: 'commitTransaction', inTransaction: true })).toEqual({
      kind: 'end',
      lsid: 'abc',
    });
    expect(decidePin({ ...base, name: 'abortTransaction', inTransaction: true })).toEqual({ kind: 'end', lsid: 'abc' });
  });
});

describe('TransactionPins', () => {
  it('keeps one resource per lsid, reports what a new pin replaces and what an owner releases', () => {
    const pins = new TransactionPins<string, object>();
    const client1 = {};
    const client2 = {};
    expect(pins.set('s1', 'conn-a', client1)).toBeUndefined();
    expect(pins.set('s2', 'conn-b', client2)).toBeUndefined();
    expect(pins.set('s1', 'conn-a', client1)).toBeUndefined();
    expect(pins.set('s1', 'conn-c', client1)).toBe('conn-a');
    expect(pins.get('s1')).toBe('conn-c');
    expect(pins.holds('conn-b')).toBe(true);
    expect(pins.releaseOwner(client1)).toEqual(['conn-c']);
    expect(pins.get('s1')).toBeUndefined();
    pins.forget('conn-b');
    expect(pins.size).toBe(0);
  });

  it('unpins on delete and returns the resource', () => {
    const pins = new TransactionPins<string, object>();
    pins.set('s', 'c', {});
    expect(pins.delete('s')).toBe('c');
    expect(pins.delete('s')).toBeUndefined();
  });
});

describe('CursorServers', () => {
  it('remembers the server of a cursor by namespace and id, bounded by capacity (least recently used first)', () => {
    const cursors = new CursorServers(2);
    cursors.remember('db.c:1', 'h1:27017');
    cursors.remember('db.c:2', 'h2:27017');
    expect(cursors.serverOf('db.c:1')).toBe('h1:27017'); // now most recently used
    cursors.remember('db.d:1', 'h3:27017');
    expect(cursors.serverOf('db.c:2')).toBeUndefined();
    expect(cursors.serverOf('db.c:1')).toBe('h1:27017');
    expect(cursors.serverOf('db.d:1')).toBe('h3:27017');
    cursors.forgetServer('h3:27017');
    expect(cursors.serverOf('db.d:1')).toBeUndefined();
    cursors.forget('db.c:1');
    expect(cursors.size).toBe(0);
  });
});

describe('CursorHomes', () => {
  // The forwarding layer hands each reply's scan (upstream/execute.ts).
  const reply = (id: number, ns = 'app.c'): ReplyScan =>
    scanReply(
      encodeOpMsg({
        requestId: 1,
        responseTo: 2,
        body: serialize({ cursor: { id: Long.fromNumber(id), ns, firstBatch: [] }, ok: 1 }),
      }),
    );
  const error = scanReply(encodeOpMsg({ requestId: 1, responseTo: 2, body: serialize({ ok: 0, code: 43 }) }));
  const find = { name: 'find', cursors: [] };
  const getMore = (id: number) => ({ name: 'getMore', cursors: [cursorKey('app.c', BigInt(id))] });

  it('holds the connection a cursor was opened on until a getMore exhausts it, wherever the getMore runs', () => {
    const homes = new CursorHomes<EventEmitter>();
    const a = new EventEmitter();
    const b = new EventEmitter();
    homes.observe(find, reply(9), a);
    homes.observe(find, reply(0), b); // a single batch opens nothing
    expect([homes.holds(a), homes.holds(b)]).toEqual([true, false]);
    homes.observe(getMore(9), reply(9), b); // continued on another connection: its home stays a
    expect([homes.holds(a), homes.holds(b)]).toEqual([true, false]);
    homes.observe(getMore(9), reply(0), b);
    expect(homes.holds(a)).toBe(false);
  });

  it('forgets cursors killed, failed, idle past idleMS, or whose connection closed; bounded', () => {
    let now = 0;
    const homes = new CursorHomes<EventEmitter>({ capacity: 3, idleMS: 1_000, now: () => now });
    const a = new EventEmitter();
    for (const id of [1, 2, 3]) homes.observe(find, reply(id), a);
    homes.observe({ name: 'killCursors', cursors: [cursorKey('app.c', 1n), cursorKey('app.c', 2n)] }, error, a);
    expect(homes.size).toBe(1);
    homes.observe(getMore(3), error, a); // CursorNotFound, or any failure
    expect(homes.holds(a)).toBe(false);
    homes.observe(find, reply(4), a);
    now = 1_001;
    expect(homes.holds(a)).toBe(false);
    const b = new EventEmitter();
    homes.observe(find, reply(5), b);
    b.emit('close');
    expect(homes.holds(b)).toBe(false);
    for (const id of [6, 7, 8, 9]) homes.observe(find, reply(id), a);
    expect(homes.size).toBe(3);
  });
});
