// CPU per 1000-document insert batch in the proxy's own code: parse + engine + re-encode.
import { serialize, ObjectId } from 'bson';
const dist = process.argv[2];
const { decodeCommand } = await import(`${dist}/server/command-view.js`);
const { insert } = await import(`${dist}/rewrite/writes.js`);
const { encodeOpMsg } = await import(`${dist}/wire/op-msg.js`);
const form = process.argv[3] ?? 'body';
const withTenant = process.argv[4] !== 'stamp';
const docs = [];
for (let i = 0; i < 1000; i++) docs.push({ _id: new ObjectId(), ...(withTenant ? { tenantId: 'bench' } : {}), seq: i, name: `user-${i}`, email: `user-${i}@example.com`, score: i % 1000, active: i % 2 === 0, tags: ['alpha', 'beta', 'gamma'], createdAt: new Date() });
const frame = form === 'body'
  ? encodeOpMsg({ requestId: 1, responseTo: 0, body: serialize({ insert: 'c', documents: docs, ordered: true, lsid: { id: new ObjectId() }, $db: 'app' }) })
  : encodeOpMsg({ requestId: 1, responseTo: 0, body: serialize({ insert: 'c', ordered: true, $db: 'app' }), sequences: [{ identifier: 'documents', documents: docs.map((d) => Buffer.from(serialize(d))) }] });
const context = { tenant: 'bench', tenantValue: (() => { const b = serialize({ v: 'bench' }); return { type: b[4], value: b.subarray(7, b.length - 1) }; })(), field: 'tenantId',
  namespaces: { resolve: (db, coll) => ({ db, coll, model: 'shared-collection', access: 'scoped', tenantFiltered: true }), resolveDatabase: (db) => ({ db, model: 'shared-collection' }), toClient: (db, coll) => ({ db, coll }) },
  maxTimeMS: 60000, pinSimpleCollation: false };
function once() {
  const view = decodeCommand(Buffer.from(frame), { maxBsonDepth: 200 });
  const r = insert(view.engineInput(), context);
  const sequences = [...r.sequences].map(([identifier, documents]) => ({ identifier, documents: documents.map((d) => Buffer.from(d.buffer, d.byteOffset, d.byteLength)) }));
  return encodeOpMsg({ requestId: 2, responseTo: 0, body: r.body.toBytes(), sequences });
}
for (let i = 0; i < 200; i++) once();
const best = [];
for (let round = 0; round < 7; round++) {
  const c = process.cpuUsage(); for (let i = 0; i < 100; i++) once(); const u = process.cpuUsage(c);
  best.push((u.user + u.system) / 100);
}
best.sort((a, b) => a - b);
console.log(`${dist.includes('before') ? 'before' : 'after '} ${form} ${withTenant ? 'with tenant' : 'stamped'}: cpu µs/batch min ${best[0].toFixed(0)} median ${best[3].toFixed(0)}`);
