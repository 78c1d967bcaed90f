import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCodes, ProxyError, UpstreamError } from '../../../src/errors.js';
import { FALLBACK_CAPABILITIES, PROBE_COMMENT } from '../../../src/upstream/capabilities.js';
import { classifyHello, describeServer, discoverServer } from '../../../src/upstream/topology.js';
import { Upstream } from '../../../src/upstream/upstream.js';
import type { Document } from '../../../src/wire/bson.js';
import { FAKE_HELLO, type FakeUpstream, startFakeUpstream } from '../../helpers/fake-upstream.js';

describe('classifyHello / describeServer', () => {
  it('classifies mongos, standalone, primary, secondary, ghost and arbiter', () => {
    expect(classifyHello({ msg: 'isdbgrid', isWritablePrimary: true })).toEqual({ type: 'mongos' });
    expect(classifyHello({ isWritablePrimary: true })).toEqual({ type: 'standalone' });
    expect(classifyHello({ setName: 'rs', isWritablePrimary: true })).toEqual({ type: 'primary', setName: 'rs' });
    expect(classifyHello({ setName: 'rs', ismaster: true })).toEqual({ type: 'primary', setName: 'rs' });
    expect(
      classifyHello({ setName: 'rs', secondary: true, primary: 'b:1', hosts: ['a:1', 'b:1'], passives: ['c:1'] }),
    ).toEqual({
      type: 'member',
      setName: 'rs',
      primary: 'b:1',
      hosts: ['a:1', 'b:1', 'c:1'],
    });
    expect(classifyHello({ isreplicaset: true })).toEqual({ type: 'ghost' });
    expect(classifyHello({ setName: 'rs', arbiterOnly: true }).type).toBe('other');
  });

  it('lifts limits, keeps absent session support absent and defaults the rest', () => {
    const sharded = describeServer({ ...FAKE_HELLO, msg: 'isdbgrid' }, 'm:1', ['zstd']);
    expect(sharded).toMatchObject({
      kind: 'sharded',
      address: 'm:1',
      maxWireVersion: 21,
      logicalSessionTimeoutMinutes: 30,
      compression: ['zstd'],
    });
    const bare = describeServer({ ok: 1 }, 'h:1');
    expect(bare).toMatchObject({
      kind: 'standalone',
      minWireVersion: 0,
      maxBsonObjectSize: 16 * 1024 * 1024,
      maxMessageSizeBytes: 48_000_000,
      maxWriteBatchSize: 100_000,
    });
    expect('logicalSessionTimeoutMinutes' in bare).toBe(false);
    expect('setName' in bare).toBe(false);
    expect(describeServer({ setName: 'rs', isWritablePrimary: true }, 'h:1')).toMatchObject({
      kind: 'replicaSet',
      setName: 'rs',
    });
  });

  it("catalogue 9: capabilities are the probe's, MongoDB's when not probed (collation assumed: pinning fails closed)", () => {
    expect(describeServer(FAKE_HELLO, 'h:1').capabilities).toEqual(FALLBACK_CAPABILITIES);
    const refused = { ...FALLBACK_CAPABILITIES, collation: false };
    expect(describeServer(FAKE_HELLO, 'h:1', [], refused).capabilities.collation).toBe(false);
    expect(describeServer(FAKE_HELLO, 'h:1').buildInfo).toBeUndefined();
    // buildInfo is kept for introspection answers; it no longer decides any capability.
    const ferret = describeServer(FAKE_HELLO, 'h:1', [], FALLBACK_CAPABILITIES, { ferretdbVersion: 'v1.24.2', ok: 1 });
    expect(ferret.buildInfo).toEqual({ ferretdbVersion: 'v1.24.2', ok: 1 });
    expect(ferret.capabilities.collation).toBe(true);
  });
});

