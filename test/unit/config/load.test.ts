import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  configFromObject,
  ConfigValidationError,
  defaultConfig,
  loadConfig,
  type ProxyConfig,
} from '../../../src/config/index.js';
import { ConfigError } from '../../../src/errors.js';
import { configError, tempDir } from '../../helpers/config.js';

const files = tempDir('mtp-config-');
afterAll(() => files.remove());

const DEFAULTS: ProxyConfig = {
  listeners: [{ name: 'default', listen: { host: '127.0.0.1', port: 27018 }, tls: null, methods: [], staticTenant: null }],
  identity: {
    certificateRules: [],
    scram: { credentialsFile: null, mechanisms: ['SCRAM-SHA-256', 'SCRAM-SHA-1'] },
    passthrough: { rules: [] },
    jwt: {
      keyFile: null,
      jwksFile: null,
      audience: null,
      issuer: null,
      tenantClaim: 'tenant',
      algorithms: ['RS256', 'ES256', 'EdDSA'],
      clockToleranceSeconds: 30,
    },
    failureDelay: { baseMS: 100, maxMS: 5_000 },
    reloadIntervalMS: 1_000,
    maxTenantLabels: 100,
  },
  isolation: {
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
  },
  upstream: {
    uri: 'mongodb://127.0.0.1:27017/',
    connectTimeoutMS: 10_000,
    maxIdleConnections: 16,
    idleTimeoutMS: 60_000,
    maxPoolSize: 100,
    minPoolSize: 0,
    maxLifetimeMS: 0,
    waitQueueTimeoutMS: 10_000,
    maxPoolConnectionsPerTenant: 50,
    serverSelectionTimeoutMS: 10_000,
    heartbeatFrequencyMS: 10_000,
    localThresholdMS: 15,
    socketTimeoutMS: 0,
    retry: { maxAttempts: 3, initialBackoffMS: 50, maxBackoffMS: 1_000 },
    circuitBreaker: { failureThreshold: 5, openMS: 10_000, halfOpenProbes: 1, initialOpenMS: 250, probeIntervalMS: 250 },
  },
  metrics: { listen: { host: '127.0.0.1', port: 9216 }, maxDatabaseLabels: 20, readinessFollowsUpstream: true },
  log: { level: 'info' },
  audit: { destination: 'stdout', maxEventBytes: 8192, rewrites: false },
  reload: { watchConfigFile: true, intervalMS: 2_000 },
  compression: { compressors: ['zstd', 'snappy', 'zlib'], zlibLevel: 6 },
  handshake: { presentAs: 'auto' },
  limits: {
    maxMessageSizeBytes: 48_000_000,
    maxBsonDepth: 200,
    maxConnections: 10_000,
    clientIdleTimeoutMS: 600_000,
    frameTimeoutMS: 30_000,
    tlsHandshakeTimeoutMS: 10_000,
    drainTimeoutMS: 30_000,
    // Issue 15: per-tenant limits on by default, sized from the global ones (config/derived.ts).
    maxConnectionsPerTenant: 2_500,
    maxInFlightPerTenant: 100,
    maxUnauthenticatedConnections: 2_500,
    authTimeoutMS: 30_000,
    maxBufferedBytes: 268_435_456,
    bytesPerSecondPerTenant: 67_108_864,
    cpuMillisPerSecondPerTenant: 500,
    operationsPerSecondPerTenant: 0,
    operationsBurstPerTenant: 0,
    maxOpenCursorsPerTenant: 100,
  },
};

describe('defaults', () => {
  it('applies every documented default', () => {
    expect(loadConfig({ env: {} })).toEqual(DEFAULTS);
    expect(defaultConfig()).toEqual(DEFAULTS);
  });

  it('returns a deeply frozen object', () => {
    const config = loadConfig({ env: {} });
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.listeners[0]!.listen)).toBe(true);
    expect(Object.isFrozen(config.identity.scram.mechanisms)).toBe(true);
    expect(Object.isFrozen(config.compression.compressors)).toBe(true);
    expect(() => {
      (config.limits as { maxConnections: number }).maxConnections = 1;
    }).toThrow(TypeError);
  });

  it('gives each load its own objects', () => {
    const a = loadConfig({ env: {} });
    const b = loadConfig({ env: {} });
    expect(a.compression.compressors).not.toBe(b.compression.compressors);
  });
});

