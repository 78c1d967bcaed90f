/**
 * explain replies (catalogue 21, 59) redacted against MongoDB's documented shapes: classic
 * find with executionStats and allPlansExecution, the slot-based engine, aggregate stages.
 */
import { describe, expect, it } from 'vitest';
import { redactExplain } from '../../../src/rewrite/explain.js';
import type { NamespaceResolver } from '../../../src/policy/types.js';
import { Long, deserialize, serialize, type Document } from '../../../src/wire/bson.js';

/** collection-prefix: the tenant's physical `acme.orders` is its `orders`; nothing else maps back. */
const resolver = {
  toClient: (db: string, coll?: string) =>
    coll?.startsWith('acme.') ? { db, coll: coll.slice('acme.'.length) } : undefined,
} as unknown as NamespaceResolver;

const OTHER_INDEX = 'mtp_t_0123456789abcdef01234567';
const SHARED_INDEX = 'mtp_s_89abcdef0123456789abcdef';

function ixscan(indexName: string, extra: Document = {}): Document {
  return {
    stage: 'IXSCAN',
    planNodeId: 1,
    keyPattern: { tenantId: 1, secretField: 1 },
    indexName,
    isMultiKey: false,
    multiKeyPaths: { tenantId: [], secretField: [] },
    direction: 'forward',
    indexBounds: { tenantId: ['["acme", "acme"]'], secretField: ['[MinKey, MaxKey]'] },
    indexVersion: 2,
    ...extra,
  };
}

const classic: Document = {
  explainVersion: '1',
  queryPlanner: {
    namespace: 'app.acme.orders',
    indexFilterSet: false,
    parsedQuery: { $and: [{ tenantId: { $eq: 'acme' } }, { qty: { $gt: 1 } }] },
    maxIndexedOrSolutionsReached: false,
    winningPlan: { stage: 'LIMIT', limitAmount: 5, inputStage: { stage: 'FETCH', inputStage: ixscan('tenantId_1') } },
    rejectedPlans: [{ stage: 'FETCH', inputStage: ixscan(OTHER_INDEX) }],
  },
  executionStats: {
    executionSuccess: true,
    nReturned: 2,
    executionTimeMillis: 3,
    totalKeysExamined: 900,
    totalDocsExamined: 900,
    executionStages: {
      stage: 'LIMIT',
      nReturned: 2,
      executionTimeMillisEstimate: 1,
      works: 901,
      advanced: 2,
      needTime: 898,
      isEOF: 1,
      limitAmount: 5,
      inputStage: {
        stage: 'FETCH',
        filter: { qty: { $gt: 1 } },
        docsExamined: 900,
        alreadyHasObj: 0,
        inputStage: ixscan('tenantId_1', { keysExamined: 900, seeks: 1, dupsTested: 0, nReturned: 900 }),
      },
    },
    allPlansExecution: [
      {
        nReturned: 2,
        totalKeysExamined: 101,
        executionStages: { stage: 'FETCH', docsExamined: 101, inputStage: ixscan(OTHER_INDEX, { keysExamined: 101 }) },
      },
    ],
  },
  command: { find: 'acme.orders', filter: { $and: [{ tenantId: { $eq: 'acme' } }, { qty: { $gt: 1 } }] }, $db: 'app' },
  serverInfo: { host: 'mongo-0.internal', port: 27017, version: '7.0.2', gitVersion: 'abc' },
  serverParameters: { internalQueryFacetBufferSizeBytes: 104857600 },
  ok: 1,
  $clusterTime: { clusterTime: new Long(1), signature: { keyId: new Long(0) } },
  operationTime: new Long(1),
};

function redact(doc: Document, withholdFigures = true): Document {
  const out = redactExplain(serialize(doc), { withholdFigures }, resolver);
  expect(out).toBeDefined();
  return deserialize(out!);
}

