// What a reload applies live and what needs a restart (src/config/reload.ts).
import { describe, expect, it } from 'vitest';
import { changedPaths, configFromObject, planReload, type ProxyConfig } from '../../../src/config/index.js';

const UPSTREAM = 'mongodb://proxy:hunter2@db:27017/';

function config(values: Record<string, unknown> = {}): ProxyConfig {
  return configFromObject({
    listeners: [
      { name: 'app', listen: '127.0.0.1:27018', methods: ['static'], staticTenant: 'acme' },
      {
        name: 'tls',
        listen: '0.0.0.0:27019',
        methods: ['mtls'],
        tls: { ...tlsFile(), clientCertificates: 'required' },
      },
    ],
    identity: { certificateRules: [{ field: 'subject-cn', pattern: '^(?<tenant>[a-z]+)$' }] },
    upstream: { uri: UPSTREAM },
    ...values,
  });
}

describe('changedPaths', () => {
  it('names changed fields, compares host:port addresses and scalar lists whole, and items of object lists one by one', () => {
    const before = config();
    const after = config({
      listeners: [
        { name: 'app', listen: '127.0.0.1:27028', methods: ['static'], staticTenant: 'acme' },
        { name: 'tls', listen: '0.0.0.0:27019', methods: ['mtls', 'scram'], tls: { ...tlsFile(), clientCertificates: 'required' } },
      ],
      identity: { certificateRules: [{ field: 'subject-cn', pattern: '^(?<tenant>[a-z]+)$' }], scram: { credentialsFile: 'users.yaml' } },
      compression: { compressors: ['zlib'] },
      metrics: { listen: '127.0.0.1:9300' },
    });
    expect(changedPaths(before, after)).toEqual([
      'listeners[0].listen',
      'listeners[1].methods',
      'identity.scram.credentialsFile',
      'metrics.listen',
      'compression.compressors',
    ]);
    expect(changedPaths(before, config())).toEqual([]);
  });

  it('reports the items a list gained or lost, never values', () => {
    const one = config({ isolation: { namespaces: [{ match: 'app.*', model: 'shared-collection' }] } });
    const two = config({ isolation: { namespaces: [{ match: 'app.*', model: 'shared-collection' }, { match: 'ref.*', access: 'shared-readonly' }] } });
    expect(changedPaths(one, two)).toEqual(['isolation.namespaces[1]']);
    expect(changedPaths(two, one)).toEqual(['isolation.namespaces[1]']);
    const secret = config({ isolation: { sessionKey: 'k'.repeat(40) } });
    expect(changedPaths(config(), secret)).toEqual(['isolation.sessionKey']);
    expect(changedPaths(config({ upstream: { uri: 'mongodb://proxy:other@db:27017/' } }), config())).toEqual(['upstream.uri']);
  });
});

function tlsFile(): { certFile: string; keyFile: string; caFile: string } {
  return { certFile: 'server.pem', keyFile: 'server.key', caFile: 'ca.pem' };
}