describe('precedence: defaults < file < environment < flags', () => {
  const file = files.yaml(
    [
      'listeners:',
      '  - name: main',
      '    listen: 127.0.0.1:1001',
      'upstream:',
      '  uri: mongodb://file-host:27017/',
      '  connectTimeoutMS: 1111',
      'log:',
      '  level: debug',
      'limits:',
      '  maxConnections: 11',
      '  maxBsonDepth: 50',
    ].join('\n'),
  );

  it('the file overrides defaults, field by field', () => {
    const config = loadConfig({ file, env: {} });
    expect(config.listeners).toEqual([
      { name: 'main', listen: { host: '127.0.0.1', port: 1001 }, tls: null, methods: [], staticTenant: null },
    ]);
    expect(config.upstream).toEqual({ ...DEFAULTS.upstream, uri: 'mongodb://file-host:27017/', connectTimeoutMS: 1111 });
    // The per-tenant and unauthenticated connection limits follow maxConnections (a quarter, rounded up).
    expect(config.limits).toEqual({
      ...DEFAULTS.limits,
      maxConnections: 11,
      maxBsonDepth: 50,
      maxConnectionsPerTenant: 3,
      maxUnauthenticatedConnections: 3,
    });
    expect(config.log.level).toBe('debug');
  });

  it('the environment overrides the file', () => {
    const config = loadConfig({
      file,
      env: { MTP_LISTEN: '127.0.0.1:1002', MTP_LIMITS__MAX_CONNECTIONS: '22', MTP_LOG_LEVEL: 'warn' },
    });
    expect(config.listeners).toHaveLength(1);
    expect(config.listeners[0]).toMatchObject({ name: 'main', listen: { port: 1002 } });
    expect(config.limits.maxConnections).toBe(22);
    expect(config.limits.maxBsonDepth).toBe(50);
    expect(config.log.level).toBe('warn');
    expect(config.upstream.uri).toBe('mongodb://file-host:27017/');
  });

  it('flags override the environment', () => {
    const config = loadConfig({
      file,
      env: { MTP_LISTEN: '127.0.0.1:1002', MTP_UPSTREAM: 'mongodb://env-host/', MTP_LOG_LEVEL: 'warn' },
      flags: { listen: '127.0.0.1:1003', upstream: 'mongodb://flag-host/', logLevel: 'error', metricsListen: 'off' },
    });
    expect(config.listeners[0]).toMatchObject({ name: 'main', listen: { port: 1003 } });
    expect(config.upstream.uri).toBe('mongodb://flag-host/');
    expect(config.log.level).toBe('error');
    expect(config.metrics.listen).toBeNull();
    expect(config.upstream.connectTimeoutMS).toBe(1111);
  });

  it('MTP_CONFIG names the file when none is given, and an explicit file wins over it', () => {
    const other = files.yaml('listeners: [{ name: other, listen: 127.0.0.1:1009 }]\n');
    expect(loadConfig({ env: { MTP_CONFIG: file } }).listeners[0]!.listen.port).toBe(1001);
    expect(loadConfig({ file: other, env: { MTP_CONFIG: file } }).listeners[0]!.listen.port).toBe(1009);
    expect(loadConfig({ env: { MTP_CONFIG: '' } })).toEqual(DEFAULTS);
  });

  it('reads process.env when no environment is given', () => {
    const saved = process.env['MTP_LIMITS__MAX_BSON_DEPTH'];
    process.env['MTP_LIMITS__MAX_BSON_DEPTH'] = '33';
    try {
      expect(loadConfig().limits.maxBsonDepth).toBe(33);
    } finally {
      if (saved === undefined) delete process.env['MTP_LIMITS__MAX_BSON_DEPTH'];
      else process.env['MTP_LIMITS__MAX_BSON_DEPTH'] = saved;
    }
  });
});

