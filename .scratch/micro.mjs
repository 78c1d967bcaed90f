import { serialize, ObjectId } from 'bson';
import { scanStoredDocument, StoredDocumentScan } from '/work/wt/fuse/dist/policy/stored-document.js';
import { validateDocument } from '/work/wt/fuse/dist/wire/bson-scan.js';
const docs = [];
for (let i = 0; i < 1000; i++) docs.push(Buffer.from(serialize({ _id: new ObjectId(), tenantId: 'bench', seq: i, name: `user-${i}`, email: `user-${i}@example.com`, score: i % 1000, active: i % 2 === 0, tags: ['alpha','beta','gamma'], createdAt: new Date() })));
const out = new StoredDocumentScan(); const f = Buffer.from('tenantId');
for (const [name, fn] of [['scan', (d) => scanStoredDocument(d, f, out)], ['top', (d) => scanStoredDocument(d, f, out, true)], ['validate', (d) => validateDocument(d, 0, { maxDepth: 200, rejectDuplicateKeys: true })]]) {
  for (let r = 0; r < 5; r++) { const t = process.hrtime.bigint(); for (let k = 0; k < 100; k++) for (const d of docs) fn(d); const ns = Number(process.hrtime.bigint() - t) / 100000; if (r === 4) console.log(name, ns.toFixed(0), 'ns/doc', out.clean); }
}
