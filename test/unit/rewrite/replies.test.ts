import { describe, expect, it } from 'vitest';
import { filterListing, mapReplyNames, scrubErrorValues, scrubMessage } from '../../../src/rewrite/replies.js';
import type { NamespaceResolver } from '../../../src/policy/types.js';
import { Long, ObjectId, UUID, deserialize, serialize, type Document } from '../../../src/wire/bson.js';

function decode(bytes: Uint8Array | undefined): Document {
  expect(bytes).toBeDefined();
  return deserialize(bytes!, { useBigInt64: true });
}

const SECRET = 'carol@example.com';

describe('scrubMessage', () => {
  it('removes the values of a duplicate-key message and keeps the index and field names', () => {
    expect(
      scrubMessage(`E11000 duplicate key error collection: app.users index: email_1 dup key: { email: "${SECRET}" }`),
    ).toBe('E11000 duplicate key error collection: app.users index: email_1 dup key: { email: <redacted> }');
    expect(
      scrubMessage(
        `E11000 duplicate key error collection: app.users index: t_1_email_1 dup key: { tenantId: "acme", email: "a, b: } \\" c" }`,
      ),
    ).toBe(
      'E11000 duplicate key error collection: app.users index: t_1_email_1 dup key: { tenantId: <redacted>, email: <redacted> }',
    );
    expect(
      scrubMessage(
        `E11000 duplicate key error collection: app.users index: _id_ dup key: { _id: ObjectId('65a1b2c3d4e5f60718293a4b') }`,
      ),
    ).toBe('E11000 duplicate key error collection: app.users index: _id_ dup key: { _id: <redacted> }');
    // Pre-4.2 servers print no field names.
    expect(scrubMessage(`E11000 duplicate key error index: app.users.$email_1 dup key: { : "${SECRET}" }`)).toBe(
      'E11000 duplicate key error index: app.users.$email_1 dup key: { : <redacted> }',
    );
    // Unreadable: everything after "dup key:" goes.
    expect(scrubMessage(`E11000 duplicate key error dup key: { email: "${SECRET}`)).toBe(
      'E11000 duplicate key error dup key: { <redacted> }',
    );
    // keyPattern names win over the text.
    expect(scrubMessage(`E11000 dup key: { email: "${SECRET}" }`, ['email'])).toBe(
      'E11000 dup key: { email: <redacted> }',
    );
  });

  it('removes the input quoted by conversion and date parsing errors', () => {
    const cases: Array<[string, string]> = [
      [
        "PlanExecutor error during aggregation :: caused by :: Failed to parse number 'secret-42' in $convert with no onError value: Did not consume whole string.",
        'PlanExecutor error during aggregation :: caused by :: Failed to parse number <redacted> in $convert with no onError value',
      ],
      [
        "Failed to parse objectId 'xyz' in $convert with no onError value: Invalid string length for parsing to OID, expected 24 but found 3",
        'Failed to parse objectId <redacted> in $convert with no onError value',
      ],
      [
        "Error parsing date string 'secret'; 0: passing a time zone identifier as part of the string is not allowed 's'",
        'Error parsing date string <redacted>',
      ],
      [
        "$dateFromString requires that 'dateString' be a string, found: int with value 424242",
        "$dateFromString requires that 'dateString' be a string, found: int with value <redacted>",
      ],
      [
        'BSONObj size: 16800000 (0x1005D80) is invalid. Size must be between 0 and 16793600(16MB) First element: _id: "secret"',
        'BSONObj size: 16800000 (0x1005D80) is invalid. Size must be between 0 and 16793600(16MB) First element: <redacted>',
      ],
    ];
    for (const [message, expected] of cases) expect(scrubMessage(message)).toBe(expected);
    expect(scrubMessage('Unsupported conversion from string to int in $convert with no onError value')).toBe(
      'Unsupported conversion from string to int in $convert with no onError value',
    );
  });
});

