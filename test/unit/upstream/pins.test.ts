import { describe, expect, it } from 'vitest';
import { CursorServers, TransactionPins, decidePin } from '../../../src/upstream/pins.js';

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
