/**
 * src/wire/retained-shapes.ts: the hot short-lived classes keep one instance each for the life of
 * the process (so a memory-reducing collection does not free their maps and deoptimize the code
 * compiled against them; `node bench/gc-deopt.mjs` shows which functions it would), and the held
 * instances change nothing a validation, a reply scan or a tenant-field cut answers.
 */
import { describe, expect, it } from 'vitest';
import { hideTenantField } from '../../../src/rewrite/tenant-field.js';
import { BsonType, validateDocumentFacts } from '../../../src/wire/bson-scan.js';
import { serialize } from '../../../src/wire/bson.js';
import { scanReply } from '../../../src/wire/reply-scan.js';
import { retainShape, retainedShapes } from '../../../src/wire/retained-shapes.js';
import { BsonValidationError } from '../../../src/errors.js';

describe('retained shapes', () => {
  it('holds one instance per hot class once the modules are loaded, and returns what it holds', () => {
    // bson-scan (DocumentValidation with its OpenDocuments), reply-scan (Walk), tenant-field (TopLevelCuts)
    expect(typeof scanReply).toBe('function'); // the module is loaded
    expect(retainedShapes()).toBeGreaterThanOrEqual(3);
    const before = retainedShapes();
    const object = { a: 1 };
    expect(retainShape(object)).toBe(object);
    expect(retainedShapes()).toBe(before + 1);
  });

  it('leaves validation as it was: the same document, the same duplicate and depth refusals', () => {
    const doc = Buffer.from(serialize({ a: { b: 1 }, c: [1, 2] }));
    expect(validateDocumentFacts(doc, 0, { maxDepth: 200, rejectDuplicateKeys: true })).toBe(0);
    // {a: {b: 1}} with the inner document's name repeated at the top: a duplicate key.
    const inner = [12, 0, 0, 0, BsonType.int32, 0x62, 0, 1, 0, 0, 0, 0];
    const dup = Buffer.from([
      35,
      0,
      0,
      0,
      BsonType.document,
      0x61,
      0,
      ...inner,
      BsonType.document,
      0x61,
      0,
      ...inner,
      0,
    ]);
    expect(() => validateDocumentFacts(dup, 0, { maxDepth: 200, rejectDuplicateKeys: true })).toThrow(
      BsonValidationError,
    );
    expect(() => validateDocumentFacts(doc, 0, { maxDepth: 0, rejectDuplicateKeys: true })).toThrow(
      BsonValidationError,
    );
  });

  it('leaves the tenant-field cut as it was', () => {
    const body = serialize({ cursor: { nextBatch: [{ _id: 1, tenantId: 't', n: 2 }], id: 0, ns: 'a.b' }, ok: 1 });
    const cut = hideTenantField(body, 'tenantId', { in: 'cursor' });
    expect(cut).toBeDefined();
    expect(Buffer.from(cut!)).toEqual(
      Buffer.from(serialize({ cursor: { nextBatch: [{ _id: 1, n: 2 }], id: 0, ns: 'a.b' }, ok: 1 })),
    );
  });
});
