// The isolation section: defaults, schema, cross-field rules, environment, masking.
import { describe, expect, it } from 'vitest';
import {
  configFromObject,
  ConfigValidationError,
  defaultConfig,
  formatConfigYaml,
  loadConfig,
  maskSecrets,
} from '../../../src/config/index.js';
import { isolationWarnings, namespaceGlobProblem, templateProblem } from '../../../src/config/checks.js';
import { configError } from '../../helpers/config.js';
import { parseNameTemplate } from '../../../src/policy/namespaces.js';

/** Every problem validation reports, as `path: message` lines. */
function problems(isolation: Record<string, unknown>): string[] {
  const error = configError(() => configFromObject({ isolation }));
  expect(error).toBeInstanceOf(ConfigValidationError);
  return (error as ConfigValidationError).issues.map((issue) => `${issue.path}: ${issue.message}`);
}

const KEY = 'k'.repeat(32);

describe('isolation defaults', () => {
  it('are the documented ones', () => {
    expect(defaultConfig().isolation).toEqual({
      mode: 'enforce',
      tenantField: 'tenantId',
      tenantValueType: 'string',
      tenantFieldInReplies: 'hide',
      defaultModel: 'shared-collection',
      databaseTemplate: '{tenant}_{db}',
      collectionTemplate: '{tenant}.{collection}',
      namespaces: [],
      maxTimeMS: 60_000,
      sessionKey: null,
      tenancy: {
        virtualDdl: true,
        catalogueDatabase: 'mongo_tenant_proxy',
        indexesPerTenant: 16,
        indexReserve: 8,
        maxIndexesPerCollection: 64,
        deleteBatchSize: 1000,
        statsMaxDocuments: 100000,
        sharedIndexes: [],
      },
    });
  });

  it('take a full section', () => {
    const config = configFromObject({
      isolation: {
        mode: 'audit-only',
        tenantField: 'organization_id',
        tenantValueType: 'objectId',
        defaultModel: 'database-per-tenant',
        databaseTemplate: 't_{tenant}_{db}',
        collectionTemplate: '{collection}__{tenant}',
        namespaces: [{ match: 'ref.*', access: 'shared-readonly' }, { match: 'app.*', model: 'shared-collection' }],
        maxTimeMS: 5_000,
        sessionKey: KEY,
      },
    });
    expect(config.isolation.namespaces).toEqual([{ match: 'ref.*', access: 'shared-readonly' }, { match: 'app.*', model: 'shared-collection' }]);
    expect(config.isolation.tenantValueType).toBe('objectId');
  });
});

describe('isolation.mode', () => {
  it.each(['audit', 'auditOnly', 'audit_only', 'Audit-Only', 'AUDIT-ONLY', ' audit-only', 'dry-run', 'off', 'true'])(
    '"%s" is refused: audit-only must be spelled exactly',
    (mode) => {
      expect(problems({ mode })).toEqual([expect.stringMatching(/^isolation\.mode: must be one of enforce, audit-only/)]);
    },
  );

  it('audit-only from the environment is accepted only when spelled exactly', () => {
    expect(loadConfig({ env: { MTP_ISOLATION__MODE: 'audit-only' } }).isolation.mode).toBe('audit-only');
    expect(() => loadConfig({ env: { MTP_ISOLATION__MODE: 'AUDIT-ONLY' } })).toThrow(ConfigValidationError);
  });

  it('audit-only comes with a loud warning; enforce with none', () => {
    expect(isolationWarnings({ mode: 'enforce' })).toEqual([]);
    const [warning] = isolationWarnings({ mode: 'audit-only' });
    expect(warning).toMatch(/NOT ENFORCED/);
    expect(warning).toMatch(/audit-only/);
  });
});

describe('isolation.tenantField', () => {
  it.each([
    ['_id', /must not be "_id"/],
    ['$tenant', /without "\$"/],
    ['org.id', /"\."/],
    ['a\0b', /NUL/],
  ])('%j is refused', (tenantField, message) => {
    const [line] = problems({ tenantField });
    expect(line).toMatch(/^isolation\.tenantField: /);
    expect(line).toMatch(message);
  });

  it('an empty one is refused', () => {
    expect(problems({ tenantField: '' })).toEqual([expect.stringMatching(/^isolation\.tenantField: must not be empty/)]);
  });

  it('organization_id is fine', () => {
    expect(configFromObject({ isolation: { tenantField: 'organization_id' } }).isolation.tenantField).toBe('organization_id');
  });
});

