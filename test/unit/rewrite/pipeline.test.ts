/**
 * Aggregation pipelines (src/rewrite/pipeline.ts): catalogue items 13, 28-36 and G1/G5.
 * Outputs are deserialized with `bson` for their structure; untouched stages and client values
 * are checked byte for byte.
 */
import { PolicyRefusal } from '../../../src/errors.js';
import { Long, ObjectId, deserialize, serialize, type Document } from 'bson';
import { describe, expect, it } from 'vitest';
import type { IsolationModel } from '../../../src/config/types.js';
import {
  ALLOWED_STAGES,
  MAX_GRAPH_LOOKUP_DEPTH,
  MAX_PIPELINE_DEPTH,
  REFUSED_STAGES,
  isAllowedStage,
  rewritePipeline,
  rewritePipelineDetailed,
  type PipelineOptions,
} from '../../../src/rewrite/pipeline.js';
import type {
  Access,
  NamespaceResolver,
  ResolvedNamespace,
  RewriteNote,
  TenantContext,
} from '../../../src/policy/types.js';
import type { RawValue } from '../../../src/wire/raw-bson.js';

const FIELD = 'tenantId';
const T = new ObjectId('65a1b2c3d4e5f60718293a4b');
const B = new ObjectId('65ffffffffffffffffffffff');
const eqT = { [FIELD]: { $eq: T } };
const matchT = { $match: eqT };

function refuseNamespace(db: string, coll: string, access: Access): void {
  if (['admin', 'local', 'config'].includes(db) || coll.startsWith('system.'))
    throw new PolicyRefusal('namespace.system', 'system namespace');
  if (coll === 'denied') throw new PolicyRefusal('namespace.denied', 'denied namespace');
  if (coll === 'ref' && access === 'write') throw new PolicyRefusal('namespace.readonly', 'shared-readonly namespace');
}

/** Shared collections, identity mapping; `ref` is shared-readonly (not filtered); `private_*` is a tenant-private (collection-prefix) collection. */
function sharedResolver(): NamespaceResolver {
  return {
    resolve(db, coll, access): ResolvedNamespace {
      refuseNamespace(db, coll, access);
      if (coll === 'ref')
        return { db, coll, model: 'shared-collection', access: 'shared-readonly', tenantFiltered: false };
      if (coll.startsWith('private_'))
        return { db, coll: `acme.${coll}`, model: 'collection-prefix', access: 'scoped', tenantFiltered: false };
      return { db, coll, model: 'shared-collection', access: 'scoped', tenantFiltered: true };
    },
    resolveDatabase: (db) => ({ db, model: 'shared-collection' }),
    toClient: (db, coll) => ({ db, coll }),
  };
}

/** Database per tenant: db → `t_acme_<db>`. */
function perTenantResolver(model: IsolationModel = 'database-per-tenant'): NamespaceResolver {
  return {
    resolve(db, coll, access): ResolvedNamespace {
      refuseNamespace(db, coll, access);
      return { db: `t_acme_${db}`, coll, model, access: 'scoped', tenantFiltered: false };
    },
    resolveDatabase: (db) => ({ db: `t_acme_${db}`, model }),
    toClient: (db, coll) => ({ db, coll }),
  };
}

function rawValue(value: unknown): RawValue {
  const bytes = serialize({ v: value });
  return { type: bytes[4]!, value: bytes.subarray(7, bytes.length - 1) };
}

function context(namespaces: NamespaceResolver = sharedResolver()): TenantContext {
  return {
    tenant: 'acme',
    tenantValue: rawValue(T),
    field: FIELD,
    namespaces,
    maxTimeMS: 5_000,
    pinSimpleCollation: false,
  };
}

const SHARED: PipelineOptions = { db: 'app', coll: 'c', tenantFiltered: true, depth: 0 };
const PER_TENANT: PipelineOptions = { db: 'app', coll: 'c', tenantFiltered: false, depth: 0 };

function rewrite(
  pipeline: unknown[],
  options: Partial<PipelineOptions> = {},
  ctx: TenantContext = context(),
): Document[] {
  const result = rewritePipeline(rawValue(pipeline), ctx, { ...SHARED, ...options });
  return deserialize(wrap(result)).p as Document[];
}

/** `{p: <value>}`, to deserialize a raw array value. */
function wrap(value: RawValue): Uint8Array {
  const name = Buffer.from('p\0');
  const size = 4 + 1 + name.length + value.value.length + 1;
  const out = Buffer.alloc(size);
  out.writeInt32LE(size, 0);
  out[4] = value.type;
  name.copy(out, 5);
  out.set(value.value, 5 + name.length);
  return out;
}

function perTenant(pipeline: unknown[], options: Partial<PipelineOptions> = {}): Document[] {
  return rewrite(pipeline, { ...PER_TENANT, ...options }, context(perTenantResolver()));
}

