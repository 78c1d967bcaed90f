// Listeners and the identity section: schema, cross-field rules, environment lists, --listen.
import { afterAll, describe, expect, it } from 'vitest';
import {
  configFromObject,
  ConfigValidationError,
  defaultConfig,
  formatConfigYaml,
  loadConfig,
  preferredEnvNameOf,
  schemaAt,
} from '../../../src/config/index.js';
import { inspectPattern, isLoopbackHost } from '../../../src/config/checks.js';
import { configError, tempDir } from '../../helpers/config.js';

const files = tempDir('mtp-identity-config-');
afterAll(() => files.remove());

/** Every problem validation reports, as `path: message` lines. */
function problems(values: Record<string, unknown>): string[] {
  const error = configError(() => configFromObject(values));
  expect(error).toBeInstanceOf(ConfigValidationError);
  const lines = (error as ConfigValidationError).issues.map((issue) => `${issue.path}: ${issue.message}`);
  for (const line of lines) expect(line).not.toContain('\n');
  return lines;
}

const TLS = { certFile: '/tls/server.pem', keyFile: '/tls/server.key' };
const MTLS = { ...TLS, caFile: '/tls/ca.pem', clientCertificates: 'required' };
const RULE = { field: 'san-uri', pattern: '^spiffe://cluster/ns/(?<tenant>[a-z0-9-]+)/sa/[a-z0-9-]+$' };

describe('listeners', () => {
  it('default to one loopback listener without TLS or methods', () => {
    expect(defaultConfig().listeners).toEqual([
      { name: 'default', listen: { host: '127.0.0.1', port: 27018 }, tls: null, methods: [], staticTenant: null },
    ]);
  });

  it('fill each listener and its TLS with their defaults, in schema order', () => {
    const config = configFromObject({
      listeners: [
        { listen: '127.0.0.1:1', name: 'plain' },
        { name: 'tls', listen: '0.0.0.0:2', tls: TLS },
      ],
    });
    expect(config.listeners[0]).toEqual({ name: 'plain', listen: { host: '127.0.0.1', port: 1 }, tls: null, methods: [], staticTenant: null });
    expect(Object.keys(config.listeners[0]!)).toEqual(['name', 'listen', 'tls', 'methods', 'staticTenant']);
    expect(config.listeners[1]!.tls).toEqual({
      certFile: '/tls/server.pem',
      keyFile: '/tls/server.key',
      keyPassphrase: null,
      caFile: null,
      clientCertificates: 'none',
      minVersion: 'TLSv1.2',
    });
    expect(Object.isFrozen(config.listeners[1]!.tls)).toBe(true);
  });

  it.each<[string, unknown, string, RegExp]>([
    ['no listener', [], 'listeners', /must list at least one item/],
    ['a listener without a name', [{ listen: '127.0.0.1:1' }], 'listeners[0].name', /^is required/],
    ['a listener without an address', [{ name: 'a' }], 'listeners[0].listen', /^is required/],
    ['an empty name', [{ name: '', listen: '127.0.0.1:1' }], 'listeners[0].name', /must not be empty/],
    ['an unknown key', [{ name: 'a', listen: '127.0.0.1:1', mtls: true }], 'listeners[0].mtls', /unknown setting/],
    ['an unknown method', [{ name: 'a', listen: '127.0.0.1:1', methods: ['x509'] }], 'listeners[0].methods[0]', /must be one of mtls, scram, scram-passthrough, plain-jwt, static/],
    ['a repeated method', [{ name: 'a', listen: '127.0.0.1:1', methods: ['scram', 'scram'] }], 'listeners[0].methods', /more than once/],
    ['TLS without a certificate', [{ name: 'a', listen: '127.0.0.1:1', tls: { keyFile: 'k' } }], 'listeners[0].tls.certFile', /^is required/],
    ['TLS without a key', [{ name: 'a', listen: '127.0.0.1:1', tls: { certFile: 'c' } }], 'listeners[0].tls.keyFile', /^is required/],
    ['TLS as a string', [{ name: 'a', listen: '127.0.0.1:1', tls: 'on' }], 'listeners[0].tls', /must be a mapping of settings or null/],
    ['a bad client certificate mode', [{ name: 'a', listen: '127.0.0.1:1', tls: { ...TLS, clientCertificates: 'yes' } }], 'listeners[0].tls.clientCertificates', /none, optional, required/],
    ['TLS 1.1', [{ name: 'a', listen: '127.0.0.1:1', tls: { ...TLS, minVersion: 'TLSv1.1' } }], 'listeners[0].tls.minVersion', /TLSv1\.2, TLSv1\.3/],
    ['a listener that is not a mapping', ['127.0.0.1:1'], 'listeners[0]', /must be a mapping of settings/],
  ])('reject %s', (_name, listeners, path, message) => {
    const error = configError(() => configFromObject({ listeners }));
    expect(error.path).toBe(path);
    expect(error.message.startsWith(`${path}: `)).toBe(true);
    expect(error.message.slice(path.length + 2)).toMatch(message);
  });

  it('need unique names', () => {
    expect(
      problems({ listeners: [{ name: 'a', listen: '127.0.0.1:1' }, { name: 'a', listen: '127.0.0.1:2' }] }),
    ).toEqual(['listeners[1].name: "a" is already the name of listeners[0]; listener names must be unique (from settings)']);
  });

  it('need distinct addresses, wildcards included; port 0 may repeat', () => {
    expect(problems({ listeners: [{ name: 'a', listen: '127.0.0.1:1' }, { name: 'b', listen: '127.0.0.1:1' }] })).toEqual([
      'listeners[1].listen: 127.0.0.1:1 is already the address of listeners[0] "a" (from settings)',
    ]);
    expect(problems({ listeners: [{ name: 'a', listen: '0.0.0.0:1' }, { name: 'b', listen: 'localhost:1' }] })).toEqual([
      'listeners[1].listen: localhost:1 overlaps 0.0.0.0:1 of listeners[0] "a" (same port) (from settings)',
    ]);
    expect(problems({ listeners: [{ name: 'a', listen: '[::1]:1' }, { name: 'b', listen: '[0:0::1]:1' }] })[0]).toMatch(
      /^listeners\[1\]\.listen: \[0:0::1\]:1 is already the address of listeners\[0\] "a"/,
    );
    expect(problems({ listeners: [{ name: 'a', listen: '[::]:1' }, { name: 'b', listen: '10.0.0.1:1' }] })[0]).toMatch(/overlaps/);
    const fine = configFromObject({
      listeners: [
        { name: 'a', listen: '127.0.0.1:0' },
        { name: 'b', listen: '127.0.0.1:0' },
        { name: 'c', listen: '0.0.0.0:3' },
        { name: 'd', listen: '[::1]:3' },
        { name: 'e', listen: '127.0.0.1:4' },
        { name: 'f', listen: '127.0.0.2:4' },
      ],
    });
    expect(fine.listeners).toHaveLength(6);
  });
});