describe('environment variables', () => {
  it('coerce values by the schema type', () => {
    const config = loadConfig({
      env: {
        MTP_UPSTREAM__CONNECT_TIMEOUT_MS: '2500',
        MTP_UPSTREAM__MAX_IDLE_CONNECTIONS: ' 0 ',
        MTP_COMPRESSION__COMPRESSORS: 'zlib, snappy',
        MTP_COMPRESSION__ZLIB_LEVEL: '-1',
        MTP_HANDSHAKE__PRESENT_AS: 'sharded',
        MTP_LIMITS__MAX_MESSAGE_SIZE_BYTES: '1048576',
      },
    });
    expect(config.upstream.connectTimeoutMS).toBe(2500);
    expect(config.upstream.maxIdleConnections).toBe(0);
    expect(config.compression).toEqual({ compressors: ['zlib', 'snappy'], zlibLevel: -1 });
    expect(config.handshake.presentAs).toBe('sharded');
    expect(config.limits.maxMessageSizeBytes).toBe(1_048_576);
  });

  it('accept lists as JSON and an empty list as no compression', () => {
    expect(loadConfig({ env: { MTP_COMPRESSION__COMPRESSORS: '["snappy"]' } }).compression.compressors).toEqual(['snappy']);
    expect(loadConfig({ env: { MTP_COMPRESSION__COMPRESSORS: '' } }).compression.compressors).toEqual([]);
  });

  it('have generic names for the explicit ones too', () => {
    const config = loadConfig({
      env: { MTP_UPSTREAM__URI: 'mongodb://generic/', MTP_METRICS__LISTEN: '0.0.0.0:9999', MTP_LOG__LEVEL: 'trace' },
    });
    expect(config.upstream.uri).toBe('mongodb://generic/');
    expect(config.metrics.listen).toEqual({ host: '0.0.0.0', port: 9999 });
    expect(config.log.level).toBe('trace');
  });

  it('MTP_METRICS_LISTEN=off or empty disables metrics', () => {
    expect(loadConfig({ env: { MTP_METRICS_LISTEN: 'off' } }).metrics.listen).toBeNull();
    expect(loadConfig({ env: { MTP_METRICS_LISTEN: '' } }).metrics.listen).toBeNull();
    expect(loadConfig({ env: { MTP_METRICS_LISTEN: 'OFF' } }).metrics.listen).toBeNull();
  });

  it('reject unknown MTP_ names, suggesting the closest one', () => {
    const error = configError(() => loadConfig({ env: { MTP_LIMITS__MAX_CONECTIONS: '5' } }));
    expect(error.path).toBe('MTP_LIMITS__MAX_CONECTIONS');
    expect(error.message).toContain('unknown setting');
    expect(error.message).toContain('MTP_LIMITS__MAX_CONNECTIONS');
    expect(configError(() => loadConfig({ env: { MTP_NOPE: 'x' } })).path).toBe('MTP_NOPE');
    expect(configError(() => loadConfig({ env: { MTP_LIMITS__: 'x' } })).path).toBe('MTP_LIMITS__');
  });

  it('reject a section name with a hint to set its fields', () => {
    const error = configError(() => loadConfig({ env: { MTP_LIMITS: '{}' } }));
    expect(error.path).toBe('MTP_LIMITS');
    expect(error.message).toContain('MTP_LIMITS__MAX_MESSAGE_SIZE_BYTES');
  });

  it('reject an explicit and a generic name that disagree', () => {
    const error = configError(() => loadConfig({ env: { MTP_LOG_LEVEL: 'warn', MTP_LOG__LEVEL: 'debug' } }));
    expect(error.message).toMatch(/MTP_LOG__LEVEL/);
    expect(loadConfig({ env: { MTP_LOG_LEVEL: 'warn', MTP_LOG__LEVEL: 'warn' } }).log.level).toBe('warn');
  });

  it('ignore Kubernetes service links and the test suite variables', () => {
    const config = loadConfig({
      env: {
        MTP_PORT: 'tcp://10.0.0.1:27018',
        MTP_PORT_27018_TCP_ADDR: '10.0.0.1',
        MTP_SERVICE_HOST: '10.0.0.1',
        MTP_SERVICE_PORT: '27018',
        MTP_TEST_LOG_LEVEL: 'debug',
        OTHER_VARIABLE: 'x',
      },
    });
    expect(config).toEqual(DEFAULTS);
  });

  it('report values that do not coerce with the field path and the variable', () => {
    const error = configError(() => loadConfig({ env: { MTP_LIMITS__MAX_CONNECTIONS: 'many' } }));
    expect(error.path).toBe('limits.maxConnections');
    expect(error.message).toBe('limits.maxConnections: must be an integer (got "many", from MTP_LIMITS__MAX_CONNECTIONS)');
  });
});