describe('planReload', () => {
  it('applies policy, identity, limits, log level, audit, compression and listener methods and TLS files live', () => {
    const running = config();
    const next = config({
      listeners: [
        { name: 'app', listen: '127.0.0.1:27018', methods: ['static'], staticTenant: 'globex' },
        {
          name: 'tls',
          listen: '0.0.0.0:27019',
          methods: ['mtls'],
          tls: { certFile: 'new.pem', keyFile: 'new.key', caFile: 'ca.pem', clientCertificates: 'required', minVersion: 'TLSv1.3' },
        },
      ],
      isolation: { namespaces: [{ match: 'app.secrets', access: 'denied' }] },
      audit: { destination: '/var/log/audit.jsonl' },
      limits: { maxConnectionsPerTenant: 3, clientIdleTimeoutMS: 1000, maxConnections: 20 },
      log: { level: 'debug' },
      compression: { compressors: [] },
      reload: { watchConfigFile: false },
    });
    const plan = planReload(running, next);
    expect(plan.requiresRestart).toEqual([]);
    expect(plan.config).toEqual(next);
    expect(plan.applied).toEqual([
      'listeners[0].staticTenant',
      'listeners[1].tls.certFile',
      'listeners[1].tls.keyFile',
      'listeners[1].tls.minVersion',
      'isolation.namespaces[0]',
      'log.level',
      'audit.destination',
      'reload.watchConfigFile',
      'compression.compressors',
      'limits.maxConnections',
      'limits.clientIdleTimeoutMS',
      'limits.maxConnectionsPerTenant',
      // Derived from maxConnections (config/derived.ts).
      'limits.maxUnauthenticatedConnections',
    ]);
    expect(Object.isFrozen(plan.config.limits)).toBe(true);
  });

  it('keeps upstream, metrics.listen, session key, tenant label budget and TLS handshake timeout at their running values', () => {
    const running = config();
    const next = config({
      upstream: { uri: 'mongodb://proxy:other@db2:27017/', connectTimeoutMS: 1 },
      metrics: { listen: 'off' },
      identity: { certificateRules: running.identity.certificateRules, maxTenantLabels: 5 },
      isolation: { sessionKey: 's'.repeat(32), maxTimeMS: 5 },
      limits: { tlsHandshakeTimeoutMS: 1, frameTimeoutMS: 2 },
    });
    const plan = planReload(running, next);
    expect(plan.requiresRestart).toEqual([
      'identity.maxTenantLabels',
      'isolation.sessionKey',
      'upstream.uri',
      'upstream.connectTimeoutMS',
      'metrics.listen',
      'limits.tlsHandshakeTimeoutMS',
    ]);
    expect(plan.applied).toEqual(['isolation.maxTimeMS', 'limits.frameTimeoutMS']);
    expect(plan.config.upstream).toEqual(running.upstream);
    expect(plan.config.metrics.listen).toEqual(running.metrics.listen);
    expect(plan.config.isolation.sessionKey).toBeNull();
    expect(plan.config.isolation.maxTimeMS).toBe(5);
    expect(plan.config.limits).toMatchObject({ tlsHandshakeTimeoutMS: 10_000, frameTimeoutMS: 2 });
    // Reported again on the next reload, as long as the difference stands.
    expect(planReload(plan.config, next).requiresRestart).toEqual(plan.requiresRestart);
    expect(planReload(plan.config, next).applied).toEqual([]);
  });

  it('keeps a listener whose socket changed (address, name, TLS on or off, client certificate mode) entirely as it runs', () => {
    const running = config();
    const [app, secure] = running.listeners;
    const cases: Array<[string, ProxyConfig['listeners'], string[]]> = [
      ['address', [{ ...app!, listen: { host: '0.0.0.0', port: 27018 }, staticTenant: 'globex' }, secure!], ['listeners[0].listen', 'listeners[0].staticTenant']],
      ['name', [{ ...app!, name: 'renamed' }, secure!], ['listeners[0].name']],
      ['TLS turned off', [app!, { ...secure!, tls: null, methods: ['static'], staticTenant: 'x' }], ['listeners[1].tls', 'listeners[1].methods', 'listeners[1].staticTenant']],
      ['client certificates', [app!, { ...secure!, tls: { ...secure!.tls!, clientCertificates: 'optional', certFile: 'new.pem' } }], ['listeners[1].tls.certFile', 'listeners[1].tls.clientCertificates']],
    ];
    for (const [name, listeners, restart] of cases) {
      const plan = planReload(running, { ...running, listeners });
      expect(plan.requiresRestart, name).toEqual(restart);
      expect(plan.applied, name).toEqual([]);
      expect(plan.config.listeners, name).toEqual(running.listeners);
    }
  });

  it('reports listeners added or removed and keeps the running ones', () => {
    const running = config();
    const added = { ...running, listeners: [...running.listeners, { ...running.listeners[0]!, name: 'third', listen: { host: '127.0.0.1', port: 27020 } }] };
    expect(planReload(running, added).requiresRestart).toEqual(['listeners[2]']);
    expect(planReload(running, added).config.listeners).toHaveLength(2);
    const removed = { ...running, listeners: [running.listeners[0]!] };
    expect(planReload(running, removed).requiresRestart).toEqual(['listeners[1]']);
    expect(planReload(running, removed).config.listeners).toEqual(running.listeners);
  });
});