describe('scrubErrorValues', () => {
  const dupMessage = `E11000 duplicate key error collection: app.users index: email_1 dup key: { email: "${SECRET}" }`;

  it('scrubs errmsg and removes keyValue of an ok:0 reply', () => {
    const reply = serialize({
      ok: 0,
      errmsg: dupMessage,
      code: 11000,
      codeName: 'DuplicateKey',
      keyPattern: { email: 1 },
      keyValue: { email: SECRET },
    });
    const scrubbed = scrubErrorValues(reply);
    expect(Buffer.from(scrubbed!).includes(SECRET)).toBe(false);
    expect(decode(scrubbed)).toEqual({
      ok: 0,
      errmsg: 'E11000 duplicate key error collection: app.users index: email_1 dup key: { email: <redacted> }',
      code: 11000,
      codeName: 'DuplicateKey',
      keyPattern: { email: 1 },
    });
  });

  it('scrubs every writeErrors entry and writeConcernError of an ok:1 reply', () => {
    const reply = serialize({
      n: 1,
      writeErrors: [
        { index: 1, code: 11000, errmsg: dupMessage, keyPattern: { email: 1 }, keyValue: { email: SECRET } },
        { index: 2, code: 121, errmsg: 'Document failed validation' },
      ],
      writeConcernError: {
        code: 64,
        codeName: 'WriteConcernFailed',
        errmsg: "Failed to parse number 'x9' in $convert with no onError value: y",
      },
      ok: 1,
    });
    const scrubbed = scrubErrorValues(reply);
    expect(Buffer.from(scrubbed!).includes(SECRET)).toBe(false);
    const doc = decode(scrubbed);
    expect(doc['n']).toBe(1);
    expect(doc['writeErrors']).toEqual([
      {
        index: 1,
        code: 11000,
        errmsg: 'E11000 duplicate key error collection: app.users index: email_1 dup key: { email: <redacted> }',
        keyPattern: { email: 1 },
      },
      { index: 2, code: 121, errmsg: 'Document failed validation' },
    ]);
    expect((doc['writeConcernError'] as Document)['errmsg']).toBe(
      'Failed to parse number <redacted> in $convert with no onError value',
    );
  });

  it('scrubs per-shard replies of mongos', () => {
    const reply = serialize({
      ok: 0,
      errmsg: 'failed',
      code: 11000,
      raw: { 'shard0/h:1': { ok: 0, errmsg: dupMessage, keyValue: { email: SECRET } } },
    });
    expect(Buffer.from(scrubErrorValues(reply)!).includes(SECRET)).toBe(false);
  });

  it('returns undefined when nothing changes, so the upstream bytes are forwarded', () => {
    expect(scrubErrorValues(serialize({ ok: 1, n: 2 }))).toBeUndefined();
    expect(scrubErrorValues(serialize({ ok: 0, errmsg: 'ns not found', code: 26 }))).toBeUndefined();
    // An ok:1 reply's other fields are not error messages.
    expect(scrubErrorValues(serialize({ ok: 1, errmsg: dupMessage, keyValue: { a: 1 } }))).toBeUndefined();
  });

  it('never touches cursor documents, except failed bulkWrite results when asked', () => {
    const doc = { ok: 0, idx: 0, errmsg: dupMessage, keyValue: { email: SECRET } };
    const reply = serialize({
      cursor: { firstBatch: [doc], id: Long.fromBigInt(0n), ns: 'admin.$cmd.bulkWrite' },
      nErrors: 1,
      ok: 1,
    });
    expect(scrubErrorValues(reply)).toBeUndefined();
    const scrubbed = scrubErrorValues(reply, { bulkWriteCursor: true });
    expect(Buffer.from(scrubbed!).includes(SECRET)).toBe(false);
  });
});

