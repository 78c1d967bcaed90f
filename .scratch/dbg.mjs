import { serialize, ObjectId } from 'bson';
const { decodeCommand } = await import('/work/wt/fuse/dist/server/command-view.js');
const { encodeOpMsg } = await import('/work/wt/fuse/dist/wire/op-msg.js');
const docs = [{ _id: new ObjectId(), tenantId: 'bench', tags: ['a'] }];
const frame = encodeOpMsg({ requestId: 1, responseTo: 0, body: serialize({ insert: 'c', ordered: true, $db: 'app' }), sequences: [{ identifier: 'documents', documents: docs.map((d) => Buffer.from(serialize(d))) }] });
const v = decodeCommand(frame, { maxBsonDepth: 200 }); const i = v.engineInput(); console.log(i.validated, i.facts);
