import { Long, serialize, UUID } from 'bson';
import { describe, expect, it } from 'vitest';
import { commandTraits, cursorKey, replyCursor } from '../../../src/upstream/command-traits.js';
import { encodeOpMsg } from '../../../src/wire/op-msg.js';

const body = (doc: Record<string, unknown>): Uint8Array => serialize(doc);

describe('commandTraits', () => {
  it('reads session, transaction, deadline and read preference fields', () => {
    const lsid = { id: new UUID() };
    const traits = commandTraits(
      body({
        find: 'c',
        filter: {},
        lsid,
        txnNumber: Long.fromNumber(3),
        autocommit: false,
        startTransaction: true,
        maxTimeMS: 250,
        $readPreference: { mode: 'secondary', tags: [{ dc: 'east' }] },
        $db: 'app',
      }),
    );
    expect(traits).toMatchObject({
      name: 'find',
      db: 'app',
      hasTxnNumber: true,
      inTransaction: true,
      startTransaction: true,
      maxTimeMS: 250,
      readPreference: { mode: 'secondary', tags: [{ dc: 'east' }] },
      pipelineWrites: false,
    });
    expect(traits.lsid).toBe(Buffer.from(serialize(lsid)).toString('hex'));
  });

  it('names the cursor a getMore or killCursors continues', () => {
    expect(commandTraits(body({ getMore: Long.fromNumber(42), collection: 'c', $db: 'app' })).cursor).toBe(
      cursorKey('app.c', 42n),
    );
    expect(commandTraits(body({ killCursors: 'c', cursors: [Long.fromNumber(7)], $db: 'app' })).cursor).toBe(
      cursorKey('app.c', 7n),
    );
    // Every cursor a killCursors names (its cursors are forgotten by the connection they live on).
    expect(
      commandTraits(body({ killCursors: 'c', cursors: [Long.fromNumber(7), Long.fromNumber(8)], $db: 'app' })).cursors,
    ).toEqual([cursorKey('app.c', 7n), cursorKey('app.c', 8n)]);
  });

  it('sees $out and $merge as the last pipeline stage', () => {
    expect(
      commandTraits(body({ aggregate: 'c', pipeline: [{ $match: {} }, { $out: 'x' }], $db: 'a' })).pipelineWrites,
    ).toBe(true);
    expect(
      commandTraits(body({ aggregate: 'c', pipeline: [{ $merge: { into: 'x' } }], $db: 'a' })).pipelineWrites,
    ).toBe(true);
    expect(commandTraits(body({ aggregate: 'c', pipeline: [{ $match: {} }], $db: 'a' })).pipelineWrites).toBe(false);
  });

  it('treats unreadable fields as absent', () => {
    const traits = commandTraits(body({ insert: 'c', maxTimeMS: 'soon', autocommit: 'no', $db: 'a' }));
    expect(traits).toMatchObject({ name: 'insert', maxTimeMS: undefined, inTransaction: false, lsid: undefined });
  });
});

describe('replyCursor', () => {
  const reply = (doc: Record<string, unknown>): Buffer =>
    encodeOpMsg({ requestId: 1, responseTo: 2, body: serialize(doc) });

  it('names the cursor a reply opened, not an exhausted one', () => {
    expect(replyCursor(reply({ cursor: { id: Long.fromNumber(9), ns: 'app.c', firstBatch: [] }, ok: 1 }))).toBe(
      cursorKey('app.c', 9n),
    );
    expect(
      replyCursor(reply({ cursor: { id: Long.fromNumber(0), ns: 'app.c', firstBatch: [] }, ok: 1 })),
    ).toBeUndefined();
    expect(replyCursor(reply({ ok: 1 }))).toBeUndefined();
  });
});