describe('static tenants', () => {
  const listener = (listen: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
    listeners: [{ name: 'side', listen, methods: ['static'], staticTenant: 'acme', ...extra }],
  });

  it.each(['127.0.0.1:1', '127.9.8.7:1', '[::1]:1', 'localhost:1', 'LOCALHOST.:1', '[::ffff:127.0.0.1]:1'])(
    'are allowed on loopback %s',
    (listen) => {
      expect(configFromObject(listener(listen)).listeners[0]!.staticTenant).toBe('acme');
    },
  );

  it('are allowed on any address with TLS that requires client certificates', () => {
    expect(configFromObject(listener('0.0.0.0:1', { tls: MTLS })).listeners[0]!.methods).toEqual(['static']);
  });

  it('are refused elsewhere, saying why', () => {
    expect(problems(listener('0.0.0.0:1'))).toEqual([
      'listeners[0].methods: "static" gives every connection the tenant without authenticating it, so it is ' +
        'allowed only on a loopback address (127.0.0.0/8, ::1, localhost) or on TLS with clientCertificates ' +
        '"required" (got 0.0.0.0:1 without TLS) (from settings)',
    ]);
    expect(problems(listener('10.0.0.1:1', { tls: { ...MTLS, clientCertificates: 'optional' } }))).toEqual([
      expect.stringMatching(/^listeners\[0\]\.methods: .*\(got 10\.0\.0\.1:1, clientCertificates "optional"\)/),
    ]);
    expect(problems(listener('128.0.0.1:1'))).toHaveLength(1);
  });

  it('need staticTenant exactly when the method is on', () => {
    expect(problems({ listeners: [{ name: 'a', listen: '127.0.0.1:1', methods: ['static'] }] })).toEqual([
      'listeners[0].staticTenant: is required when methods include "static" (from settings)',
    ]);
    expect(problems({ listeners: [{ name: 'a', listen: '127.0.0.1:1', staticTenant: 'acme' }] })).toEqual([
      'listeners[0].staticTenant: is set but methods do not include "static"; add "static" or remove staticTenant (from settings)',
    ]);
    expect(problems({ listeners: [{ name: 'a', listen: '127.0.0.1:1', methods: ['static'], staticTenant: '' }] })[0]).toMatch(
      /^listeners\[0\]\.staticTenant: must not be empty/,
    );
  });

  it('stand alone on their listener', () => {
    expect(problems({ listeners: [{ name: 'a', listen: '127.0.0.1:1', methods: ['static', 'scram'], staticTenant: 'acme' }], identity: { scram: { credentialsFile: '/x' } } })).toContainEqual(
      expect.stringMatching(/^listeners\[0\]\.methods: "static" fixes the tenant of every connection, so it cannot be combined/),
    );
  });

  it('recognise loopback hosts', () => {
    expect(['127.0.0.1', '127.255.255.254', '::1', '0:0:0:0:0:0:0:1', 'localhost', '::ffff:127.0.0.1'].every(isLoopbackHost)).toBe(true);
    expect(['0.0.0.0', '::', '10.0.0.1', '128.0.0.1', 'localhost.example.com', '::2', 'fe80::1%eth0', '::ffff:10.0.0.1'].some(isLoopbackHost)).toBe(false);
  });
});