describe('discoverServer', () => {
  const host = (h: string) => ({ host: h, port: 1 });
  function world(hellos: Record<string, Document | Error>) {
    const opened: string[] = [];
    const discarded: string[] = [];
    return {
      opened,
      discarded,
      open: async (address: { host: string; port: number }) => {
        opened.push(address.host);
        const hello = hellos[address.host];
        if (hello === undefined) throw new UpstreamError(ErrorCodes.HostUnreachable, `${address.host} is down`);
        if (hello instanceof Error) throw hello;
        return { connection: address.host, hello };
      },
      discard: (c: string) => discarded.push(c),
    };
  }

  it('follows a secondary to the primary it names', async () => {
    const w = world({
      a: { setName: 'rs', secondary: true, primary: 'c:1', hosts: ['a:1', 'b:1', 'c:1'] },
      c: { setName: 'rs', isWritablePrimary: true },
    });
    const found = await discoverServer({ seeds: [host('a')], replicaSet: 'rs', directConnection: false, ...w });
    expect(found.address).toEqual(host('c'));
    expect(w.opened).toEqual(['a', 'c']);
    expect(w.discarded).toEqual(['a']);
  });

  it('tries the hosts a member lists when it knows no primary yet', async () => {
    const w = world({
      a: { setName: 'rs', secondary: true, hosts: ['a:1', 'b:1'] },
      b: { setName: 'rs', isWritablePrimary: true },
    });
    const found = await discoverServer({ seeds: [host('a')], replicaSet: undefined, directConnection: false, ...w });
    expect(found.connection).toBe('b');
  });

  it('skips unreachable seeds and reports every failure when nothing is usable', async () => {
    const w = world({ b: { setName: 'rs', secondary: true } });
    const error = (await discoverServer({
      seeds: [host('a'), host('b')],
      replicaSet: 'rs',
      directConnection: false,
      ...w,
    }).catch((e: unknown) => e)) as ProxyError;
    expect(error.code).toBe(ErrorCodes.HostUnreachable);
    expect(error.message).toMatch(/a:1: a is down; b:1: is not primary and knows no primary/);
  });

  it('stops at once on an authentication failure', async () => {
    const w = world({
      a: new UpstreamError(ErrorCodes.AuthenticationFailed, 'bad password'),
      b: { isWritablePrimary: true },
    });
    await expect(
      discoverServer({ seeds: [host('a'), host('b')], replicaSet: undefined, directConnection: false, ...w }),
    ).rejects.toThrow(/bad password/);
    expect(w.opened).toEqual(['a']);
  });

  it('accepts a mongos, and a standalone only as the single seed', async () => {
    const mongos = world({ a: { standalone: true }, b: { msg: 'isdbgrid' } });
    expect(
      (
        await discoverServer({
          seeds: [host('a'), host('b')],
          replicaSet: undefined,
          directConnection: false,
          ...mongos,
        })
      ).connection,
    ).toBe('b');
    expect(mongos.discarded).toEqual(['a']);
    const single = world({ a: { isWritablePrimary: true } });
    expect(
      (await discoverServer({ seeds: [host('a')], replicaSet: undefined, directConnection: false, ...single }))
        .connection,
    ).toBe('a');
    const named = world({ a: { isWritablePrimary: true } });
    await expect(
      discoverServer({ seeds: [host('a')], replicaSet: 'rs', directConnection: false, ...named }),
    ).rejects.toThrow(/standalone/);
  });

  it('uses the seed as is with directConnection, even a secondary', async () => {
    const w = world({ a: { setName: 'rs', secondary: true, primary: 'b:1' } });
    const found = await discoverServer({ seeds: [host('a')], replicaSet: 'rs', directConnection: true, ...w });
    expect(found.connection).toBe('a');
    expect(w.opened).toEqual(['a']);
  });

  it('gives up after maxAttempts on hellos that keep pointing elsewhere', async () => {
    const hellos: Record<string, Document> = {};
    for (let i = 0; i < 50; i++) hellos[`h${i}`] = { setName: 'rs', secondary: true, primary: `h${i + 1}:1` };
    const w = world(hellos);
    await expect(
      discoverServer({ seeds: [host('h0')], replicaSet: 'rs', directConnection: false, maxAttempts: 5, ...w }),
    ).rejects.toThrow(/no reachable primary/);
    expect(w.opened).toHaveLength(5);
  });
});

