// The capability probe runs again when another server becomes primary: a replica set in the
// middle of an upgrade may mix servers that apply collations and servers that refuse them, or
// servers that derive an upsert's fields through $and and servers that do not. Every probe,
// the write probes (upsert, partial index) included, follows the new primary.
import { afterEach, describe, expect, it } from 'vitest';
import { PROBE_COMMENT, type UpstreamCapabilities } from '../../../src/upstream/capabilities.js';
import { Upstream } from '../../../src/upstream/upstream.js';
import {
  FAKE_CAPABILITIES,
  FAKE_HELLO,
  type FakeHandler,
  type FakeUpstream,
  probeReply,
  startFakeUpstream,
} from '../../helpers/fake-upstream.js';

const servers: FakeUpstream[] = [];
const upstreams: Upstream[] = [];

afterEach(async () => {
  for (const upstream of upstreams.splice(0)) await upstream.close();
  for (const server of servers.splice(0)) await server.close();
});

describe('capabilities after a failover', () => {
  it('are probed again on the new primary, and follow it', async () => {
    let primaryIndex = 0;
    const member =
      (index: number, capabilities: UpstreamCapabilities): FakeHandler =>
      (m, peer) => {
        const hosts = servers.map((s) => `127.0.0.1:${s.port}`);
        const name = Object.keys(m.body)[0] ?? '';
        if (name === 'hello' || name === 'isMaster') {
          const primary = index === primaryIndex;
          void peer.reply(
            {
              ...FAKE_HELLO,
              setName: 'rs',
              hosts,
              setVersion: 1,
              isWritablePrimary: primary,
              secondary: !primary,
            },
            m,
          );
        } else if (m.body.comment === PROBE_COMMENT) {
          void peer.reply(probeReply(m.body, capabilities), m);
        } else {
          void peer.reply({ ok: 1 }, m);
        }
      };
    servers.push(
      await startFakeUpstream(member(0, FAKE_CAPABILITIES), { answerHandshake: false, answerProbes: false }),
    );
    servers.push(
      await startFakeUpstream(
        member(1, {
          ...FAKE_CAPABILITIES,
          collation: false,
          transactions: true,
          upsertFieldsFromAnd: false,
          partialIndexes: false,
        }),
        {
          answerHandshake: false,
          answerProbes: false,
        },
      ),
    );
    const upstream = new Upstream({
      uri: `mongodb://127.0.0.1:${servers[0]!.port}/?replicaSet=rs`,
      connectTimeoutMS: 2_000,
      maxIdleConnections: 4,
      idleTimeoutMS: 60_000,
      heartbeatFrequencyMS: 100,
    });
    upstreams.push(upstream);
    const info = await upstream.start();
    expect(info.capabilities).toMatchObject({ collation: true, upsertFieldsFromAnd: true, partialIndexes: true });
    const second = `127.0.0.1:${servers[1]!.port}`;
    await expect.poll(() => upstream.topology[second]).toBe('secondary');

    primaryIndex = 1; // an election: the second member takes the writes
    await expect.poll(() => upstream.topology[second], { timeout: 10_000 }).toBe('primary');
    await expect.poll(() => upstream.capabilities.collation, { timeout: 10_000 }).toBe(false);
    expect(upstream.capabilities).toMatchObject({
      transactions: true,
      upsertFieldsFromAnd: false,
      partialIndexes: false,
    });
    // The start probe's answer stays what the first server said.
    expect(upstream.info.capabilities.collation).toBe(true);
  });
});