describe('method mtls and client certificates', () => {
  const mtls = (tls: unknown): Record<string, unknown> => ({
    listeners: [{ name: 'a', listen: '0.0.0.0:1', tls, methods: ['mtls'] }],
    identity: { certificateRules: [RULE] },
  });

  it('works with a CA and requested certificates', () => {
    expect(configFromObject(mtls(MTLS)).listeners[0]!.tls!.clientCertificates).toBe('required');
    expect(configFromObject(mtls({ ...MTLS, clientCertificates: 'optional' })).listeners[0]!.methods).toEqual(['mtls']);
  });

  it('needs TLS', () => {
    expect(problems(mtls(null))).toEqual([
      'listeners[0].tls: method "mtls" needs TLS with a caFile and clientCertificates "optional" or "required" (from settings)',
    ]);
  });

  it('needs client certificates asked for, and a CA to verify them', () => {
    expect(problems(mtls(TLS))).toEqual([
      'listeners[0].tls.clientCertificates: must be "optional" or "required" for method "mtls" (got "none") (from settings)',
      'listeners[0].tls.caFile: is required by method "mtls": client certificates are verified against this CA bundle only (from settings)',
    ]);
  });

  it('needs at least one certificate rule', () => {
    expect(problems({ ...mtls(MTLS), identity: {} })).toEqual([
      'identity.certificateRules: needs at least one rule for method "mtls" (listeners[0] "a"): no certificate would map to a tenant (from settings)',
    ]);
  });

  it('a listener that asks for client certificates needs a CA even without mtls', () => {
    const tls = { ...TLS, clientCertificates: 'optional' };
    expect(problems({ listeners: [{ name: 'a', listen: '0.0.0.0:1', tls }] })).toEqual([
      'listeners[0].tls.caFile: is required when clientCertificates is "optional": client certificates are verified against this CA bundle only (from settings)',
    ]);
  });

  it('reports the file line of the listener', () => {
    const file = files.yaml(
      ['listeners:', '  - name: a', '    listen: 0.0.0.0:1', '    methods: [mtls]', '    tls:', '      certFile: c', '      keyFile: k'].join('\n'),
    );
    const error = configError(() => loadConfig({ file, env: {} })) as ConfigValidationError;
    expect(error.issues[0]).toEqual({
      path: 'listeners[0].tls.clientCertificates',
      message: `must be "optional" or "required" for method "mtls" (got "none") (from ${file}:5)`,
    });
  });
});