describe('validation errors name the field', () => {
  const cases: [string, Record<string, unknown>, string, RegExp][] = [
    ['too small', { limits: { maxConnections: 0 } }, 'limits.maxConnections', /must be >= 1 \(got 0/],
    ['too large', { limits: { maxBsonDepth: 5000 } }, 'limits.maxBsonDepth', /must be <= 1000 \(got 5000/],
    ['not an integer', { upstream: { connectTimeoutMS: 1.5 } }, 'upstream.connectTimeoutMS', /must be an integer \(got 1\.5/],
    ['a string for a number', { upstream: { idleTimeoutMS: '10s' } }, 'upstream.idleTimeoutMS', /got "10s"/],
    ['bad enum', { log: { level: 'verbose' } }, 'log.level', /must be one of fatal, error, warn, info, debug, trace, silent \(got "verbose"/],
    ['bad list item', { compression: { compressors: ['zstd', 'lz4'] } }, 'compression.compressors[1]', /must be one of zstd, snappy, zlib \(got "lz4"/],
    ['repeated list item', { compression: { compressors: ['zlib', 'zlib'] } }, 'compression.compressors', /must not list "zlib" more than once/],
    ['a list for a section', { limits: [1] }, 'limits', /must be a mapping of settings/],
    ['bad listen', { listeners: [{ name: 'a', listen: 'localhost' }] }, 'listeners[0].listen', /must be "host:port".*missing ":port"/],
    ['bad port', { listeners: [{ name: 'a', listen: '127.0.0.1:70000' }] }, 'listeners[0].listen', /port 70000 is above 65535/],
    ['bare IPv6', { listeners: [{ name: 'a', listen: '::1:27018' }] }, 'listeners[0].listen', /IPv6 addresses go in brackets/],
    ['bad metrics listen', { metrics: { listen: 'nowhere' } }, 'metrics.listen', /"host:port".* or "off"/],
    ['number for metrics listen', { metrics: { listen: 9216 } }, 'metrics.listen', /"host:port".* or "off" \(got 9216/],
    ['bad upstream scheme', { upstream: { uri: 'http://x' } }, 'upstream.uri', /mongodb:\/\/ or mongodb\+srv:\/\/ connection string: must start with/],
    ['upstream without host', { upstream: { uri: 'mongodb:///db' } }, 'upstream.uri', /has no host/],
    ['srv with port', { upstream: { uri: 'mongodb+srv://cluster.example.com:27017/' } }, 'upstream.uri', /exactly one host name and no port/],
    ['zlib level', { compression: { zlibLevel: 10 } }, 'compression.zlibLevel', /must be <= 9 \(got 10/],
    ['presentAs', { handshake: { presentAs: 'replicaSet' } }, 'handshake.presentAs', /must be one of auto, standalone, sharded/],
    ['audit event size', { audit: { maxEventBytes: 10 } }, 'audit.maxEventBytes', /must be >= 512/],
    ['empty audit destination', { audit: { destination: '' } }, 'audit.destination', /./],
  ];
  it.each(cases)('%s', (_name, values, path, message) => {
    const error = configError(() => configFromObject(values));
    expect(error).toBeInstanceOf(ConfigValidationError);
    expect(error.path).toBe(path);
    expect(error.message.startsWith(`${path}: `)).toBe(true);
    expect(error.message).toMatch(message);
  });

  it('lists every problem, the first one in the message', () => {
    const error = configError(() =>
      configFromObject({ limits: { maxConnections: 0, maxBsonDepth: 0 }, log: { level: 'x' } }),
    ) as ConfigValidationError;
    expect(error.issues.map((issue) => issue.path)).toEqual(['log.level', 'limits.maxBsonDepth', 'limits.maxConnections']);
    expect(error.message).toMatch(/^log\.level: .* \(and 2 more problems\)$/);
  });

  it('says where a file value came from', () => {
    const file = files.yaml('limits:\n  maxBsonDepth: 200\n  maxConnections: 0\n');
    const error = configError(() => loadConfig({ file, env: {} }));
    expect(error.message).toBe(`limits.maxConnections: must be >= 1 (got 0, from ${file}:3)`);
  });

  it('says when a value came from a flag', () => {
    const error = configError(() => loadConfig({ env: {}, flags: { listen: 'nope' } }));
    expect(error.path).toBe('listeners[0].listen');
    expect(error.message).toContain('from --listen');
  });

  it('never shows the upstream password', () => {
    const error = configError(() =>
      loadConfig({ env: { MTP_UPSTREAM: 'mongodb://admin:hunter2@:27017/' } }),
    );
    expect(error.path).toBe('upstream.uri');
    expect(error.message).not.toContain('hunter2');
    expect(error.message).toContain('admin:****@');
    const typeError = configError(() => configFromObject({ upstream: { uri: ['mongodb://u:hunter2@h/'] } }));
    expect(typeError.message).not.toContain('hunter2');
  });
});

describe('unknown keys are errors at every level', () => {
  it('at the top level, with a suggestion', () => {
    const error = configError(() => configFromObject({ limit: {} }));
    expect(error.path).toBe('limit');
    expect(error.message).toBe('limit: unknown setting; did you mean "limits"? (from settings)');
  });

  it('inside a section', () => {
    const file = files.yaml('limits:\n  maxConnection: 5\n');
    const error = configError(() => loadConfig({ file, env: {} }));
    expect(error.path).toBe('limits.maxConnection');
    expect(error.message).toBe(`limits.maxConnection: unknown setting; did you mean "maxConnections"? (from ${file}:2)`);
  });

  it('inside a field that is not a section', () => {
    const error = configError(() => configFromObject({ listen: '127.0.0.1:27018' }));
    expect(error.path).toBe('listen');
    expect(error.message).toContain('did you mean "listeners"?');
    const inner = configError(() => configFromObject({ listeners: [{ name: 'a', listen: { host: 'x', port: 1 } }] }));
    expect(inner.path).toBe('listeners[0].listen');
  });
});

describe('YAML files', () => {
  it('reject duplicate keys, naming the field and both lines', () => {
    const file = files.yaml('limits:\n  maxConnections: 5\n  maxBsonDepth: 10\n  maxConnections: 6\n');
    const error = configError(() => loadConfig({ file, env: {} }));
    expect(error.path).toBe('limits.maxConnections');
    expect(error.message).toBe(`limits.maxConnections: duplicate key (${file}:4, first set on line 2)`);
  });

  it('reject duplicate sections', () => {
    const file = files.yaml('log:\n  level: info\nlog:\n  level: debug\n');
    expect(configError(() => loadConfig({ file, env: {} })).path).toBe('log');
  });

  it('report syntax errors with a position and without the source line', () => {
    const file = files.yaml('upstream:\n  uri: "mongodb://u:hunter2@h/\nlimits: [\n');
    const error = configError(() => loadConfig({ file, env: {} }));
    expect(error.path).toMatch(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+$`));
    expect(error.message).toContain('invalid YAML');
    expect(error.message).not.toContain('hunter2');
  });

  it('treat an empty file and empty sections as "use the defaults"', () => {
    expect(loadConfig({ file: files.yaml(''), env: {} })).toEqual(DEFAULTS);
    expect(loadConfig({ file: files.yaml('# nothing\nlimits:\nlog:\n'), env: {} })).toEqual(DEFAULTS);
  });

  it('reject a file that is not a mapping', () => {
    const file = files.yaml('- a\n- b\n');
    const error = configError(() => loadConfig({ file, env: {} }));
    expect(error.path).toBe(file);
    expect(error.message).toContain('must be a mapping of settings (got a list)');
  });

  it('reject non-string keys and __proto__', () => {
    expect(configError(() => loadConfig({ file: files.yaml('? [a]\n: 1\n'), env: {} })).message).toContain('plain names');
    expect(configError(() => loadConfig({ file: files.yaml('__proto__:\n  x: 1\n'), env: {} })).path).toBe('__proto__');
  });

  it('report a missing file', () => {
    const missing = join(files.path, 'missing.yaml');
    const error = configError(() => loadConfig({ file: missing, env: {} }));
    expect(error.message).toBe(`${missing}: cannot read config file: no such file`);
    expect(configError(() => loadConfig({ file: files.path, env: {} })).message).toContain('directory');
  });

  it('refuse a file too large for a configuration, and a file that is not a regular file (a device never ends)', () => {
    const huge = join(files.path, 'huge.yaml');
    writeFileSync(huge, `# ${'x'.repeat(5 * 1024 * 1024)}\n`);
    expect(configError(() => loadConfig({ file: huge, env: {} })).message).toBe(`${huge}: cannot read config file: larger than 4194304 bytes`);
    expect(configError(() => loadConfig({ file: '/dev/zero', env: {} })).message).toBe('/dev/zero: cannot read config file: not a regular file');
  });

  it('refuse alias bombs', () => {
    const lines = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 0; i < 12; i++) lines.push(`${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [*${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}]`);
    expect(() => loadConfig({ file: files.yaml(lines.join('\n')), env: {} })).toThrow(ConfigError);
  });

  it('read IPv6 listeners and disabled metrics', () => {
    const config = loadConfig({
      file: files.yaml('listeners:\n  - name: v6\n    listen: "[::1]:27018"\nmetrics:\n  listen: off\n'),
      env: {},
    });
    expect(config.listeners[0]!.listen).toEqual({ host: '::1', port: 27018 });
    expect(config.metrics.listen).toBeNull();
    expect(loadConfig({ file: files.yaml('metrics:\n  listen: null\n'), env: {} }).metrics.listen).toBeNull();
  });
});
