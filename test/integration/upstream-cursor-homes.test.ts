/**
 * Issue 15, cursors and shared upstream connections: FerretDB v1 ties a cursor's life to the
 * upstream connection that opened it (closing that connection closes every cursor opened on it,
 * although a getMore works from any connection). The proxy's pool shares connections between
 * tenants, so closing one on purpose (no idle room, idle timeout, lifetime, another tenant's client
 * leaving in the middle of a command) would kill the cursors of whoever opened them there. The
 * proxy keeps such a connection open while it is the home of open cursors. On servers that do
 * not tie cursors to connections (MongoDB) the same steps pass trivially.
 */
import type { Document } from 'mongodb';
import { describe, expect } from 'vitest';
import { startFaultProxy, targetFromUri } from '../helpers/fault-proxy.js';
import { it } from '../helpers/fixtures.js';
import { metricValue } from '../helpers/metrics.js';
import { opMsg } from '../helpers/raw-client.js';
import { startTenantProxy } from '../helpers/tenants.js';
import { uniqueDbName, upstreamUri } from '../helpers/upstream.js';

const KiB = 1024;
const MiB = 1024 * KiB;
import { sleep, until } from '../helpers/wait.js';

describe('a cursor outlives what else its upstream connection is used for', () => {
  it('upstream.maxIdleConnections 0: the connection a cursor was opened on is not closed when it goes back', async ({
    defer,
  }) => {
    const tenants = await startTenantProxy(['quiet'], { upstream: { maxIdleConnections: 0 } });
    defer(() => tenants.stop());
    const db = uniqueDbName('homes_idle');
    const items = tenants.clientFor('quiet').db(db).collection<Document>('c');
    await items.insertMany(Array.from({ length: 10 }, (_, i) => ({ i })));
    // find, then getMores on connections checked out again after the find's went back.
    expect(await items.find({}, { batchSize: 2 }).toArray()).toHaveLength(10);
    // Once the cursor is exhausted its connection is closed as configured.
    await until(async () => (await metricValue(tenants.proxy.proxy, 'upstream_connections', { state: 'idle' })) === 0, {
      message: 'the idle connection was not closed once its cursor was exhausted',
    });
  });

  it("another tenant's connection shed while its command is upstream does not kill the cursors opened on that connection", async ({
    defer,
  }) => {
    // One upstream connection for both tenants, behind a delay so the noisy command is still
    // upstream when the byte budget sheds its client connection (the proxy closes it itself, and
    // used to close the upstream connection the command was on).
    const faults = await startFaultProxy({ target: targetFromUri(upstreamUri()) });
    defer(() => faults.close());
    const tenants = await startTenantProxy(['quiet', 'noisy'], {
      upstream: { uri: faults.uriFor(upstreamUri()), maxPoolSize: 1 },
      limits: { maxBufferedBytes: MiB },
    });
    defer(() => tenants.stop());
    const db = uniqueDbName('homes_shed');
    const quiet = tenants.clientFor('quiet').db(db);
    const items = quiet.collection<Document>('c');
    await items.insertMany(Array.from({ length: 10 }, (_, i) => ({ i })));
    const noisyItems = tenants.clientFor('noisy').db(db).collection('n');
    await noisyItems.insertMany(Array.from({ length: 10 }, (_, i) => ({ i })));
    // Its view check is answered now (cached): the big find below goes upstream at once.
    await noisyItems.findOne({});
    const cursor = items.find({}, { batchSize: 2 });
    expect(await cursor.next()).toMatchObject({ i: expect.any(Number) });

    faults.setLatency(300);
    const noisy = await tenants.rawFor('noisy');
    // A 300 KiB find, held twice (received, rewritten) while upstream: over its share of the
    // 1 MiB budget once the quiet tenant needs some. It opens a cursor nobody will read.
    noisy.write(opMsg({ find: 'n', filter: { pad: { $ne: 'z'.repeat(300 * KiB) } }, batchSize: 1, $db: db }).bytes);
    await sleep(300);
    // The quiet tenant needs memory too: the noisy connection, over its share, is shed.
    await quiet.collection('big').insertOne({ pad: 'q'.repeat(450 * KiB) });
    expect(await noisy.readFrame(5_000).catch(() => null)).toBeNull();
    faults.setLatency(0);

    const rest: Document[] = [];
    for await (const doc of cursor) rest.push(doc);
    expect(rest).toHaveLength(9);
    expect(await metricValue(tenants.proxy.proxy, 'client_connections_shed_total', { reason: 'buffer_budget' })).toBe(
      1,
    );
  });
});