function refusal(run: () => unknown, rule?: string | RegExp): PolicyRefusal {
  let caught: unknown;
  try {
    run();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(PolicyRefusal);
  const error = caught as PolicyRefusal;
  if (typeof rule === 'string') expect(error.rule).toBe(rule);
  else if (rule !== undefined) expect(error.rule).toMatch(rule);
  return error;
}

describe('29: where the tenant $match goes', () => {
  it('prepends {$match: {tenantId: {$eq: T}}} as stage 0 (an empty pipeline too)', () => {
    expect(rewrite([])).toEqual([matchT]);
    expect(rewrite([{ $sort: { a: 1 } }, { $limit: 5 }])).toEqual([matchT, { $sort: { a: 1 } }, { $limit: 5 }]);
  });

  it('13: a first-stage $match (with $text) gets the tenant ANDed into it, staying first', () => {
    const text = { $text: { $search: 'x' } };
    expect(rewrite([{ $match: text }, { $sort: { score: { $meta: 'textScore' } } }])).toEqual([
      { $match: { $and: [eqT, text] } },
      { $sort: { score: { $meta: 'textScore' } } },
    ]);
    expect(rewrite([{ $match: { [FIELD]: B } }])).toEqual([{ $match: { $and: [eqT, { [FIELD]: B }] } }]);
  });

  it('29: $geoNear first: the tenant is ANDed into its query', () => {
    const geo = { near: { type: 'Point', coordinates: [0, 0] }, distanceField: 'd', spherical: true };
    expect(rewrite([{ $geoNear: geo }])).toEqual([{ $geoNear: { ...geo, query: { $and: [eqT] } } }]);
    expect(rewrite([{ $geoNear: { ...geo, query: { a: 1 } } }])).toEqual([
      { $geoNear: { ...geo, query: { $and: [eqT, { a: 1 }] } } },
    ]);
    refusal(() => rewrite([{ $geoNear: { ...geo, query: { $where: 'true' } } }]));
  });

  it('29: $vectorSearch first: the tenant is ANDed into its filter', () => {
    const vs = { index: 'v', path: 'e', queryVector: [0.5, 1], numCandidates: 10, limit: 2 };
    expect(rewrite([{ $vectorSearch: vs }])).toEqual([{ $vectorSearch: { ...vs, filter: { $and: [eqT] } } }]);
    expect(rewrite([{ $vectorSearch: { ...vs, filter: { a: { $eq: 1 } } } }])).toEqual([
      { $vectorSearch: { ...vs, filter: { $and: [eqT, { a: { $eq: 1 } }] } } },
    ]);
    refusal(() => rewrite([{ $vectorSearch: { ...vs, internalOption: 1 } }]), 'pipeline.unknown-field');
  });

  it('29: $search first: an equals clause in compound.filter', () => {
    const clause = { equals: { path: FIELD, value: T } };
    expect(rewrite([{ $search: { index: 'i', text: { query: 'x', path: 'a' } } }])).toEqual([
      { $search: { index: 'i', compound: { must: [{ text: { query: 'x', path: 'a' } }], filter: [clause] } } },
    ]);
    expect(
      rewrite([
        {
          $search: { compound: { should: [{ text: { query: 'x', path: 'a' } }], filter: [{ exists: { path: 'b' } }] } },
        },
      ]),
    ).toEqual([
      {
        $search: {
          compound: { should: [{ text: { query: 'x', path: 'a' } }], filter: [{ exists: { path: 'b' } }, clause] },
        },
      },
    ]);
    expect(rewrite([{ $search: { compound: { must: [{ exists: { path: 'b' } }] } } }])).toEqual([
      { $search: { compound: { must: [{ exists: { path: 'b' } }], filter: [clause] } } },
    ]);
  });

  it('29: $searchMeta and the facet collector are refused in shared collections', () => {
    refusal(
      () => rewrite([{ $searchMeta: { count: { type: 'total' }, exists: { path: 'a' } } }]),
      'pipeline.search-meta',
    );
    refusal(
      () => rewrite([{ $search: { facet: { operator: { exists: { path: 'a' } }, facets: {} } } }]),
      'pipeline.search-meta',
    );
    expect(perTenant([{ $searchMeta: { exists: { path: 'a' } } }])).toEqual([
      { $searchMeta: { exists: { path: 'a' } } },
    ]);
  });

  it('29/35: $documents first reads no collection: nothing prepended, later stages still checked', () => {
    const pipeline = [
      { $documents: [{ a: 1 }] },
      { $lookup: { from: 'd', localField: 'a', foreignField: 'b', as: 'j' } },
    ];
    expect(rewrite(pipeline, { coll: undefined, tenantFiltered: false })).toEqual([
      { $documents: [{ a: 1 }] },
      { $lookup: { from: 'd', localField: 'a', foreignField: 'b', as: 'j', pipeline: [matchT] } },
    ]);
  });

  it('29/25: diagnostic, internal and unknown stages are refused, each with its rule', () => {
    for (const [name, rule] of REFUSED_STAGES) {
      refusal(() => rewrite([{ [name]: {} }]), rule);
      refusal(() => rewrite([{ $facet: { x: [{ [name]: {} }] } }]), rule);
    }
    for (const name of ['$_internalUnpackBucket', '$_internalInhibitOptimization'])
      refusal(() => rewrite([{ [name]: {} }]), 'pipeline.internal-stage');
    for (const name of ['$rankFusion', '$Match', 'match', '$mystery'])
      refusal(() => rewrite([{ [name]: {} }]), 'pipeline.unknown-stage');
    expect(isAllowedStage('$match')).toBe(true);
    for (const name of REFUSED_STAGES.keys()) expect(ALLOWED_STAGES.has(name)).toBe(false);
  });

  it('G1: a stage must be a one-field document; the pipeline an array', () => {
    refusal(() => rewrite([{ $match: {}, $limit: 1 }]), 'pipeline.stage-shape');
    refusal(() => rewrite([{}]), 'pipeline.stage-shape');
    refusal(() => rewrite([5]), 'pipeline.stage-shape');
    refusal(() => rewritePipeline(rawValue({ $match: {} }), context(), SHARED), 'pipeline.not-array');
  });
});

describe('28: change streams', () => {
  it('$changeStream is refused anywhere', () => {
    refusal(() => rewrite([{ $changeStream: {} }]), 'pipeline.change-stream');
    refusal(
      () =>
        rewrite([{ $changeStream: { allChangesForCluster: true } }], {
          db: 'admin',
          coll: undefined,
          tenantFiltered: false,
          physicalDb: 'admin',
        }),
      'pipeline.change-stream',
    );
    refusal(() => perTenant([{ $changeStream: {} }]), 'pipeline.change-stream');
  });
});

describe('30: $lookup', () => {
  it('equality form gets pipeline: [{$match: tenant}] (5.0+ concise form)', () => {
    expect(rewrite([{ $lookup: { from: 'd', localField: 'a', foreignField: 'b', as: 'j' } }])).toEqual([
      matchT,
      { $lookup: { from: 'd', localField: 'a', foreignField: 'b', as: 'j', pipeline: [matchT] } },
    ]);
  });

  it('pipeline form gets the match prepended and is recursed into', () => {
    expect(
      rewrite([
        {
          $lookup: { from: 'd', let: { x: '$a' }, pipeline: [{ $match: { $expr: { $eq: ['$b', '$$x'] } } }], as: 'j' },
        },
      ]).at(1),
    ).toEqual({
      $lookup: {
        from: 'd',
        let: { x: '$a' },
        pipeline: [{ $match: { $and: [eqT, { $expr: { $eq: ['$b', '$$x'] } }] } }],
        as: 'j',
      },
    });
    expect(
      rewrite([
        { $lookup: { from: 'd', localField: 'a', foreignField: 'b', pipeline: [{ $project: { b: 1 } }], as: 'j' } },
      ]).at(1),
    ).toEqual({
      $lookup: { from: 'd', localField: 'a', foreignField: 'b', pipeline: [matchT, { $project: { b: 1 } }], as: 'j' },
    });
  });

  it('a leading $geoNear or $search in the sub-pipeline gets the tenant inside it', () => {
    const geo = { near: [0, 0], distanceField: 'd' };
    expect(rewrite([{ $lookup: { from: 'd', pipeline: [{ $geoNear: geo }], as: 'j' } }]).at(1)).toEqual({
      $lookup: { from: 'd', pipeline: [{ $geoNear: { ...geo, query: { $and: [eqT] } } }], as: 'j' },
    });
  });

  it('30: a `from` that is not a string ({db, coll}) is refused', () => {
    refusal(
      () =>
        rewrite([
          { $lookup: { from: { db: 'local', coll: 'oplog.rs' }, localField: 'a', foreignField: 'b', as: 'j' } },
        ]),
      'lookup.from-not-string',
    );
    refusal(
      () => perTenant([{ $lookup: { from: { db: 'other', coll: 'c' }, pipeline: [], as: 'j' } }]),
      'lookup.from-not-string',
    );
  });

  it('foreign namespaces go through the resolver (system, denied, reference data)', () => {
    refusal(
      () => rewrite([{ $lookup: { from: 'system.js', localField: 'a', foreignField: 'b', as: 'j' } }]),
      'namespace.system',
    );
    refusal(
      () => rewrite([{ $lookup: { from: 'denied', localField: 'a', foreignField: 'b', as: 'j' } }]),
      'namespace.denied',
    );
    expect(rewrite([{ $lookup: { from: 'ref', localField: 'a', foreignField: 'b', as: 'j' } }]).at(1)).toEqual({
      $lookup: { from: 'ref', localField: 'a', foreignField: 'b', as: 'j' },
    });
  });

  it('collection-prefix foreign collections are mapped; a foreign collection in another database is refused', () => {
    const notes: RewriteNote[] = [];
    const { pipeline, summary } = rewritePipelineDetailed(
      rawValue([{ $lookup: { from: 'private_x', localField: 'a', foreignField: 'b', as: 'j' } }]),
      context(),
      { ...SHARED, notes },
    );
    expect(summary.namesMapped).toBe(true);
    expect(deserialize(wrap(pipeline)).p).toEqual([
      matchT,
      { $lookup: { from: 'acme.private_x', localField: 'a', foreignField: 'b', as: 'j' } },
    ]);
    const crossDb = context({
      ...sharedResolver(),
      resolve: (db, coll) => ({
        db: coll === 'd' ? 'elsewhere' : db,
        coll,
        model: 'shared-collection',
        access: 'scoped',
        tenantFiltered: true,
      }),
    });
    refusal(
      () => rewrite([{ $lookup: { from: 'd', localField: 'a', foreignField: 'b', as: 'j' } }], {}, crossDb),
      'namespace.cross-db',
    );
  });

  it('database-per-tenant: no $match, names resolved in the tenant database, still validated', () => {
    expect(perTenant([{ $lookup: { from: 'd', localField: 'a', foreignField: 'b', as: 'j' } }])).toEqual([
      { $lookup: { from: 'd', localField: 'a', foreignField: 'b', as: 'j' } },
    ]);
    refusal(() => perTenant([{ $lookup: { from: 'd', pipeline: [{ $match: { $where: 'true' } }], as: 'j' } }]));
    refusal(() => perTenant([{ $lookup: { from: 'system.views', pipeline: [], as: 'j' } }]), 'namespace.system');
  });

  it('1: $where in a $lookup pipeline is refused', () => {
    refusal(() => rewrite([{ $lookup: { from: 'd', pipeline: [{ $match: { $where: 'true' } }], as: 'j' } }]));
  });

  it('unknown $lookup fields and a missing `from` (without $documents) are refused', () => {
    refusal(
      () => rewrite([{ $lookup: { from: 'd', localField: 'a', foreignField: 'b', as: 'j', _internal: 1 } }]),
      'pipeline.unknown-field',
    );
    refusal(() => rewrite([{ $lookup: { pipeline: [{ $match: {} }], as: 'j' } }]), 'lookup.from');
    expect(rewrite([{ $lookup: { pipeline: [{ $documents: [{ a: 1 }] }], as: 'j' } }]).at(1)).toEqual({
      $lookup: { pipeline: [{ $documents: [{ a: 1 }] }], as: 'j' },
    });
  });
});

describe('31: $graphLookup', () => {
  const spec = { from: 'd', startWith: '$a', connectFromField: 'a', connectToField: 'b', as: 'g' };

  it('ANDs the tenant into restrictSearchWithMatch and caps maxDepth', () => {
    expect(rewrite([{ $graphLookup: spec }]).at(1)).toEqual({
      $graphLookup: { ...spec, restrictSearchWithMatch: { $and: [eqT] }, maxDepth: MAX_GRAPH_LOOKUP_DEPTH },
    });
    expect(rewrite([{ $graphLookup: { ...spec, restrictSearchWithMatch: { x: 1 }, maxDepth: 3 } }]).at(1)).toEqual({
      $graphLookup: { ...spec, restrictSearchWithMatch: { $and: [eqT, { x: 1 }] }, maxDepth: 3 },
    });
    expect(rewrite([{ $graphLookup: { ...spec, maxDepth: 1e6 } }]).at(1)?.$graphLookup.maxDepth).toBe(
      MAX_GRAPH_LOOKUP_DEPTH,
    );
    refusal(() => rewrite([{ $graphLookup: { ...spec, maxDepth: -1 } }]), 'pipeline.stage-shape');
  });

  it('refuses a non-string from and validates startWith / restrictSearchWithMatch', () => {
    refusal(() => rewrite([{ $graphLookup: { ...spec, from: { db: 'other', coll: 'd' } } }]), 'lookup.from-not-string');
    refusal(() =>
      rewrite([{ $graphLookup: { ...spec, startWith: { $function: { body: 'x', args: [], lang: 'js' } } } }]),
    );
    refusal(() => rewrite([{ $graphLookup: { ...spec, restrictSearchWithMatch: { $where: 'true' } } }]));
  });

  it('database-per-tenant: no predicate, maxDepth still capped', () => {
    expect(perTenant([{ $graphLookup: spec }])).toEqual([
      { $graphLookup: { ...spec, maxDepth: MAX_GRAPH_LOOKUP_DEPTH } },
    ]);
  });
});

describe('32: $unionWith and $facet', () => {
  it('$unionWith: a string becomes {coll, pipeline: [$match]}; a pipeline gets the match prepended', () => {
    expect(rewrite([{ $unionWith: 'd' }]).at(1)).toEqual({ $unionWith: { coll: 'd', pipeline: [matchT] } });
    expect(rewrite([{ $unionWith: { coll: 'd', pipeline: [{ $project: { a: 1 } }] } }]).at(1)).toEqual({
      $unionWith: { coll: 'd', pipeline: [matchT, { $project: { a: 1 } }] },
    });
    expect(rewrite([{ $unionWith: { coll: 'd' } }]).at(1)).toEqual({ $unionWith: { coll: 'd', pipeline: [matchT] } });
  });

  it('$unionWith: coll may be omitted only when the pipeline starts with $documents; a non-string coll is refused', () => {
    expect(rewrite([{ $unionWith: { pipeline: [{ $documents: [{ a: 1 }] }] } }]).at(1)).toEqual({
      $unionWith: { pipeline: [{ $documents: [{ a: 1 }] }] },
    });
    refusal(() => rewrite([{ $unionWith: { pipeline: [{ $match: {} }] } }]), 'unionWith.coll');
    refusal(() => rewrite([{ $unionWith: { coll: { db: 'x', coll: 'y' } } }]), 'unionWith.coll-not-string');
    refusal(() => rewrite([{ $unionWith: 5 }]), 'unionWith.coll-not-string');
  });

  it('$facet: sub-pipelines read the filtered input; their joins are filtered at every depth (G5)', () => {
    const result = rewrite([
      {
        $facet: {
          a: [{ $count: 'n' }],
          b: [
            {
              $lookup: {
                from: 'd',
                pipeline: [{ $unionWith: { coll: 'e', pipeline: [{ $facet: { z: [{ $unionWith: 'f' }] } }] } }],
                as: 'j',
              },
            },
          ],
        },
      },
    ]);
    expect(result).toEqual([
      matchT,
      {
        $facet: {
          a: [{ $count: 'n' }],
          b: [
            {
              $lookup: {
                from: 'd',
                pipeline: [
                  matchT,
                  {
                    $unionWith: {
                      coll: 'e',
                      pipeline: [matchT, { $facet: { z: [{ $unionWith: { coll: 'f', pipeline: [matchT] } }] } }],
                    },
                  },
                ],
                as: 'j',
              },
            },
          ],
        },
      },
    ]);
  });

  it('G5: sub-pipelines nested deeper than the cap are refused', () => {
    let pipeline: unknown[] = [{ $limit: 1 }];
    for (let i = 0; i < MAX_PIPELINE_DEPTH; i++) pipeline = [{ $facet: { x: pipeline } }];
    expect(() => rewrite(pipeline)).not.toThrow();
    refusal(() => rewrite([{ $facet: { x: pipeline } }]), 'pipeline.depth');
  });
});

describe('33-35: $out and $merge', () => {
  it('33: $out into a shared collection is refused; $merge too (34)', () => {
    refusal(() => rewrite([{ $out: 'c' }]), 'pipeline.out');
    refusal(() => rewrite([{ $out: { db: 'app', coll: 'c' } }]), 'pipeline.out');
    refusal(() => rewrite([{ $merge: { into: 'c' } }]), 'pipeline.merge');
    refusal(() => rewrite([{ $merge: 'c' }]), 'pipeline.merge');
    refusal(
      () => rewrite([{ $merge: { into: { db: 'other', coll: 'c' }, on: '_id', whenMatched: 'replace' } }]),
      'pipeline.merge',
    );
  });

  it("33: database-per-tenant: $out goes to the tenant's own database", () => {
    expect(perTenant([{ $out: 'o' }])).toEqual([{ $out: { db: 't_acme_app', coll: 'o' } }]);
    expect(perTenant([{ $out: { db: 'other', coll: 'o', timeseries: { timeField: 't' } } }])).toEqual([
      { $out: { db: 't_acme_other', coll: 'o', timeseries: { timeField: 't' } } },
    ]);
    refusal(() => perTenant([{ $out: { db: 'admin', coll: 'o' } }]), 'namespace.system');
    refusal(() => perTenant([{ $out: 'o' }, { $limit: 1 }]), 'pipeline.out');
  });

  it("34: database-per-tenant: $merge into the tenant's own database; whenMatched pipelines limited and validated", () => {
    expect(perTenant([{ $merge: { into: 'o', on: ['a'], whenMatched: 'merge', whenNotMatched: 'insert' } }])).toEqual([
      { $merge: { into: { db: 't_acme_app', coll: 'o' }, on: ['a'], whenMatched: 'merge', whenNotMatched: 'insert' } },
    ]);
    expect(perTenant([{ $merge: { into: 'o', whenMatched: [{ $set: { n: { $add: ['$n', 1] } } }] } }])).toEqual([
      { $merge: { into: { db: 't_acme_app', coll: 'o' }, whenMatched: [{ $set: { n: { $add: ['$n', 1] } } }] } },
    ]);
    refusal(
      () => perTenant([{ $merge: { into: 'o', whenMatched: [{ $lookup: { from: 'd', pipeline: [], as: 'j' } }] } }]),
      'merge.when-matched',
    );
    refusal(() =>
      perTenant([
        { $merge: { into: 'o', whenMatched: [{ $set: { n: { $function: { body: 'x', args: [], lang: 'js' } } } }] } },
      ]),
    );
    refusal(() => perTenant([{ $merge: { into: 'o', whenMatched: 'overwrite' } }]), 'pipeline.stage-shape');
    refusal(() => perTenant([{ $merge: { into: 'o', unknown: 1 } }]), 'pipeline.unknown-field');
  });

  it("33-34: a tenant-private target from a shared source is allowed (only T's documents flow there)", () => {
    expect(rewrite([{ $out: 'private_o' }])).toEqual([matchT, { $out: { db: 'app', coll: 'acme.private_o' } }]);
  });

  it('35: $documents + $merge into a shared collection is refused', () => {
    refusal(
      () =>
        rewrite([{ $documents: [{ [FIELD]: B }] }, { $merge: { into: 'c' } }], {
          coll: undefined,
          tenantFiltered: false,
        }),
      'pipeline.merge',
    );
  });

  it('$out/$merge in a sub-pipeline are refused', () => {
    refusal(() => perTenant([{ $lookup: { from: 'd', pipeline: [{ $out: 'o' }], as: 'j' } }]), 'pipeline.out');
    refusal(() => perTenant([{ $facet: { x: [{ $merge: { into: 'o' } }] } }]), 'pipeline.merge');
    refusal(() => perTenant([{ $unionWith: { coll: 'd', pipeline: [{ $out: 'o' }] } }]), 'pipeline.out');
  });
});

describe('36: stages after the tenant match; expressions and accumulators validated', () => {
  it('$group, $setWindowFields, $bucket, $bucketAuto, $densify, $fill, $sample run after the match', () => {
    const stages = [
      { $group: { _id: '$a', n: { $sum: 1 }, top: { $topN: { n: 2, sortBy: { x: 1 }, output: '$x' } } } },
      {
        $setWindowFields: {
          partitionBy: '$a',
          sortBy: { x: 1 },
          output: { r: { $rank: {} }, s: { $sum: '$x', window: { documents: ['unbounded', 'current'] } } },
        },
      },
      { $bucket: { groupBy: '$x', boundaries: [0, 10], default: 'other', output: { n: { $sum: 1 } } } },
      { $bucketAuto: { groupBy: '$x', buckets: 3 } },
      { $densify: { field: 'x', range: { step: 1, bounds: 'full' } } },
      { $fill: { sortBy: { x: 1 }, output: { y: { method: 'linear' }, z: { value: 0 } } } },
      { $sample: { size: 3 } },
      { $addFields: { a: { $concat: ['$b', 'x'] } } },
      { $set: { a: 1 } },
      { $unset: ['a', 'b'] },
      { $unset: 'c' },
      { $project: { a: 1, b: { $toUpper: '$b' } } },
      { $replaceRoot: { newRoot: '$a' } },
      { $replaceWith: '$a' },
      { $redact: { $cond: [true, '$$KEEP', '$$PRUNE'] } },
      { $sortByCount: '$a' },
      { $unwind: { path: '$a', preserveNullAndEmptyArrays: true } },
      { $count: 'n' },
      { $skip: 1 },
      { $limit: 1 },
      { $sort: { a: 1 } },
    ];
    expect(rewrite(stages)).toEqual([matchT, ...stages]);
  });

  it('2: $accumulator, $function and unknown accumulators are refused', () => {
    refusal(() => rewrite([{ $group: { _id: null, x: { $accumulator: { init: 'function(){}' } } } }]));
    refusal(() => rewrite([{ $group: { _id: null, x: { $frobnicate: 1 } } }]));
    refusal(() => rewrite([{ $group: { x: { $sum: 1 } } }]), 'pipeline.stage-shape');
    refusal(() =>
      rewrite([{ $setWindowFields: { output: { x: { $function: { body: 'x', args: [], lang: 'js' } } } } }]),
    );
    refusal(() => rewrite([{ $bucket: { groupBy: '$x', boundaries: [0, 1], output: { x: { $accumulator: {} } } } }]));
    refusal(() => rewrite([{ $project: { a: { $function: { body: 'x', args: [], lang: 'js' } } } }]));
    refusal(() => rewrite([{ $addFields: { a: { $where: 'x' } } }]));
    refusal(() => rewrite([{ $replaceRoot: {} }]), 'pipeline.stage-shape');
    refusal(() => rewrite([{ $replaceRoot: { newRoot: '$a', extra: 1 } }]), 'pipeline.unknown-field');
    refusal(() => rewrite([{ $match: { $expr: { $eq: ['$$USER_ROLES', []] } } }]));
  });
});

describe('bytes', () => {
  it('untouched stages and client values are forwarded byte for byte', () => {
    const numericKeys = new Map<string, unknown>([
      ['2', 1],
      ['1', Long.fromString('9007199254740993')],
    ]);
    const stage = new Map<string, unknown>([
      [
        '$addFields',
        new Map<string, unknown>([
          ['k', { $literal: numericKeys }],
          ['n', Long.fromString('-5')],
        ]),
      ],
    ]);
    const pipeline = [{ $match: { n: Long.fromString('9007199254740993') } }, stage];
    const result = rewritePipeline(rawValue(pipeline), context(), SHARED);
    const bytes = Buffer.from(result.value);
    expect(bytes.indexOf(Buffer.from(serialize(stage)))).toBeGreaterThan(0);
    expect(bytes.indexOf(Buffer.from(serialize({ n: Long.fromString('9007199254740993') })))).toBeGreaterThan(0);
    expect(bytes.indexOf(Buffer.from(serialize(numericKeys)))).toBeGreaterThan(0);
  });

  it('notes name the rules applied', () => {
    const notes: RewriteNote[] = [];
    rewritePipeline(rawValue([{ $lookup: { from: 'd', localField: 'a', foreignField: 'b', as: 'j' } }]), context(), {
      ...SHARED,
      notes,
    });
    expect(notes.map((note) => note.rule)).toEqual(['pipeline.lookup.match', 'pipeline.match']);
    expect(notes[1]!.namespace).toBe('app.c');
  });
});

describe('G1: error fidelity of refused stages', () => {
  it("an unknown stage gets the server's code 40324 (Unrecognized pipeline stage name); a forbidden one 13", () => {
    const unknown = refusal(() => rewrite([{ $foo: {} }]), 'pipeline.unknown-stage');
    expect(unknown.code).toBe(40324);
    expect(unknown.codeName).toBe('Location40324');
    expect(refusal(() => rewrite([{ $currentOp: {} }]), 'pipeline.diagnostic-stage').code).toBe(13);
    expect(refusal(() => rewrite([{ $changeStream: {} }]), 'pipeline.change-stream').code).toBe(13);
    expect(refusal(() => rewrite([{ $_internalInhibitOptimization: {} }]), 'pipeline.internal-stage').code).toBe(13);
  });

  it('unknown operators inside stages get the codes the server uses for them', () => {
    expect(refusal(() => rewrite([{ $match: { a: { $foo: 1 } } }]), 'operator.unknown').code).toBe(2);
    expect(refusal(() => rewrite([{ $project: { a: { $foo: 1 } } }]), 'operator.unknown').code).toBe(168);
    expect(refusal(() => rewrite([{ $group: { _id: null, a: { $foo: 1 } } }]), 'operator.unknown').code).toBe(15952);
    expect(
      refusal(() => rewrite([{ $setWindowFields: { output: { a: { $foo: 1 } } } }]), 'operator.unknown').code,
    ).toBe(9);
  });
});

describe('tenantFieldInReplies: hide: the tenant field dropped upstream from every tenant-filtered read (issue 14)', () => {
  const hiding = (): TenantContext => ({ ...context(), hideTenantField: true });
  const hide = (pipeline: unknown[], options: Partial<PipelineOptions> = {}): Document[] =>
    rewrite(pipeline, options, hiding());
  const drop = { $project: { [FIELD]: 0 } };

  it('a top-level pipeline of selecting stages only gets nothing (the reply-side removal covers its top level)', () => {
    expect(hide([])).toEqual([matchT]);
    expect(hide([{ $match: { a: 1 } }, { $sort: { a: 1 } }, { $skip: 1 }, { $limit: 2 }])).toEqual([
      { $match: { $and: [eqT, { a: 1 }] } },
      { $sort: { a: 1 } },
      { $skip: 1 },
      { $limit: 2 },
    ]);
  });

  it('the drop goes after stage 0 and the leading $match/$sort/$limit/$skip, before any stage that can move a document', () => {
    const group = { $group: { _id: null, all: { $push: '$$ROOT' } } };
    expect(hide([group])).toEqual([matchT, drop, group]);
    expect(hide([{ $match: { a: 1 } }, { $sort: { a: 1 } }, { $limit: 5 }, group])).toEqual([
      { $match: { $and: [eqT, { a: 1 }] } },
      { $sort: { a: 1 } },
      { $limit: 5 },
      drop,
      group,
    ]);
    for (const stage of [
      { $replaceRoot: { newRoot: { doc: '$$ROOT' } } },
      { $replaceWith: '$$ROOT' },
      { $project: { copy: '$$ROOT' } },
      { $addFields: { copy: '$$ROOT' } },
      { $set: { copy: '$$CURRENT' } },
      { $unset: 'a' },
      { $facet: { all: [] } },
      { $bucket: { groupBy: '$a', boundaries: [0, 10], default: 'x', output: { docs: { $push: '$$ROOT' } } } },
      { $sortByCount: '$a' },
      { $unwind: '$a' },
    ]) {
      expect(hide([stage]), JSON.stringify(stage)).toEqual([matchT, drop, stage]);
    }
    // $out into a tenant-private collection: what is stored there is what the tenant read.
    expect(hide([{ $out: 'private_out' }])).toEqual([matchT, drop, { $out: { db: 'app', coll: 'acme.private_out' } }]);
    const geo = { $geoNear: { near: [0, 0], distanceField: 'd', query: { a: 1 } } };
    expect(hide([geo, { $group: { _id: '$a' } }]).slice(1)).toEqual([drop, { $group: { _id: '$a' } }]);
  });

  it('$lookup: the joined side ends with the drop in every form (equality, pipeline, nested); the tenant match stays first', () => {
    expect(hide([{ $lookup: { from: 'd', localField: 'a', foreignField: 'b', as: 'j' } }])).toEqual([
      matchT,
      drop,
      { $lookup: { from: 'd', localField: 'a', foreignField: 'b', as: 'j', pipeline: [matchT, drop] } },
    ]);
    expect(
      hide([
        {
          $lookup: {
            from: 'd',
            pipeline: [{ $match: { x: 1 } }, { $group: { _id: 0, all: { $push: '$$ROOT' } } }],
            as: 'j',
          },
        },
      ])[2],
    ).toEqual({
      $lookup: {
        from: 'd',
        pipeline: [{ $match: { $and: [eqT, { x: 1 }] } }, drop, { $group: { _id: 0, all: { $push: '$$ROOT' } } }],
        as: 'j',
      },
    });
    const nested = hide([
      { $lookup: { from: 'd', pipeline: [{ $lookup: { from: 'e', pipeline: [], as: 'k' } }], as: 'j' } },
    ])[2] as Document;
    expect(nested.$lookup.pipeline).toEqual([
      matchT,
      drop,
      { $lookup: { from: 'e', pipeline: [matchT, drop], as: 'k' } },
    ]);
  });

  it('$unionWith (string and pipeline forms) and $graphLookup (a dotted drop after the stage)', () => {
    expect(hide([{ $unionWith: 'd' }])[2]).toEqual({ $unionWith: { coll: 'd', pipeline: [matchT, drop] } });
    expect(hide([{ $unionWith: { coll: 'd', pipeline: [{ $sort: { a: 1 } }] } }])[2]).toEqual({
      $unionWith: { coll: 'd', pipeline: [matchT, { $sort: { a: 1 } }, drop] },
    });
    const spec = { from: 'd', startWith: '$a', connectFromField: 'a', connectToField: 'b', as: 'g' };
    expect(hide([{ $graphLookup: spec }, { $unwind: '$g' }])).toEqual([
      matchT,
      drop,
      { $graphLookup: { ...spec, restrictSearchWithMatch: { $and: [eqT] }, maxDepth: MAX_GRAPH_LOOKUP_DEPTH } },
      { $project: { [`g.${FIELD}`]: 0 } },
      { $unwind: '$g' },
    ]);
  });

  it('nothing where no tenant-filtered namespace is read: shared-readonly, tenant-private, $documents, $facet inputs, whenMatched', () => {
    const ctx = hiding();
    expect(
      rewrite([{ $lookup: { from: 'ref', localField: 'a', foreignField: 'b', as: 'j' } }], PER_TENANT, ctx),
    ).toEqual([{ $lookup: { from: 'ref', localField: 'a', foreignField: 'b', as: 'j' } }]);
    expect(rewrite([{ $unionWith: 'private_x' }], PER_TENANT, ctx)).toEqual([
      { $unionWith: { coll: 'acme.private_x' } },
    ]);
    expect(hide([{ $documents: [{ [FIELD]: 1 }] }, { $group: { _id: 0 } }], { coll: undefined })).toEqual([
      { $documents: [{ [FIELD]: 1 }] },
      { $group: { _id: 0 } },
    ]);
    expect(hide([{ $facet: { a: [{ $group: { _id: 0 } }] } }])).toEqual([
      matchT,
      drop,
      { $facet: { a: [{ $group: { _id: 0 } }] } },
    ]);
    const merge = { $merge: { into: 'private_m', whenMatched: [{ $set: { x: 1 } }] } };
    expect(hide([merge])[2]).toEqual({
      $merge: { into: { db: 'app', coll: 'acme.private_m' }, whenMatched: [{ $set: { x: 1 } }] },
    });
  });

  it('show (hideTenantField absent or false): pipelines as before', () => {
    const group = { $group: { _id: null, all: { $push: '$$ROOT' } } };
    expect(rewrite([group], {}, { ...context(), hideTenantField: false })).toEqual([matchT, group]);
    expect(rewrite([{ $lookup: { from: 'd', localField: 'a', foreignField: 'b', as: 'j' } }])[1]).toEqual({
      $lookup: { from: 'd', localField: 'a', foreignField: 'b', as: 'j', pipeline: [matchT] },
    });
  });

  it('notes the drop', () => {
    const notes: RewriteNote[] = [];
    rewritePipelineDetailed(rawValue([{ $lookup: { from: 'd', pipeline: [], as: 'j' } }]), hiding(), {
      ...SHARED,
      notes,
    });
    expect(notes.filter((note) => note.rule === 'pipeline.hide-tenant-field').map((note) => note.namespace)).toEqual([
      'app.d',
      'app.c',
    ]);
  });
});