describe('secrets', () => {
  const withPassphrase = {
    listeners: [{ name: 'a', listen: '127.0.0.1:1', tls: { ...TLS, keyPassphrase: 'hunter2' } }],
  };

  it('keyPassphrase is write-only and masked in print-config', () => {
    expect(schemaAt(['listeners', 0, 'tls', 'keyPassphrase'])?.writeOnly).toBe(true);
    const config = configFromObject(withPassphrase);
    expect(config.listeners[0]!.tls!.keyPassphrase).toBe('hunter2');
    const text = formatConfigYaml(config);
    expect(text).not.toContain('hunter2');
    expect(text).toContain('keyPassphrase: "****"');
  });

  it('is never shown in error messages, even inside a shown object', () => {
    const error = configError(() =>
      configFromObject({ listeners: [{ name: 'a', listen: '127.0.0.1:1', tls: { keyPassphrase: 'hunter2', keyFile: 'k' } }] }),
    ) as ConfigValidationError;
    expect(error.issues.map((issue) => issue.path)).toEqual(['listeners[0].tls.certFile']);
    const typeError = configError(() =>
      configFromObject({ listeners: [{ name: 'a', listen: '127.0.0.1:1', tls: { ...TLS, keyPassphrase: 42 } }] }),
    );
    expect(typeError.message).toMatch(/^listeners\[0\]\.tls\.keyPassphrase: must be a string or null \(got "\*\*\*\*"/);
    const listError = configError(() =>
      configFromObject({ listeners: [{ name: 'a', listen: '127.0.0.1:1', tls: { ...TLS, keyPassphrase: 'hunter2' } }, 'x'] }),
    );
    expect(listError.message).not.toContain('hunter2');
    const whole = configError(() =>
      loadConfig({ env: { MTP_LISTENERS: JSON.stringify([{ name: 'a', listen: '127.0.0.1:1', tls: { ...TLS, keyPassphrase: 'hunter2', x: 1 } }]) } }),
    );
    expect(whole.message).not.toContain('hunter2');
    const broken = configError(() =>
      loadConfig({ env: { MTP_LISTENERS: '[{"tls":{"keyPassphrase":"hunter2"' } }),
    );
    expect(broken.message).toBe('listeners: must be a list (got text not shown (it names a secret field), from MTP_LISTENERS)');
  });
});

describe('certificate rules', () => {
  it('take the six certificate fields', () => {
    const fields = ['san-uri', 'san-dns', 'san-email', 'subject-cn', 'subject-ou', 'subject-o'];
    const config = configFromObject({ identity: { certificateRules: fields.map((field) => ({ field, pattern: '^(?<tenant>.+)$' })) } });
    expect(config.identity.certificateRules.map((rule) => rule.field)).toEqual(fields);
  });

  it.each<[string, Record<string, unknown>, string]>([
    ['an invalid expression', { field: 'san-uri', pattern: '^(?<tenant>[a-z+$' }, 'identity.certificateRules[0].pattern: is not a valid JavaScript regular expression (Unicode mode): '],
    ['an escape Unicode mode refuses', { field: 'san-dns', pattern: '^(?<tenant>[a-z\\-]+)\\.svc\\-x$' }, 'identity.certificateRules[0].pattern: is not a valid JavaScript regular expression (Unicode mode): '],
    ['no tenant group', { field: 'subject-cn', pattern: '^([a-z]+)$' }, 'identity.certificateRules[0].pattern: must have a named group "tenant", e.g. (?<tenant>[a-z0-9-]+) (from settings)'],
    ['another group name', { field: 'subject-cn', pattern: '^(?<team>[a-z]+)$' }, 'identity.certificateRules[0].pattern: must have a named group "tenant"'],
  ])('reject %s', (_name, rule, start) => {
    const [line] = problems({ identity: { certificateRules: [rule] } });
    expect(line?.startsWith(start)).toBe(true);
  });

  it.each<[string, Record<string, unknown>, string, RegExp]>([
    ['an unknown field', { field: 'issuer-cn', pattern: '(?<tenant>x)' }, 'identity.certificateRules[0].field', /must be one of san-uri/],
    ['a missing pattern', { field: 'san-uri' }, 'identity.certificateRules[0].pattern', /is required/],
    ['an unknown key', { field: 'san-uri', pattern: '(?<tenant>x)', flags: 'i' }, 'identity.certificateRules[0].flags', /unknown setting/],
  ])('reject %s in the schema', (_name, rule, path, message) => {
    const error = configError(() => configFromObject({ identity: { certificateRules: [rule] } }));
    expect(error.path).toBe(path);
    expect(error.message).toMatch(message);
  });

  it('inspectPattern finds the tenant group whatever the pattern', () => {
    expect(inspectPattern('^a(?<tenant>b)|c$')).toEqual({ hasTenantGroup: true });
    expect(inspectPattern('(?<x>a)\\k<x>(?<tenant>b)?')).toEqual({ hasTenantGroup: true });
    expect(inspectPattern('^abc$')).toEqual({ hasTenantGroup: false });
    expect(inspectPattern('a)|(b')).toHaveProperty('error');
    expect(inspectPattern('\\-(?<tenant>x)')).toEqual({ hasTenantGroup: true });
    expect(inspectPattern('\\-(?<tenant>x)', 'u')).toHaveProperty('error');
  });
});

describe('passthrough rules', () => {
  const rules = (...list: Record<string, unknown>[]): Record<string, unknown> => ({ identity: { passthrough: { rules: list } } });

  it('map by user, pattern or role', () => {
    const config = configFromObject(
      rules(
        { user: 'billing-app', db: 'admin', tenant: 'billing' },
        { userPattern: '^app-(?<tenant>[a-z]+)$' },
        { userPattern: '^legacy-', tenant: 'legacy' },
        { role: 'tenantAcme@admin', tenant: 'acme' },
      ),
    );
    expect(config.identity.passthrough.rules).toEqual([
      { user: 'billing-app', db: 'admin', tenant: 'billing' },
      { userPattern: '^app-(?<tenant>[a-z]+)$' },
      { userPattern: '^legacy-', tenant: 'legacy' },
      { role: 'tenantAcme@admin', tenant: 'acme' },
    ]);
  });

  it('need exactly one of user, userPattern and role', () => {
    expect(problems(rules({ tenant: 'a' }))).toEqual([
      'identity.passthrough.rules[0]: must have exactly one of user, userPattern or role (got none) (from settings)',
    ]);
    expect(problems(rules({ user: 'u', role: 'r', tenant: 'a' }))).toEqual([
      'identity.passthrough.rules[0]: must have exactly one of user, userPattern or role (got user and role) (from settings)',
    ]);
  });

  it('need a tenant unless the pattern has a tenant group, and not both', () => {
    expect(problems(rules({ user: 'u' }))).toEqual([
      'identity.passthrough.rules[0].tenant: is required unless userPattern has a named group "tenant" (from settings)',
    ]);
    expect(problems(rules({ userPattern: '^app-' }))).toHaveLength(1);
    expect(problems(rules({ userPattern: '^app-(?<tenant>.+)$', tenant: 'x' }))).toEqual([
      'identity.passthrough.rules[0].tenant: conflicts with the "tenant" group of userPattern; set only one (from settings)',
    ]);
  });

  it('need the role database and db to agree', () => {
    expect(problems(rules({ role: 'reader@acme', db: 'other', tenant: 'a' }))).toEqual([
      'identity.passthrough.rules[0].db: conflicts with the database in role "reader@acme"; set only one (from settings)',
    ]);
    expect(configFromObject(rules({ role: 'reader@acme', db: 'acme', tenant: 'a' })).identity.passthrough.rules).toHaveLength(1);
  });

  it('need a valid userPattern', () => {
    expect(problems(rules({ userPattern: '(' }))[0]).toMatch(
      /^identity\.passthrough\.rules\[0\]\.userPattern: is not a valid JavaScript regular expression: /,
    );
  });

  it('reject unknown keys and empty values', () => {
    expect(configError(() => configFromObject(rules({ name: 'u', tenant: 'a' }))).path).toBe('identity.passthrough.rules[0].name');
    expect(configError(() => configFromObject(rules({ user: '', tenant: 'a' }))).message).toMatch(/rules\[0\]\.user: must not be empty/);
  });

  it('method scram-passthrough needs at least one rule', () => {
    expect(problems({ listeners: [{ name: 'a', listen: '127.0.0.1:1', methods: ['scram-passthrough'] }] })).toEqual([
      'identity.passthrough.rules: needs at least one rule for method "scram-passthrough" (listeners[0] "a"): no user would map to a tenant',
    ]);
  });
});

describe('scram and plain-jwt', () => {
  const using = (method: string, identity: Record<string, unknown> = {}): Record<string, unknown> => ({
    listeners: [
      { name: 'local', listen: '127.0.0.1:1' },
      { name: 'remote', listen: '0.0.0.0:2', methods: [method] },
    ],
    identity,
  });

  it('scram needs a credentials file', () => {
    expect(problems(using('scram'))).toEqual([
      'identity.scram.credentialsFile: is required by method "scram" (listeners[1] "remote") (from settings)',
    ]);
    const config = configFromObject(using('scram', { scram: { credentialsFile: '/etc/mtp/users.yaml', mechanisms: ['SCRAM-SHA-256'] } }));
    expect(config.identity.scram).toEqual({ credentialsFile: '/etc/mtp/users.yaml', mechanisms: ['SCRAM-SHA-256'] });
  });

  it('scram mechanisms are SCRAM-SHA-256 and SCRAM-SHA-1, at least one', () => {
    expect(configError(() => configFromObject({ identity: { scram: { mechanisms: [] } } })).message).toMatch(
      /^identity\.scram\.mechanisms: must list at least one item/,
    );
    expect(configError(() => configFromObject({ identity: { scram: { mechanisms: ['PLAIN'] } } })).path).toBe(
      'identity.scram.mechanisms[0]',
    );
  });

  it('plain-jwt needs a key file or a JWKS file, and an audience', () => {
    expect(problems(using('plain-jwt'))).toEqual([
      'identity.jwt.keyFile: method "plain-jwt" (listeners[1] "remote") needs keyFile or jwksFile to verify tokens with (from settings)',
      'identity.jwt.audience: is required by method "plain-jwt" (listeners[1] "remote"): tokens minted for other services must not be accepted (from settings)',
    ]);
    const jwt = { jwksFile: '/etc/mtp/jwks.json', audience: 'mongo-tenant-proxy', tenantClaim: 'kubernetes.io.namespace' };
    expect(configFromObject(using('plain-jwt', { jwt })).identity.jwt).toEqual({
      keyFile: null,
      jwksFile: '/etc/mtp/jwks.json',
      audience: 'mongo-tenant-proxy',
      issuer: null,
      tenantClaim: 'kubernetes.io.namespace',
      algorithms: ['RS256', 'ES256', 'EdDSA'],
      clockToleranceSeconds: 30,
    });
  });

  it('never takes both a key file and a JWKS file', () => {
    expect(problems({ identity: { jwt: { keyFile: 'a.pem', jwksFile: 'b.json' } } })).toEqual([
      'identity.jwt.jwksFile: set only one of keyFile and jwksFile (from settings)',
    ]);
  });

  it('accepts the asymmetric JWS algorithms jose verifies, never HMAC or none', () => {
    expect(configFromObject({ identity: { jwt: { algorithms: ['PS256', 'ES384', 'Ed25519'] } } }).identity.jwt.algorithms).toEqual([
      'PS256',
      'ES384',
      'Ed25519',
    ]);
    expect(configError(() => configFromObject({ identity: { jwt: { algorithms: ['HS256'] } } })).path).toBe('identity.jwt.algorithms[0]');
    expect(defaultConfig().identity.jwt.algorithms.some((alg) => alg.startsWith('HS'))).toBe(false);
    expect(configError(() => configFromObject({ identity: { jwt: { algorithms: ['none'] } } })).path).toBe('identity.jwt.algorithms[0]');
    expect(configError(() => configFromObject({ identity: { jwt: { algorithms: ['rs256'] } } })).path).toBe('identity.jwt.algorithms[0]');
    expect(configError(() => configFromObject({ identity: { jwt: { algorithms: [] } } })).path).toBe('identity.jwt.algorithms');
  });

  it('bounds the clock tolerance', () => {
    expect(configError(() => configFromObject({ identity: { jwt: { clockToleranceSeconds: -1 } } })).path).toBe(
      'identity.jwt.clockToleranceSeconds',
    );
  });

  it('unused methods need nothing', () => {
    const config = configFromObject({ listeners: [{ name: 'a', listen: '127.0.0.1:1', methods: ['static'], staticTenant: 't' }] });
    expect(config.identity).toEqual(defaultConfig().identity);
  });
});

describe('failure delay and the other identity settings', () => {
  it('baseMS may not exceed maxMS', () => {
    expect(problems({ identity: { failureDelay: { baseMS: 6000 } } })).toEqual([
      'identity.failureDelay.baseMS: must be <= maxMS (5000) (got 6000) (from settings)',
    ]);
    expect(configFromObject({ identity: { failureDelay: { baseMS: 0, maxMS: 0 } } }).identity.failureDelay).toEqual({ baseMS: 0, maxMS: 0 });
  });

  it('ranges are checked by the schema', () => {
    expect(configError(() => configFromObject({ identity: { reloadIntervalMS: 0 } })).path).toBe('identity.reloadIntervalMS');
    expect(configError(() => configFromObject({ identity: { maxTenantLabels: -1 } })).path).toBe('identity.maxTenantLabels');
    expect(configError(() => configFromObject({ identity: { failureDelay: { maxMS: 1e9 } } })).path).toBe('identity.failureDelay.maxMS');
    expect(configError(() => configFromObject({ identity: { certificateRule: [] } })).message).toContain('did you mean "certificateRules"?');
  });

  it('empty identity sections in YAML mean the defaults', () => {
    const file = files.yaml('identity:\n  scram:\n  jwt:\n');
    expect(loadConfig({ file, env: {} })).toEqual(defaultConfig());
  });
});

describe('a complete configuration with every method', () => {
  it('loads (the examples in config/example.yaml, uncommented)', () => {
    const file = files.yaml(
      String.raw`
listeners:
  - name: sidecar
    listen: 127.0.0.1:27018
    methods: [static]
    staticTenant: acme
  - name: tls
    listen: 0.0.0.0:27019
    tls:
      certFile: /etc/mtp/tls/server.pem
      keyFile: /etc/mtp/tls/server.key
      keyPassphrase: null
      caFile: /etc/mtp/tls/clients-ca.pem
      clientCertificates: optional
      minVersion: TLSv1.2
    methods: [mtls, scram]
    staticTenant: null
  - name: apps
    listen: 0.0.0.0:27020
    methods: [scram-passthrough, plain-jwt]
identity:
  certificateRules:
    - field: san-uri
      pattern: '^spiffe://cluster/ns/(?<tenant>[a-z0-9-]+)/sa/[a-z0-9-]+$'
    - field: subject-cn
      pattern: '^(?<tenant>[a-z0-9-]+)\.clients\.example\.com$'
  scram:
    credentialsFile: /etc/mtp/users.yaml
  passthrough:
    rules:
      - user: billing-app
        db: admin
        tenant: billing
      - userPattern: '^app-(?<tenant>[a-z0-9-]+)$'
      - role: tenantAcme@admin
        tenant: acme
  jwt:
    jwksFile: /etc/mtp/jwt/jwks.json
    audience: mongo-tenant-proxy
    issuer: https://kubernetes.default.svc.cluster.local
    tenantClaim: kubernetes.io.namespace
    algorithms: [RS256]
`,
    );
    const config = loadConfig({ file, env: {} });
    expect(config.listeners.map((listener) => listener.name)).toEqual(['sidecar', 'tls', 'apps']);
    expect(new RegExp(config.identity.certificateRules[0]!.pattern).exec('spiffe://cluster/ns/team-a/sa/web')?.groups?.['tenant']).toBe('team-a');
    expect(new RegExp(config.identity.certificateRules[1]!.pattern).exec('team-b.clients.example.com')?.groups?.['tenant']).toBe('team-b');
    // print-config output loads back to the same configuration.
    const again = loadConfig({ file: files.yaml(formatConfigYaml(config)), env: {} });
    expect(again).toEqual(config);
  });
});

describe('lists from the environment, as JSON', () => {
  it('MTP_LISTENERS sets every listener', () => {
    const config = loadConfig({
      env: {
        MTP_LISTENERS: JSON.stringify([
          { name: 'main', listen: '0.0.0.0:27018', methods: ['scram'] },
          { name: 'local', listen: '127.0.0.1:27019', methods: ['static'], staticTenant: 'ops' },
        ]),
        MTP_IDENTITY__SCRAM__CREDENTIALS_FILE: '/etc/mtp/users.yaml',
      },
    });
    expect(config.listeners.map((listener) => [listener.name, listener.listen.port, listener.methods])).toEqual([
      ['main', 27018, ['scram']],
      ['local', 27019, ['static']],
    ]);
  });

  it('replaces the file list whole', () => {
    const file = files.yaml('listeners:\n  - name: a\n    listen: 127.0.0.1:1\n  - name: b\n    listen: 127.0.0.1:2\n');
    const config = loadConfig({ file, env: { MTP_LISTENERS: '[{"name":"c","listen":"127.0.0.1:3"}]' } });
    expect(config.listeners.map((listener) => listener.name)).toEqual(['c']);
  });

  it('rules lists too', () => {
    const config = loadConfig({
      env: {
        MTP_IDENTITY__CERTIFICATE_RULES: JSON.stringify([RULE]),
        MTP_IDENTITY__PASSTHROUGH__RULES: '[{"role": "readWrite@acme", "tenant": "acme"}]',
      },
    });
    expect(config.identity.certificateRules).toEqual([RULE]);
    expect(config.identity.passthrough.rules).toEqual([{ role: 'readWrite@acme', tenant: 'acme' }]);
    expect(loadConfig({ env: { MTP_IDENTITY__CERTIFICATE_RULES: ' ' } }).identity.certificateRules).toEqual([]);
  });

  it('reject text that is not a JSON list, naming the variable', () => {
    expect(configError(() => loadConfig({ env: { MTP_LISTENERS: '0.0.0.0:27018' } })).message).toBe(
      'listeners: must be a list (got "0.0.0.0:27018", from MTP_LISTENERS)',
    );
    expect(configError(() => loadConfig({ env: { MTP_LISTENERS: '[{"name": "a",' } })).message).toMatch(
      /^listeners: must be a list \(got "\[\{\\"name\\": \\"a\\",", from MTP_LISTENERS\)$/,
    );
    expect(configError(() => loadConfig({ env: { MTP_LISTENERS: '[{"name":"a"}]' } })).message).toBe(
      'listeners[0].listen: is required (from MTP_LISTENERS)',
    );
    expect(configError(() => loadConfig({ env: { MTP_IDENTITY__CERTIFICATE_RULES: '[{"field":"san-uri","pattern":"x"}]' } })).message).toBe(
      'identity.certificateRules[0].pattern: must have a named group "tenant", e.g. (?<tenant>[a-z0-9-]+) (from MTP_IDENTITY__CERTIFICATE_RULES)',
    );
  });

  it('have no variables for single items, and say how to set the list', () => {
    const error = configError(() => loadConfig({ env: { MTP_LISTENERS__0__LISTEN: '127.0.0.1:1' } }));
    expect(error.path).toBe('MTP_LISTENERS__0__LISTEN');
    expect(error.message).toContain('"listeners" is a list; set it whole as JSON in MTP_LISTENERS');
    expect(configError(() => loadConfig({ env: { MTP_IDENTITY__PASSTHROUGH__RULES__USER: 'x' } })).message).toContain(
      'MTP_IDENTITY__PASSTHROUGH__RULES',
    );
  });

  it('set the other identity fields by name; an empty value means null', () => {
    const config = loadConfig({
      env: {
        MTP_IDENTITY__JWT__KEY_FILE: '/k.pem',
        MTP_IDENTITY__JWT__AUDIENCE: 'aud',
        MTP_IDENTITY__JWT__ISSUER: '',
        MTP_IDENTITY__JWT__ALGORITHMS: 'ES256,EdDSA',
        MTP_IDENTITY__JWT__CLOCK_TOLERANCE_SECONDS: '5',
        MTP_IDENTITY__FAILURE_DELAY__BASE_MS: '0',
        MTP_IDENTITY__FAILURE_DELAY__MAX_MS: '0',
        MTP_IDENTITY__RELOAD_INTERVAL_MS: '250',
        MTP_IDENTITY__MAX_TENANT_LABELS: '10',
        MTP_IDENTITY__SCRAM__MECHANISMS: 'SCRAM-SHA-256',
      },
    });
    expect(config.identity.jwt).toMatchObject({ keyFile: '/k.pem', audience: 'aud', issuer: null, algorithms: ['ES256', 'EdDSA'], clockToleranceSeconds: 5 });
    expect(config.identity.failureDelay).toEqual({ baseMS: 0, maxMS: 0 });
    expect(config.identity.reloadIntervalMS).toBe(250);
    expect(config.identity.maxTenantLabels).toBe(10);
    expect(config.identity.scram.mechanisms).toEqual(['SCRAM-SHA-256']);
  });
});

describe('--listen and MTP_LISTEN set the first listener', () => {
  const first = (config: { listeners: readonly { name: string; listen: { host: string; port: number } }[] }) => ({
    name: config.listeners[0]!.name,
    listen: config.listeners[0]!.listen,
    count: config.listeners.length,
  });

  it('of the default listener when none is configured', () => {
    expect(first(loadConfig({ env: {}, flags: { listen: '0.0.0.0:1' } }))).toEqual({ name: 'default', listen: { host: '0.0.0.0', port: 1 }, count: 1 });
    expect(first(loadConfig({ env: { MTP_LISTEN: '[::1]:2' } }))).toEqual({ name: 'default', listen: { host: '::1', port: 2 }, count: 1 });
  });

  it('creating the default listener when the file lists none', () => {
    const file = files.yaml('listeners: []\n');
    expect(first(loadConfig({ file, env: {}, flags: { listen: '127.0.0.1:3' } }))).toEqual({
      name: 'default',
      listen: { host: '127.0.0.1', port: 3 },
      count: 1,
    });
    expect(configError(() => loadConfig({ file, env: {} })).message).toBe(
      `listeners: must list at least one item (got [], from ${file}:1)`,
    );
  });

  it('of the file listeners, keeping the others and every other setting', () => {
    const file = files.yaml(
      [
        'listeners:',
        '  - name: side',
        '    listen: 127.0.0.1:1',
        '    methods: [static]',
        '    staticTenant: acme',
        '  - name: other',
        '    listen: 127.0.0.1:2',
      ].join('\n'),
    );
    const config = loadConfig({ file, env: { MTP_LISTEN: '127.0.0.1:5' }, flags: { listen: '127.0.0.1:6' } });
    expect(config.listeners).toEqual([
      { name: 'side', listen: { host: '127.0.0.1', port: 6 }, tls: null, methods: ['static'], staticTenant: 'acme' },
      { name: 'other', listen: { host: '127.0.0.1', port: 2 }, tls: null, methods: [], staticTenant: null },
    ]);
    expect(first(loadConfig({ file, env: { MTP_LISTEN: '127.0.0.1:5' } })).listen.port).toBe(5);
  });

  it('of the MTP_LISTENERS list, whichever order the variables come in', () => {
    const config = loadConfig({
      env: { MTP_LISTEN: '127.0.0.1:9', MTP_LISTENERS: '[{"name":"x","listen":"127.0.0.1:1"},{"name":"y","listen":"127.0.0.1:2"}]' },
    });
    expect(config.listeners.map((listener) => [listener.name, listener.listen.port])).toEqual([
      ['x', 9],
      ['y', 2],
    ]);
  });

  it('name the flag or variable in errors, including the cross-field rules', () => {
    expect(configError(() => loadConfig({ env: { MTP_LISTEN: 'nope' } })).message).toMatch(
      /^listeners\[0\]\.listen: must be "host:port".*from MTP_LISTEN\)$/,
    );
    const file = files.yaml('listeners:\n  - name: a\n    listen: 127.0.0.1:1\n  - name: b\n    listen: 127.0.0.1:2\n');
    expect(configError(() => loadConfig({ file, env: {}, flags: { listen: '127.0.0.1:2' } })).message).toBe(
      `listeners[1].listen: 127.0.0.1:2 is already the address of listeners[0] "a" (from ${file}:5)`,
    );
    const side = files.yaml('listeners:\n  - name: a\n    listen: 127.0.0.1:1\n    methods: [static]\n    staticTenant: t\n');
    expect(configError(() => loadConfig({ file: side, env: {}, flags: { listen: '0.0.0.0:1' } })).message).toMatch(
      /^listeners\[0\]\.methods: "static" gives every connection .* \(got 0\.0\.0\.0:1 without TLS\) \(from .*:4\)$/,
    );
  });

  it('leave a listeners value that is not a list for validation to report', () => {
    const file = files.yaml('listeners: 127.0.0.1:1\n');
    const error = configError(() => loadConfig({ file, env: {}, flags: { listen: '127.0.0.1:2' } }));
    expect(error.message).toMatch(/^listeners: must be a list/);
    const item = files.yaml('listeners: [x]\n');
    expect(configError(() => loadConfig({ file: item, env: {}, flags: { listen: '127.0.0.1:2' } })).path).toBe('listeners[0]');
  });

  it('are documented as the first listener address, with the default listener address', () => {
    expect(preferredEnvNameOf(['listeners', 0, 'listen'])).toBe('MTP_LISTEN');
    expect(schemaAt(['listeners', 0, 'listen'])?.default).toBe('127.0.0.1:27018');
    expect(schemaAt(['listeners', 1, 'listen'])?.default).toBeUndefined();
    expect(schemaAt(['listeners', 0, 'nope'])).toBeUndefined();
    expect(schemaAt(['limits', 0])).toBeUndefined();
    expect(schemaAt(['listeners', 0, 'tls', 'minVersion'])?.default).toBe('TLSv1.2');
  });
});