describe('redactExplain (MongoDB shapes)', () => {
  it('withholds every figure of executionStats, stage trees and allPlansExecution, and says so', () => {
    const out = redact(classic);
    const stats = out['executionStats'];
    expect(stats).toEqual({
      executionSuccess: true,
      nReturned: 2,
      executionStages: {
        stage: 'LIMIT',
        limitAmount: 5,
        inputStage: {
          stage: 'FETCH',
          filter: { qty: { $gt: 1 } },
          inputStage: ixscan('tenantId_1'),
        },
      },
      allPlansExecution: [
        {
          executionStages: {
            stage: 'FETCH',
            inputStage: {
              stage: 'IXSCAN',
              planNodeId: 1,
              indexName: '<redacted>',
              isMultiKey: false,
              direction: 'forward',
              indexVersion: 2,
            },
          },
        },
      ],
    });
    expect(out['mtpWithheld']).toEqual({
      reason: expect.stringContaining("other tenants' included"),
      fields: [
        'advanced',
        'alreadyHasObj',
        'docsExamined',
        'dupsTested',
        'executionTimeMillis',
        'executionTimeMillisEstimate',
        'isEOF',
        'keysExamined',
        'nReturned',
        'needTime',
        'seeks',
        'totalDocsExamined',
        'totalKeysExamined',
        'works',
      ],
    });
    // Placed before ok, as a server field would be.
    expect(Object.keys(out).slice(-4)).toEqual(['mtpWithheld', 'ok', '$clusterTime', 'operationTime']);
  });

  it('redacts tenancy index names with their keys, maps or redacts namespaces, drops the upstream host', () => {
    const out = redact(classic);
    const planner = out['queryPlanner'];
    expect(planner.namespace).toBe('app.orders');
    expect(planner.parsedQuery).toEqual(classic['queryPlanner'].parsedQuery);
    expect(planner.winningPlan.inputStage.inputStage).toEqual(ixscan('tenantId_1'));
    expect(planner.rejectedPlans[0].inputStage).toEqual({
      stage: 'IXSCAN',
      planNodeId: 1,
      indexName: '<redacted>',
      isMultiKey: false,
      direction: 'forward',
      indexVersion: 2,
    });
    expect(out['serverInfo']).toEqual({ version: '7.0.2', gitVersion: 'abc' });
    expect(out['serverParameters']).toEqual(classic['serverParameters']);
    expect(out['command']).toEqual(classic['command']);
    const text = JSON.stringify(out);
    for (const secret of [OTHER_INDEX, 'mongo-0.internal', '900', '101']) expect(text).not.toContain(secret);
    expect(redact({ queryPlanner: { namespace: 'app.globex.orders' }, ok: 1 })['queryPlanner'].namespace).toBe(
      '<redacted>',
    );
  });

  it('keeps figures where the data is private (withholdFigures false), still redacting names', () => {
    const out = redact(classic, false);
    expect(out['executionStats'].totalDocsExamined).toBe(900);
    expect(out['mtpWithheld']).toBeUndefined();
    expect(out['serverInfo'].host).toBeUndefined();
  });

  it('slot-based engine: index names inside the plan text, figures of SBE stages', () => {
    const sbe = {
      explainVersion: '2',
      queryPlanner: {
        namespace: 'app.acme.orders',
        winningPlan: {
          queryPlan: { stage: 'FETCH', planNodeId: 2, inputStage: ixscan(SHARED_INDEX) },
          slotBasedPlan: { slots: '$$RESULT=s11', stages: `[2] nlj ... [1] ixseek "${SHARED_INDEX}" ...` },
        },
        rejectedPlans: [],
      },
      executionStats: {
        nReturned: 1,
        totalKeysExamined: 40,
        executionStages: {
          stage: 'nlj',
          planNodeId: 2,
          opens: 1,
          closes: 1,
          numReads: 40,
          innerStage: { stage: 'seek', seeks: 40 },
        },
      },
      ok: 1,
    };
    const out = redact(sbe);
    expect(out['queryPlanner'].winningPlan.slotBasedPlan.stages).toBe('[2] nlj ... [1] ixseek "<redacted>" ...');
    expect(out['queryPlanner'].winningPlan.queryPlan.inputStage.keyPattern).toBeUndefined();
    expect(out['executionStats']).toEqual({
      nReturned: 1,
      executionStages: { stage: 'nlj', planNodeId: 2, innerStage: { stage: 'seek' } },
    });
  });

  it("aggregate: $cursor's query plan and statistics, each stage's own figures; stage specifications kept", () => {
    const agg = {
      explainVersion: '1',
      stages: [
        {
          $cursor: {
            queryPlanner: { namespace: 'app.acme.orders', winningPlan: { stage: 'COLLSCAN', direction: 'forward' } },
            executionStats: {
              nReturned: 3,
              totalDocsExamined: 5000,
              executionStages: { stage: 'COLLSCAN', docsExamined: 5000 },
            },
          },
          nReturned: 3,
          executionTimeMillisEstimate: 2,
        },
        {
          $group: { _id: '$k', n: { $sum: 1 } },
          maxAccumulatorMemoryUsageBytes: { n: 80 },
          totalOutputDataSizeBytes: 300,
          usedDisk: false,
          nReturned: 2,
        },
        { $limit: 10, nReturned: 2 },
        {
          $lookup: { from: 'acme.items', as: 'j', localField: 'a', foreignField: 'b' },
          totalDocsExamined: 77,
          collectionScans: 1,
          indexesUsed: [OTHER_INDEX],
          nReturned: 2,
        },
      ],
      ok: 1,
    };
    const out = redact(agg);
    expect(out['stages']).toEqual([
      {
        $cursor: {
          queryPlanner: { namespace: 'app.orders', winningPlan: { stage: 'COLLSCAN', direction: 'forward' } },
          executionStats: { nReturned: 3, executionStages: { stage: 'COLLSCAN' } },
        },
      },
      { $group: { _id: '$k', n: { $sum: 1 } }, maxAccumulatorMemoryUsageBytes: {}, usedDisk: false },
      { $limit: 10 },
      { $lookup: agg.stages[3]!.$lookup, indexesUsed: ['<redacted>'] },
    ]);
  });

  it('leaves error replies and replies with nothing to redact alone', () => {
    expect(
      redactExplain(serialize({ ok: 0, errmsg: 'x', code: 2 }), { withholdFigures: true }, resolver),
    ).toBeUndefined();
    expect(
      redactExplain(serialize({ queryPlanner: { namespace: 'app.x' }, ok: 1 }), { withholdFigures: true }, {
        toClient: (db: string, coll?: string) => ({ db, coll }),
      } as unknown as NamespaceResolver),
    ).toBeUndefined();
  });

  it("FerretDB v1's shape: the plan and pushdown flags kept, the upstream host dropped", () => {
    const ferret = {
      queryPlanner: { Plan: ['id=2 parent=0 notused=0 detail=SCAN x_fd0c5087'] },
      explainVersion: '1',
      command: { find: 'x', filter: { tenantId: 'acme' }, $db: 'app' },
      serverInfo: { host: 'vm', version: '7.0.42', gitVersion: 'unknown', ferretdbVersion: 'v1.24.2' },
      filterPushdown: false,
      ok: 1,
    };
    const out = redact(ferret);
    expect(out).toEqual({
      ...ferret,
      serverInfo: { version: '7.0.42', gitVersion: 'unknown', ferretdbVersion: 'v1.24.2' },
    });
  });

  it("DocumentDB's shape: planner estimates sized by the whole collection are withheld at queryPlanner too", () => {
    const documentdb = {
      queryPlanner: {
        namespace: 'app.items',
        winningPlan: {
          stage: 'FETCH',
          runtimeFilterSet: [{ $eq: { tenantId: 'acme' } }],
          estimatedTotalKeysExamined: 2,
          inputStage: { stage: 'COLLSCAN', indexName: '_id_', estimatedTotalKeysExamined: 4 },
        },
      },
      explainVersion: 2,
      command: "db.runCommand({explain:{ 'find': 'items' }})",
      ok: 1,
    };
    const out = redact(documentdb);
    expect(JSON.stringify(out.queryPlanner)).not.toContain('estimated');
    expect(out.queryPlanner.winningPlan.inputStage).toEqual({ stage: 'COLLSCAN', indexName: '_id_' });
    expect(out.mtpWithheld.fields).toEqual(['estimatedTotalKeysExamined']);
    // On private data (withholdFigures false) the estimates are the tenant's own: kept.
    expect(redact(documentdb, false).queryPlanner.winningPlan.estimatedTotalKeysExamined).toBe(2);
  });

  it("catalogue 21, 59: the tenant's own tenancy indexes show under its names, keys without the tenant field; any other stays redacted, at every verbosity", () => {
    const OWN_TENANT = 'mtp_t_aaaaaaaaaaaaaaaaaaaaaaaa';
    const OWN_SHARED = 'mtp_s_bbbbbbbbbbbbbbbbbbbbbbbb';
    const own = {
      names: new Map([
        [OWN_TENANT, 'email_unique'],
        [OWN_SHARED, 'by_secret'],
      ]),
      field: 'tenantId',
    };
    const reply = {
      queryPlanner: {
        namespace: 'app.acme.orders',
        winningPlan: {
          queryPlan: { stage: 'FETCH', inputStage: ixscan(OWN_SHARED) },
          slotBasedPlan: { stages: `[1] ixseek "${OWN_SHARED}" ... "${OTHER_INDEX}"` },
        },
        rejectedPlans: [{ stage: 'FETCH', inputStage: ixscan(OWN_TENANT) }, ixscan(OTHER_INDEX)],
      },
      executionStats: { nReturned: 1, executionStages: { stage: 'FETCH', inputStage: ixscan(OWN_TENANT) } },
      allPlansExecution: [{ executionStages: ixscan(OTHER_INDEX) }],
      stages: [{ $cursor: {} }, { $lookup: {}, indexesUsed: [OWN_SHARED, OTHER_INDEX] }],
      ok: 1,
    };
    for (const withholdFigures of [true, false]) {
      const out = deserialize(redactExplain(serialize(reply), { withholdFigures }, resolver, own)!);
      const mapped = out['queryPlanner'].winningPlan.queryPlan.inputStage;
      expect(mapped.indexName).toBe('by_secret');
      expect(mapped.keyPattern).toEqual({ secretField: 1 });
      expect(mapped.indexBounds).toEqual({ secretField: ['[MinKey, MaxKey]'] });
      expect(mapped.multiKeyPaths).toEqual({ secretField: [] });
      expect(out['queryPlanner'].winningPlan.slotBasedPlan.stages).toBe('[1] ixseek "by_secret" ... "<redacted>"');
      expect(out['queryPlanner'].rejectedPlans[0].inputStage.indexName).toBe('email_unique');
      expect(out['queryPlanner'].rejectedPlans[1].indexName).toBe('<redacted>');
      expect(out['queryPlanner'].rejectedPlans[1].keyPattern).toBeUndefined();
      expect(out['executionStats'].executionStages.inputStage.indexName).toBe('email_unique');
      expect(out['stages'][1].indexesUsed).toEqual(['by_secret', '<redacted>']);
      expect(JSON.stringify(out)).not.toMatch(/mtp_[st]_/);
    }
  });

  describe('issue 13: indexes of the other collections a pipeline reads ($lookup, $graphLookup, $unionWith)', () => {
    // Shared-collection model: physical names are the client's.
    const shared = { toClient: (db: string, coll?: string) => ({ db, coll }) } as unknown as NamespaceResolver;
    const ORDERS_OWN = 'mtp_t_111111111111111111111111';
    const ITEMS_OWN = 'mtp_t_222222222222222222222222';
    const ITEMS_OTHER = 'mtp_t_333333333333333333333333';
    // One physical name in two collections (mtp_s_ hashes key and options only).
    const SAME = 'mtp_s_444444444444444444444444';
    const indexes = (namespaces: Record<string, Record<string, string | null>>) => ({
      field: 'tenantId',
      indexes: {
        db: 'app',
        explained: 'app.orders',
        namespaces: new Map(
          Object.entries(namespaces).map(([ns, names]) => [ns, new Map(Object.entries(names))] as const),
        ),
      },
    });
    const run = (reply: Document, own: ReturnType<typeof indexes>, withholdFigures = true): Document =>
      deserialize(redactExplain(serialize(reply), { withholdFigures }, shared, own)!);

    it("catalogue 21: MongoDB: a $lookup's indexesUsed, an EQ_LOOKUP's index and a $unionWith sub-plan map through the foreign collection's names", () => {
      const own = indexes({
        'app.orders': { [ORDERS_OWN]: 'by_customer', [SAME]: null },
        'app.items': { [ITEMS_OWN]: 'by_sku', [ITEMS_OTHER]: null, [SAME]: 'items_same' },
      });
      const reply = {
        stages: [
          {
            $cursor: {
              queryPlanner: {
                namespace: 'app.orders',
                winningPlan: {
                  stage: 'EQ_LOOKUP',
                  foreignCollection: 'app.items',
                  strategy: 'IndexedLoopJoin',
                  indexName: ITEMS_OWN,
                  indexKeyPattern: { tenantId: 1, sku: 1 },
                  inputStage: ixscan(SAME),
                },
                rejectedPlans: [
                  {
                    stage: 'EQ_LOOKUP',
                    foreignCollection: 'app.items',
                    indexName: ITEMS_OTHER,
                    indexKeyPattern: { tenantId: 1, secret: 1 },
                  },
                ],
              },
            },
          },
          {
            $lookup: { from: 'items', as: 'j', localField: 'a', foreignField: 'b' },
            indexesUsed: [ITEMS_OWN, SAME, ITEMS_OTHER],
          },
          {
            $unionWith: {
              coll: 'items',
              pipeline: [
                {
                  $cursor: {
                    queryPlanner: {
                      namespace: 'app.items',
                      winningPlan: { stage: 'FETCH', inputStage: ixscan(SAME) },
                      rejectedPlans: [ixscan(ORDERS_OWN)],
                    },
                    executionStats: { nReturned: 1, totalDocsExamined: 900 },
                  },
                  nReturned: 1,
                  executionTimeMillisEstimate: 3,
                },
                { $group: { _id: '$k' }, nReturned: 1, totalOutputDataSizeBytes: 80 },
              ],
            },
          },
        ],
        ok: 1,
      };
      const out = run(reply, own);
      const plan = out['stages'][0].$cursor.queryPlanner;
      // The EQ_LOOKUP's own index is on items; its input stage (SAME on orders) is another tenant's there.
      expect(plan.winningPlan).toMatchObject({ indexName: 'by_sku', indexKeyPattern: { sku: 1 } });
      expect(plan.winningPlan.inputStage.indexName).toBe('<redacted>');
      expect(plan.winningPlan.inputStage.keyPattern).toBeUndefined();
      expect(plan.rejectedPlans[0].indexName).toBe('<redacted>');
      expect(plan.rejectedPlans[0].indexKeyPattern).toBeUndefined();
      expect(out['stages'][1].indexesUsed).toEqual(['by_sku', 'items_same', '<redacted>']);
      const union = out['stages'][2].$unionWith.pipeline[0].$cursor;
      expect(union.queryPlanner.winningPlan.inputStage).toMatchObject({
        indexName: 'items_same',
        keyPattern: { secretField: 1 },
      });
      // The tenant's orders index named inside the items plan is not one of items: redacted.
      expect(union.queryPlanner.rejectedPlans[0].indexName).toBe('<redacted>');
      expect(union.executionStats).toEqual({ nReturned: 1 });
      // The sub-pipeline's stage figures are withheld like the outer stages'.
      expect(out['stages'][2].$unionWith.pipeline[1]).toEqual({ $group: { _id: '$k' } });
      expect(Object.keys(out['stages'][2].$unionWith.pipeline[0])).toEqual(['$cursor']);
      expect(JSON.stringify(out)).not.toMatch(/mtp_[st]_/);
    });

    it("catalogue 21, 59: DocumentDB: plans name no namespace; a name maps only when every collection read that has it has it as the tenant's, under one name; the $lookup stage's figures are withheld", () => {
      const cursor = (indexName: string) => ({
        $cursor: {
          queryPlanner: { winningPlan: { stage: 'IXSCAN', indexName, estimatedTotalKeysExamined: 4 } },
          executionStats: { nReturned: 3, totalDocsExamined: 3, executionStages: { stage: 'IXSCAN', indexName } },
        },
      });
      const reply = {
        stages: [
          cursor(ORDERS_OWN),
          cursor(SAME),
          cursor(ITEMS_OTHER),
          {
            $lookup: {
              queryPlanner: { winningPlan: { stage: 'LOOKUP', inputStage: { stage: 'IXSCAN', indexName: ITEMS_OWN } } },
              executionStats: {
                nReturned: 3,
                totalDocsExamined: 3000,
                executionStages: { stage: 'LOOKUP', totalKeysExamined: 9 },
              },
            },
          },
        ],
        explainVersion: 2,
        ok: 1,
      };
      const names = (out: Document) =>
        [0, 1, 2].map((n) => out['stages'][n].$cursor.queryPlanner.winningPlan.indexName as string);
      // SAME is the tenant's in both collections under one name: mapped.
      const both = run(
        reply,
        indexes({
          'app.orders': { [ORDERS_OWN]: 'by_customer', [SAME]: 'same' },
          'app.items': { [ITEMS_OWN]: 'by_sku', [ITEMS_OTHER]: null, [SAME]: 'same' },
        }),
      );
      expect(names(both)).toEqual(['by_customer', 'same', '<redacted>']);
      expect(both['stages'][3].$lookup.queryPlanner.winningPlan.inputStage.indexName).toBe('by_sku');
      expect(both['stages'][3].$lookup.executionStats).toEqual({ nReturned: 3, executionStages: { stage: 'LOOKUP' } });
      expect(both['stages'][0].$cursor.executionStats).toEqual({
        nReturned: 3,
        executionStages: { stage: 'IXSCAN', indexName: 'by_customer' },
      });
      expect(both['mtpWithheld'].fields).toEqual([
        'estimatedTotalKeysExamined',
        'totalDocsExamined',
        'totalKeysExamined',
      ]);
      // SAME is another tenant's in items (or the tenant's under two names): which one the plan uses is unknown, redacted.
      for (const itemsSame of [null, 'other_name']) {
        const out = run(
          reply,
          indexes({
            'app.orders': { [ORDERS_OWN]: 'by_customer', [SAME]: 'same' },
            'app.items': { [ITEMS_OWN]: 'by_sku', [SAME]: itemsSame },
          }),
        );
        expect(names(out)).toEqual(['by_customer', '<redacted>', '<redacted>']);
        expect(JSON.stringify(out)).not.toMatch(/mtp_[st]_|other_name/);
      }
    });

    it('catalogue 21: a collection the tenant owns no index in keeps every tenancy index redacted; only the explained collection read: its names apply everywhere', () => {
      const reply = {
        stages: [cursorOf(SAME), { $lookup: { from: 'items' }, indexesUsed: [SAME, ITEMS_OTHER] }],
        ok: 1,
      };
      const out = run(
        reply,
        indexes({ 'app.orders': { [SAME]: 'mine' }, 'app.items': { [SAME]: null, [ITEMS_OTHER]: null } }),
      );
      expect(out['stages'][0].$cursor.queryPlanner.winningPlan.indexName).toBe('mine');
      expect(out['stages'][1].indexesUsed).toEqual(['<redacted>', '<redacted>']);
      const alone = run({ stages: [cursorOf(SAME)], ok: 1 }, indexes({ 'app.orders': { [SAME]: 'mine' } }));
      expect(alone['stages'][0].$cursor.queryPlanner.winningPlan.indexName).toBe('mine');
    });
  });
});

function cursorOf(indexName: string): Document {
  return { $cursor: { queryPlanner: { namespace: 'app.orders', winningPlan: { stage: 'IXSCAN', indexName } } } };
}