describe('Upstream discovery over real sockets', () => {
  const servers: FakeUpstream[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.close();
  });

  it('connects to the seed, then pools connections to the primary it names', async () => {
    let primaryAddress = '';
    const primary = await startFakeUpstream(
      (m, peer) => {
        const hello = { ...FAKE_HELLO, setName: 'rs', isWritablePrimary: true, hosts: [primaryAddress] };
        void peer.reply(Object.keys(m.body)[0] === 'hello' ? hello : { ok: 1 }, m);
      },
      { answerHandshake: false },
    );
    primaryAddress = `127.0.0.1:${primary.port}`;
    const secondary = await startFakeUpstream(
      (m, peer) => {
        void peer.reply(
          { ...FAKE_HELLO, setName: 'rs', isWritablePrimary: false, secondary: true, primary: primaryAddress },
          m,
        );
      },
      { answerHandshake: false },
    );
    servers.push(primary, secondary);

    const upstream = new Upstream({
      uri: `mongodb://127.0.0.1:${secondary.port}/?replicaSet=rs`,
      connectTimeoutMS: 1_000,
      maxIdleConnections: 2,
      idleTimeoutMS: 10_000,
    });
    try {
      const info = await upstream.start();
      expect(info).toMatchObject({ kind: 'replicaSet', setName: 'rs', address: primaryAddress });
      expect(await upstream.start()).toBe(info); // idempotent
      const connection = await upstream.acquire();
      expect(connection.address).toBe(primaryAddress);
      upstream.release(connection);
      expect(secondary.peers).toHaveLength(1);
      expect(primary.peers).toHaveLength(1); // the discovery connection was kept and reused
    } finally {
      await upstream.close();
    }
    expect(() => upstream.info).not.toThrow();
  });

  it('lets start() be retried after a failure', async () => {
    let helloCount = 0;
    const s = await startFakeUpstream(
      (m, peer) => {
        helloCount++;
        void peer.reply(helloCount === 1 ? { ok: 0, code: 91, errmsg: 'shutting down' } : FAKE_HELLO, m);
      },
      { answerHandshake: false },
    );
    servers.push(s);
    const upstream = new Upstream({
      uri: `mongodb://127.0.0.1:${s.port}/`,
      connectTimeoutMS: 1_000,
      maxIdleConnections: 1,
      idleTimeoutMS: 0,
    });
    try {
      await expect(upstream.start()).rejects.toThrow(/shutting down/);
      expect((await upstream.start()).kind).toBe('standalone');
      const connection = await upstream.acquire();
      upstream.release(connection);
      expect(upstream.stats).toMatchObject({ idle: 1, created: 1 });
    } finally {
      await upstream.close();
    }
  });

  describe('catalogue 9: the capability probe at start decides what the proxy relies on', () => {
    /** `answer` gets each probe command (marked with PROBE_COMMENT) and replies, or not. */
    async function startWith(
      answer: (body: Document, reply: (doc: Document) => void) => void,
      connectTimeoutMS = 1_000,
    ) {
      const commands: string[] = [];
      const s = await startFakeUpstream(
        (m, peer) => {
          const name = Object.keys(m.body)[0]!;
          commands.push(name);
          if (name === 'hello') void peer.reply(FAKE_HELLO, m);
          else if (name === 'buildInfo') void peer.reply({ version: '8.0.4', ok: 1 }, m);
          else if (m.body.comment === PROBE_COMMENT) answer(m.body, (doc) => void peer.reply(doc, m));
          else void peer.reply({ ok: 1 }, m);
        },
        { answerHandshake: false, answerProbes: false },
      );
      servers.push(s);
      const upstream = new Upstream({
        uri: `mongodb://127.0.0.1:${s.port}/`,
        connectTimeoutMS,
        maxIdleConnections: 1,
        idleTimeoutMS: 0,
      });
      return { upstream, commands, server: s };
    }
    const refuse = (code: number, errmsg: string): Document => ({ ok: 0, code, errmsg });

    it('a server that accepts every probe has every capability; the read probes name a collection that does not exist, the write probes drop what they made, and the discovery connection is pooled', async () => {
      const bodies: Document[] = [];
      const { upstream, commands, server } = await startWith((body, reply) => {
        bodies.push(body);
        // The upsert probe reads back the document its $and derived (its _id is the collection's name).
        const stored =
          typeof body.find === 'string' && body.find.endsWith('_upsert') ? [{ _id: body.find, k: 1, v: 1 }] : [];
        reply({ cursor: { id: 0, ns: 'admin.x', firstBatch: stored }, values: [], ok: 1 });
      });
      try {
        const info = await upstream.start();
        expect(info.capabilities).toEqual({
          collation: true,
          distinctMaxTimeMS: true,
          bsonSize: true,
          transactions: true,
          upsertFieldsFromAnd: true,
          partialIndexes: true,
        });
        expect(upstream.capabilities).toEqual(info.capabilities);
        expect(commands).toEqual([
          'hello',
          'buildInfo',
          'find',
          'distinct',
          'aggregate',
          'find',
          'abortTransaction',
          'endSessions',
          // the write probes, in the proxy's own probe database, dropped again
          'update',
          'find',
          'createIndexes',
          'drop',
          'drop',
          'listCollections',
          'dropDatabase',
        ]);
        expect(info.buildInfo).toEqual({ version: '8.0.4', ok: 1 });
        expect(bodies[0]).toMatchObject({
          find: 'mongo_tenant_proxy_capability_probe',
          collation: { locale: 'simple' },
        });
        expect(bodies[1]).toMatchObject({ distinct: 'mongo_tenant_proxy_capability_probe', maxTimeMS: 60_000 });
        expect(bodies[3]).toMatchObject({ startTransaction: true, autocommit: false });
        const connection = await upstream.acquire();
        upstream.release(connection);
        expect(server.peers).toHaveLength(1);
        expect(upstream.stats).toMatchObject({ created: 1, idle: 1 });
      } finally {
        await upstream.close();
      }
    });

    it.each([
      ['DocumentDB', refuse(115, 'Find with collation is not currently supported.'), { ok: 1 }, { ok: 1 }],
      [
        'FerretDB v1',
        refuse(238, 'find: support for field "collation" is not implemented yet'),
        refuse(9, 'distinct: unknown field "maxTimeMS"'),
        refuse(238, 'Invalid $project :: caused by :: The operator $bsonSize is not implemented yet'),
      ],
    ])('a server that refuses them (%s) lacks them', async (_name, collation, distinct, aggregate) => {
      const { upstream } = await startWith((body, reply) => {
        if ('find' in body && body.startTransaction === true)
          reply({ cursor: { id: 0, ns: 'a.b', firstBatch: [] }, ok: 1 });
        else if ('find' in body) reply(collation);
        else if ('distinct' in body) reply(distinct);
        else if ('aggregate' in body) reply(aggregate);
        else if ('abortTransaction' in body) reply(refuse(59, "no such command: 'abortTransaction'"));
        else reply({ ok: 1 });
      });
      try {
        const { capabilities } = await upstream.start();
        expect(capabilities.collation).toBe(false);
        expect(capabilities.transactions).toBe(false);
        if (_name === 'FerretDB v1') expect(capabilities).toMatchObject({ distinctMaxTimeMS: false, bsonSize: false });
      } finally {
        await upstream.close();
      }
    });

    it('an inconclusive probe (not authorized) assumes the fallback: collation pinned, which fails closed, upsert fields derived by the proxy; the connection stays usable', async () => {
      const { upstream, server } = await startWith((_body, reply) => reply(refuse(13, 'not authorized on admin')));
      try {
        const { capabilities } = await upstream.start();
        expect(capabilities).toEqual(FALLBACK_CAPABILITIES);
        const connection = await upstream.acquire();
        upstream.release(connection);
        expect(server.peers).toHaveLength(1);
      } finally {
        await upstream.close();
      }
    });

    it('MongoDB refusing a transaction in admin (263) still says it has transactions; a standalone (20) has none', async () => {
      for (const [code, expected] of [
        [263, true],
        [20, false],
      ] as const) {
        const { upstream } = await startWith((body, reply) =>
          reply(
            'startTransaction' in body ? refuse(code, 'no') : { cursor: { id: 0, ns: 'a.b', firstBatch: [] }, ok: 1 },
          ),
        );
        try {
          expect((await upstream.start()).capabilities.transactions).toBe(expected);
        } finally {
          await upstream.close();
        }
      }
    });

    it('connectTimeoutMS bounds each probe command, not the whole probe: slow answers that add up past it still start', async () => {
      // Each answer takes 40% of the bound; the dozen probe commands take several bounds in all.
      const { upstream, commands } = await startWith((_body, reply) => {
        setTimeout(() => reply({ cursor: { id: 0, ns: 'a.b', firstBatch: [] }, ok: 1 }), 200);
      }, 500);
      try {
        const started = Date.now();
        expect((await upstream.start()).capabilities.collation).toBe(true);
        expect(Date.now() - started, 'the probe outlasted one whole bound').toBeGreaterThan(500);
        expect(commands.length).toBeGreaterThan(5);
      } finally {
        await upstream.close();
      }
    });

    it('a probe that never answers fails start() after connectTimeoutMS (like a silent hello), and start may be retried', async () => {
      let silent = true;
      const { upstream } = await startWith((_body, reply) => {
        if (!silent) reply({ cursor: { id: 0, ns: 'a.b', firstBatch: [] }, ok: 1 });
        // The timeout bounds each probe command (a dozen round trips with the write probes).
      }, 1_000);
      try {
        await expect(upstream.start()).rejects.toThrow(/capability probe .* timed out/);
        silent = false;
        expect((await upstream.start()).capabilities.collation).toBe(true);
      } finally {
        await upstream.close();
      }
    });
  });

  it('a buildInfo that never answers fails start() after connectTimeoutMS (like a silent hello)', async () => {
    const s = await startFakeUpstream(
      (m, peer) => {
        if (Object.keys(m.body)[0] === 'hello') void peer.reply(FAKE_HELLO, m);
      },
      { answerHandshake: false },
    );
    servers.push(s);
    const upstream = new Upstream({ uri: s.uri, connectTimeoutMS: 200, maxIdleConnections: 1, idleTimeoutMS: 0 });
    try {
      await expect(upstream.start()).rejects.toThrow(/buildInfo .* timed out/);
    } finally {
      await upstream.close();
    }
  });

  it('throws on info before start', () => {
    const upstream = new Upstream({
      uri: 'mongodb://h/',
      connectTimeoutMS: 1,
      maxIdleConnections: 0,
      idleTimeoutMS: 0,
    });
    expect(() => upstream.info).toThrow(/before start/);
    expect(
      () => new Upstream({ uri: 'mongodb://h/', connectTimeoutMS: 1, maxIdleConnections: -1, idleTimeoutMS: 0 }),
    ).toThrow(RangeError);
  });

  it('reports a bad URI as a ConfigError from start', async () => {
    const upstream = new Upstream({
      uri: 'mongodb://h/?w=majority',
      connectTimeoutMS: 1,
      maxIdleConnections: 0,
      idleTimeoutMS: 0,
    });
    await expect(upstream.start()).rejects.toThrow(/unsupported URI option "w"/);
  });
});