/** Collection prefix: tenant acme's `users` is `acme__users` on the server. */
const resolver: NamespaceResolver = {
  resolve: () => {
    throw new Error('not used');
  },
  resolveDatabase: () => {
    throw new Error('not used');
  },
  toClient: (db, coll) => {
    if (db !== 'app') return undefined;
    if (coll === undefined) return { db };
    return coll.startsWith('acme__') ? { db, coll: coll.slice('acme__'.length) } : undefined;
  },
};

describe('mapReplyNames', () => {
  it('maps the cursor ns and keeps the batch byte-exact', () => {
    const batch = [{ _id: new ObjectId(), n: Long.fromNumber(5), s: 'acme__users' }];
    const reply = serialize({ cursor: { firstBatch: batch, id: Long.fromBigInt(9n), ns: 'app.acme__users' }, ok: 1 });
    const mapped = mapReplyNames(reply, resolver)!;
    expect(decode(mapped)['cursor']).toMatchObject({ ns: 'app.users', id: 9n });
    const original = serialize({ firstBatch: batch });
    expect(Buffer.from(mapped).includes(Buffer.from(original.subarray(4, original.length - 1)))).toBe(true);
  });

  it('maps listCollections names and drops entries that are not the tenant own', () => {
    const reply = serialize({
      cursor: {
        firstBatch: [
          { name: 'acme__users', type: 'collection', options: {}, info: { readOnly: false } },
          { name: 'bob__users', type: 'collection', options: {} },
        ],
        id: Long.fromBigInt(0n),
        ns: 'app.$cmd.listCollections',
      },
      ok: 1,
    });
    const cursor = decode(mapReplyNames(reply, resolver))['cursor'] as Document;
    expect(cursor['ns']).toBe('app.$cmd.listCollections');
    expect(cursor['firstBatch']).toEqual([
      { name: 'users', type: 'collection', options: {}, info: { readOnly: false } },
    ]);
  });

  it('maps listIndexes cursor ns, old index ns fields and error messages', () => {
    const indexes = serialize({
      cursor: {
        firstBatch: [{ v: 2, key: { _id: 1 }, name: '_id_', ns: 'app.acme__users' }],
        id: Long.fromBigInt(0n),
        ns: 'app.$cmd.listIndexes.acme__users',
      },
      ok: 1,
    });
    const cursor = decode(mapReplyNames(indexes, resolver))['cursor'] as Document;
    expect(cursor['ns']).toBe('app.$cmd.listIndexes.users');
    expect((cursor['firstBatch'] as Document[])[0]!['ns']).toBe('app.users');
    const error = serialize({
      ok: 0,
      errmsg: 'E11000 duplicate key error collection: app.acme__users index: email_1 dup key: { email: <redacted> }',
      code: 11000,
    });
    expect(decode(mapReplyNames(error, resolver))['errmsg']).toBe(
      'E11000 duplicate key error collection: app.users index: email_1 dup key: { email: <redacted> }',
    );
    const known = serialize({ ok: 0, errmsg: 'Collection app.acme__users already exists.', code: 48 });
    expect(
      decode(mapReplyNames(known, resolver, { namespaces: [{ physical: 'app.acme__users', client: 'app.users' }] }))[
        'errmsg'
      ],
    ).toBe('Collection app.users already exists.');
  });

  it("maps DocumentDB's spelling of the listing cursors ($cmd.ListCollections) like MongoDB's", () => {
    const reply = serialize({
      cursor: {
        firstBatch: [
          { name: 'acme__users', type: 'collection' },
          { name: 'bob__users', type: 'collection' },
        ],
        id: Long.fromBigInt(0n),
        ns: 'app.$cmd.ListCollections',
      },
      ok: 1,
    });
    const cursor = decode(mapReplyNames(reply, resolver))['cursor'] as Document;
    expect(cursor['ns']).toBe('app.$cmd.ListCollections');
    expect(cursor['firstBatch']).toEqual([{ name: 'users', type: 'collection' }]);
    const indexes = serialize({
      cursor: { firstBatch: [], id: Long.fromBigInt(0n), ns: 'app.$cmd.ListIndexes.acme__users' },
      ok: 1,
    });
    expect((decode(mapReplyNames(indexes, resolver))['cursor'] as Document)['ns']).toBe('app.$cmd.ListIndexes.users');
  });

  it('catalogue 64: DbAlreadyExists names the databases as the tenant does, and no database of anyone else', () => {
    const perTenant: NamespaceResolver = {
      ...resolver,
      toClient: (db) => (db.startsWith('acme_') ? { db: db.slice('acme_'.length) } : undefined),
    };
    const error = serialize({
      ok: 0,
      code: 13297,
      errmsg: 'db already exists with different case already have: [acme_Orders] trying to create [acme_orders]',
    });
    expect(decode(mapReplyNames(error, perTenant))['errmsg']).toBe(
      'db already exists with different case already have: [Orders] trying to create [orders]',
    );
    const foreign = serialize({
      ok: 0,
      code: 13297,
      errmsg: 'db already exists with different case already have: [ACME_orders] trying to create [acme_orders]',
    });
    expect(decode(mapReplyNames(foreign, perTenant))['errmsg']).toBe(
      'db already exists with different case already have: [another database] trying to create [orders]',
    );
  });

  it('returns undefined when there is nothing to map', () => {
    expect(mapReplyNames(serialize({ n: 1, ok: 1 }), resolver)).toBeUndefined();
  });
});