describe('isolation templates (catalogue 64)', () => {
  it.each([
    ['{db}', /\{tenant\} and \{db\} exactly once/],
    ['{tenant}', /exactly once/],
    ['{tenant}_{db}_{db}', /exactly once/],
    ['{tenant}{db}', /separator/],
    ['{tenant}x{db}', /separator/],
    ['{tenant}-{db}', /separator/],
    ['{db}_a{tenant}', /separator/],
    ['{tenant}.{db}', /invalid database names/],
    ['{tenant} {db}', /invalid database names/],
    ['{tenant}_{db}$', /invalid database names/],
    ['{tenant}_{db}{x}', /braces/],
    [`${'p'.repeat(62)}{tenant}_{db}`, /63 bytes/],
  ])('databaseTemplate %j is refused', (databaseTemplate, message) => {
    const [line] = problems({ databaseTemplate });
    expect(line).toMatch(/^isolation\.databaseTemplate: /);
    expect(line).toMatch(message);
  });

  it.each([
    ['{collection}', /exactly once/],
    ['{tenant}{collection}', /separator/],
    ['{tenant}$.{collection}', /invalid collection names/],
    ['system.{tenant}_{collection}', /system collections/],
  ])('collectionTemplate %j is refused', (collectionTemplate, message) => {
    const [line] = problems({ collectionTemplate });
    expect(line).toMatch(/^isolation\.collectionTemplate: /);
    expect(line).toMatch(message);
  });

  it.each(['{tenant}_{db}', 't_{tenant}_{db}', '{db}_{tenant}', 'x~{tenant}~{db}'])('databaseTemplate %j is accepted, by the resolver too', (databaseTemplate) => {
    expect(configFromObject({ isolation: { databaseTemplate } }).isolation.databaseTemplate).toBe(databaseTemplate);
    expect(() => parseNameTemplate(databaseTemplate, 'db')).not.toThrow();
  });

  it('the configuration and the resolver agree on what a valid template is', () => {
    for (const template of ['{tenant}{db}', '{tenant}_{db}', '{db}-{tenant}', '{db}_{tenant}', '{tenant}_{db}{x}', '{tenant}']) {
      let resolverAccepts = true;
      try {
        parseNameTemplate(template, 'db');
      } catch {
        resolverAccepts = false;
      }
      // The configuration may refuse more (database name characters), never less.
      if (templateProblem(template, 'db') === null) expect(resolverAccepts).toBe(true);
      if (!resolverAccepts) expect(templateProblem(template, 'db')).not.toBeNull();
    }
  });
});

describe('isolation.namespaces', () => {
  it.each([
    ['app', /db\.collection/],
    ['.c', /db\.collection/],
    ['app.', /db\.collection/],
    ['a/b.c', /database names/],
    ['app.c$', /"\$"/],
    ['admin.*', /never reachable/],
    ['local.oplog.rs', /never reachable/],
    ['app.system.js', /system collections/],
  ])('match %j is refused', (match, message) => {
    const [line] = problems({ namespaces: [{ match, access: 'denied' }] });
    expect(line).toMatch(/^isolation\.namespaces\[0\]\.match: /);
    expect(line).toMatch(message);
  });

  it('a rule without model or access is refused', () => {
    expect(problems({ namespaces: [{ match: 'app.*' }] })).toEqual([expect.stringMatching(/^isolation\.namespaces\[0\]: sets neither model nor access/)]);
  });

  it('unknown keys, models and accesses are refused by the schema', () => {
    expect(problems({ namespaces: [{ match: 'app.*', acess: 'denied' }] })[0]).toMatch(/^isolation\.namespaces\[0\]\.acess: unknown setting; did you mean "access"\?/);
    expect(problems({ namespaces: [{ match: 'app.*', model: 'per-tenant' }] })[0]).toMatch(/^isolation\.namespaces\[0\]\.model: must be one of/);
    expect(problems({ namespaces: [{ match: 'app.*', access: 'readonly' }] })[0]).toMatch(/^isolation\.namespaces\[0\]\.access: must be one of/);
  });

  it('globs are checked field by field', () => {
    expect(namespaceGlobProblem('*.audit_*')).toBeNull();
    expect(namespaceGlobProblem('ref.countries')).toBeNull();
    expect(namespaceGlobProblem('app.a.b')).toBeNull();
  });

  it('the environment sets the whole list as JSON', () => {
    const config = loadConfig({ env: { MTP_ISOLATION__NAMESPACES: '[{"match":"ref.*","access":"shared-readonly"}]' } });
    expect(config.isolation.namespaces).toEqual([{ match: 'ref.*', access: 'shared-readonly' }]);
  });
});

describe('isolation numbers and secrets', () => {
  it('maxTimeMS must be at least 1', () => {
    expect(problems({ maxTimeMS: 0 })).toEqual([expect.stringMatching(/^isolation\.maxTimeMS: must be >= 1/)]);
    expect(loadConfig({ env: { MTP_ISOLATION__MAX_TIME_MS: '250' } }).isolation.maxTimeMS).toBe(250);
  });

  it('sessionKey is a secret: never shown, also when too short', () => {
    const short = 'short-secret-value';
    const lines = problems({ sessionKey: short });
    expect(lines).toEqual([expect.stringMatching(/^isolation\.sessionKey: must be at least 32 characters/)]);
    expect(lines.join('\n')).not.toContain(short);
    const config = configFromObject({ isolation: { sessionKey: KEY } });
    expect(config.isolation.sessionKey).toBe(KEY);
    expect(maskSecrets(config).isolation.sessionKey).not.toBe(KEY);
    expect(formatConfigYaml(config)).not.toContain(KEY);
    const wrongType = configError(() => configFromObject({ isolation: { sessionKey: 12345678 } }));
    expect(wrongType.message).not.toContain('12345678');
  });

  it('an empty environment value sets sessionKey back to null', () => {
    const config = loadConfig({ env: { MTP_ISOLATION__SESSION_KEY: '' } });
    expect(config.isolation.sessionKey).toBeNull();
  });

  it('the audit stream moved to the top-level audit section', () => {
    expect(configError(() => configFromObject({ isolation: { audit: { file: null } } })).message).toMatch(/isolation/);
  });
});
