import { describe, expect, it } from 'vitest';
import {
  configFromObject,
  configToDocument,
  formatConfigYaml,
  formatHostPort,
  maskSecrets,
  maskUri,
  maskUrisInText,
  parseHostPort,
} from '../../../src/config/index.js';
import { maskWithSchema } from '../../../src/config/format.js';
import { parseYamlConfig } from '../../../src/config/yaml-file.js';
import { coerceText, toScreamingSnake } from '../../../src/config/env.js';

describe('host:port', () => {
  it.each([
    ['127.0.0.1:27018', { host: '127.0.0.1', port: 27018 }],
    ['0.0.0.0:0', { host: '0.0.0.0', port: 0 }],
    ['db-1.internal:27017', { host: 'db-1.internal', port: 27017 }],
    ['my_service:80', { host: 'my_service', port: 80 }],
    ['[::1]:27018', { host: '::1', port: 27018 }],
    ['[fe80::1%eth0]:1', { host: 'fe80::1%eth0', port: 1 }],
  ])('parses %s', (text, expected) => {
    expect(parseHostPort(text)).toEqual(expected);
    expect(formatHostPort(expected)).toBe(text);
  });

  it.each([
    ['localhost', /missing ":port"/],
    [':27017', /missing host/],
    ['host:', /missing port number/],
    ['host:http', /not a number/],
    ['host:65536', /above 65535/],
    ['::1:27018', /brackets/],
    ['[::1', /missing "\]"/],
    ['[::1]27018', /missing ":port"/],
    ['[nope]:1', /not an IPv6 address/],
    ['bad host:1', /no spaces|not a valid host/],
    [' host:1', /no spaces/],
    ['-bad-:1', /not a valid host/],
  ])('rejects %s', (text, reason) => {
    expect(() => parseHostPort(text)).toThrow(reason);
  });
});

describe('maskUri', () => {
  it.each([
    ['mongodb://app:s3cret@db:27017/?tls=true', 'mongodb://app:****@db:27017/?tls=true'],
    ['mongodb+srv://app:p%40ss@cluster.example.com/db', 'mongodb+srv://app:****@cluster.example.com/db'],
    ['mongodb://app@db/', 'mongodb://app@db/'],
    ['mongodb://db1,db2/?replicaSet=rs0', 'mongodb://db1,db2/?replicaSet=rs0'],
    // An unescaped "@" or "/" in the password (an invalid URI) is still hidden entirely.
    ['mongodb://app:p@ss/w@rd@db/', 'mongodb://app:****@db/'],
    [
      'mongodb://db/?tls=true&tlsCertificateKeyFilePassword=hunter2&proxyPassword=x',
      'mongodb://db/?tls=true&tlsCertificateKeyFilePassword=****&proxyPassword=****',
    ],
    [
      'mongodb://db/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:abc,SERVICE_NAME:x',
      'mongodb://db/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:****,SERVICE_NAME:x',
    ],
    ['not a uri', 'not a uri'],
  ])('%s', (uri, masked) => {
    expect(maskUri(uri)).toBe(masked);
  });

  it('masks URIs inside free text', () => {
    expect(maskUrisInText('connect mongodb://u:hunter2@h:1/ failed; retry mongodb://v:x@y/')).toBe(
      'connect mongodb://u:****@h:1/ failed; retry mongodb://v:****@y/',
    );
  });
});

describe('maskSecrets and print-config output', () => {
  const config = configFromObject({
    listeners: [
      { name: 'main', listen: '[::1]:0' },
      {
        name: 'tls',
        listen: '0.0.0.0:27019',
        tls: { certFile: '/certs/server.pem', keyFile: '/certs/server.key', keyPassphrase: 'hunter3', caFile: '/certs/ca.pem', clientCertificates: 'required' },
        methods: ['static'],
        staticTenant: 'acme',
      },
    ],
    identity: { certificateRules: [{ field: 'subject-cn', pattern: '^(?<tenant>[a-z]+)\\.svc$' }] },
    upstream: { uri: 'mongodb://proxy:hunter2@db:27017/?authSource=admin' },
    metrics: { listen: 'off' },
  });

  it('masks the upstream password and leaves the rest alone', () => {
    const masked = maskSecrets(config);
    expect(masked.upstream.uri).toBe('mongodb://proxy:****@db:27017/?authSource=admin');
    expect(masked.listeners[1]!.tls!.keyPassphrase).toBe('****');
    expect(config.listeners[1]!.tls!.keyPassphrase).toBe('hunter3');
    expect({ ...masked, upstream: config.upstream, listeners: config.listeners }).toEqual(config);
    expect({ ...masked.listeners[1]!.tls, keyPassphrase: 'hunter3' }).toEqual(config.listeners[1]!.tls);
    expect(Object.isFrozen(masked.upstream)).toBe(true);
    expect(config.upstream.uri).toContain('hunter2');
  });

  it('masks write-only fields of any schema', () => {
    const schema = {
      type: 'object' as const,
      properties: { key: { type: 'string' as const, writeOnly: true }, name: { type: 'string' as const } },
    };
    expect(maskWithSchema({ key: 'secret', name: 'n' }, schema)).toEqual({ key: '****', name: 'n' });
  });

  it('prints YAML that loads back to the same (masked) configuration', () => {
    const text = formatConfigYaml(config);
    expect(text).not.toContain('hunter2');
    expect(text).not.toContain('hunter3');
    expect(text).toContain('listen: "[::1]:0"');
    expect(text).toMatch(/metrics:\n {2}listen: off/);
    const reloaded = configFromObject(parseYamlConfig(text, 'print-config').data);
    expect(reloaded).toEqual(maskSecrets(config));
  });

  it('converts addresses back to their file form', () => {
    expect(configToDocument(config)).toMatchObject({
      listeners: [{ listen: '[::1]:0' }, { listen: '0.0.0.0:27019', tls: { clientCertificates: 'required' } }],
      metrics: { listen: 'off' },
    });
  });
});

describe('environment helpers', () => {
  it.each([
    ['connectTimeoutMS', 'CONNECT_TIMEOUT_MS'],
    ['maxBsonDepth', 'MAX_BSON_DEPTH'],
    ['zlibLevel', 'ZLIB_LEVEL'],
    ['uri', 'URI'],
    ['presentAs', 'PRESENT_AS'],
  ])('%s -> %s', (name, expected) => {
    expect(toScreamingSnake(name)).toBe(expected);
  });

  it('coerces by type and leaves unreadable text alone', () => {
    expect(coerceText('12', { type: 'integer' })).toBe(12);
    expect(coerceText('1.5', { type: 'integer' })).toBe('1.5');
    expect(coerceText('1.5', { type: 'number' })).toBe(1.5);
    expect(coerceText('', { type: 'number' })).toBe('');
    expect(coerceText('TRUE', { type: 'boolean' })).toBe(true);
    expect(coerceText('no', { type: 'boolean' })).toBe('no');
    expect(coerceText('[1,', { type: 'array' })).toBe('[1,');
    expect(coerceText('1, 2', { type: 'array', items: { type: 'integer' } })).toEqual([1, 2]);
    expect(coerceText('x', { type: ['string', 'null'] })).toBe('x');
  });
});