describe('filterListing', () => {
  const listCollections = serialize({
    cursor: {
      firstBatch: [
        {
          name: 'acme__users',
          type: 'collection',
          options: { validator: { tenantId: { $type: 'string' } } },
          info: { readOnly: false, uuid: new UUID() },
          idIndex: { v: 2, key: { _id: 1 }, name: '_id_' },
        },
        { name: 'bob__secrets', type: 'collection', options: {}, info: { readOnly: false } },
        { name: 'system.views', type: 'collection', options: {} },
        {
          name: 'acme__hidden',
          type: 'view',
          options: { viewOn: 'acme__users', pipeline: [{ $match: { x: 'literal' } }] },
        },
      ],
      id: Long.fromBigInt(0n),
      ns: 'app.$cmd.listCollections',
    },
    ok: 1,
  });

  it('drops what the tenant may not see and strips options and info.uuid', () => {
    const filtered = filterListing(listCollections, 'collections', resolver, (name) => name !== 'hidden');
    const cursor = decode(filtered)['cursor'] as Document;
    expect(cursor['firstBatch']).toEqual([
      {
        name: 'acme__users',
        type: 'collection',
        options: {},
        info: { readOnly: false },
        idIndex: { v: 2, key: { _id: 1 }, name: '_id_' },
      },
    ]);
    // Then names are mapped (the engine's order).
    expect((decode(mapReplyNames(filtered!, resolver))['cursor'] as Document)['firstBatch']).toEqual([
      {
        name: 'users',
        type: 'collection',
        options: {},
        info: { readOnly: false },
        idIndex: { v: 2, key: { _id: 1 }, name: '_id_' },
      },
    ]);
  });

  it('filters indexes by name', () => {
    const reply = serialize({
      cursor: {
        firstBatch: [
          { v: 2, key: { _id: 1 }, name: '_id_' },
          { v: 2, key: { x: 1 }, name: 'x_1' },
        ],
        id: Long.fromBigInt(0n),
        ns: 'app.$cmd.listIndexes.acme__users',
      },
      ok: 1,
    });
    expect(
      (decode(filterListing(reply, 'indexes', resolver, (name) => name === '_id_'))['cursor'] as Document)[
        'firstBatch'
      ],
    ).toEqual([{ v: 2, key: { _id: 1 }, name: '_id_' }]);
    expect(filterListing(reply, 'indexes', resolver)).toBeUndefined();
  });

  it('returns undefined for error replies', () => {
    expect(filterListing(serialize({ ok: 0, errmsg: 'x', code: 13 }), 'collections', resolver)).toBeUndefined();
  });
});
