import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/errors.js';
import { configError } from '../../helpers/config.js';
import {
  type SrvResolver,
  formatAddress,
  loadUpstreamTarget,
  parseAddress,
  parseUpstreamUri,
  redactUri,
  resolveUpstreamTarget,
} from '../../../src/upstream/uri.js';

/** The ConfigError `fn` throws, about upstream.uri. */
function uriError(fn: () => unknown): ConfigError {
  const error = configError(fn);
  expect(error.path).toBe('upstream.uri');
  return error;
}

describe('parseUpstreamUri', () => {
  it('parses hosts with default ports, IPv6 brackets and lower-cased names', () => {
    const t = parseUpstreamUri('mongodb://A.example.com,b.example.com:27018,[::1]:27019/');
    expect(t.hosts).toEqual([
      { host: 'a.example.com', port: 27017 },
      { host: 'b.example.com', port: 27018 },
      { host: '::1', port: 27019 },
    ]);
    expect(t.credentials).toBeUndefined();
    expect(t.tls).toBeUndefined();
    expect(t.directConnection).toBe(false);
    expect(t.compressors).toEqual([]);
    expect(t.zlibCompressionLevel).toBe(-1);
    expect(t.connectTimeoutMS).toBeUndefined();
    expect(Object.isFrozen(t)).toBe(true);
    expect(Object.isFrozen(t.hosts)).toBe(true);
    expect(Object.isFrozen(t.hosts[0])).toBe(true);
  });

  it('decodes credentials and picks the auth source: authSource, then the database, then admin', () => {
    const a = parseUpstreamUri('mongodb://us%40er:p%3Ass%2Fw@h/appdb');
    expect(a.credentials).toEqual({ username: 'us@er', password: 'p:ss/w', source: 'appdb', mechanism: undefined });
    expect(parseUpstreamUri('mongodb://u:p@h/appdb?authSource=other').credentials?.source).toBe('other');
    expect(parseUpstreamUri('mongodb://u:p@h').credentials?.source).toBe('admin');
    expect(parseUpstreamUri('mongodb://u:p@h/?authMechanism=scram-sha-1').credentials?.mechanism).toBe('SCRAM-SHA-1');
    expect(parseUpstreamUri('mongodb://u:p@h/?authMechanism=SCRAM-SHA-256').credentials?.mechanism).toBe(
      'SCRAM-SHA-256',
    );
  });

  it('does not treat authSource or a database alone as credentials', () => {
    expect(parseUpstreamUri('mongodb://h/db?authSource=admin').credentials).toBeUndefined();
  });

  it('requires a user name and password for SCRAM', () => {
    expect(uriError(() => parseUpstreamUri('mongodb://h/?authMechanism=SCRAM-SHA-256')).message).toMatch(/user name/);
    expect(uriError(() => parseUpstreamUri('mongodb://u@h/')).message).toMatch(/password/);
  });

  it('accepts MONGODB-X509 over TLS with a certificate, with or without a user name', () => {
    const t = parseUpstreamUri('mongodb://h/?authMechanism=MONGODB-X509&tls=true&tlsCertificateKeyFile=/c.pem');
    expect(t.credentials).toEqual({
      username: undefined,
      password: undefined,
      source: '$external',
      mechanism: 'MONGODB-X509',
    });
    const named = parseUpstreamUri(
      'mongodb://CN%3Dclient%2COU%3DX@h/?authMechanism=MONGODB-X509&tlsCertificateKeyFile=/c.pem&authSource=$external',
    );
    expect(named.credentials?.username).toBe('CN=client,OU=X');
    expect(named.tls).toBeDefined();
  });

  it('rejects bad MONGODB-X509 set-ups', () => {
    uriError(() => parseUpstreamUri('mongodb://h/?authMechanism=MONGODB-X509'));
    uriError(() => parseUpstreamUri('mongodb://u:p@h/?authMechanism=MONGODB-X509&tlsCertificateKeyFile=/c'));
    uriError(() =>
      parseUpstreamUri('mongodb://h/?authMechanism=MONGODB-X509&tlsCertificateKeyFile=/c&authSource=admin'),
    );
  });

  it('rejects unsupported mechanisms and options by name', () => {
    expect(uriError(() => parseUpstreamUri('mongodb://u:p@h/?authMechanism=PLAIN')).message).toMatch(/PLAIN/);
    expect(uriError(() => parseUpstreamUri('mongodb://h/?readPreference=secondary')).message).toMatch(
      /unsupported URI option "readPreference"/,
    );
    expect(uriError(() => parseUpstreamUri('mongodb://h/?retryWrites=true')).message).toMatch(/retryWrites/);
  });

  it('reads TLS options, secure by default', () => {
    const t = parseUpstreamUri(
      'mongodb://h/?tls=true&tlsCAFile=/ca.pem&tlsCertificateKeyFile=/c.pem&tlsCertificateKeyFilePassword=k',
    );
    expect(t.tls).toEqual({
      caFile: '/ca.pem',
      certificateKeyFile: '/c.pem',
      certificateKeyFilePassword: 'k',
      allowInvalidCertificates: false,
      allowInvalidHostnames: false,
    });
    expect(parseUpstreamUri('mongodb://h/?ssl=true').tls).toBeDefined();
    expect(parseUpstreamUri('mongodb://h/?tlsCAFile=/ca.pem').tls?.caFile).toBe('/ca.pem');
    expect(parseUpstreamUri('mongodb://h/?tls=false').tls).toBeUndefined();
    const insecure = parseUpstreamUri('mongodb://h/?tls=true&tlsInsecure=true').tls;
    expect(insecure?.allowInvalidCertificates && insecure.allowInvalidHostnames).toBe(true);
    const hostnames = parseUpstreamUri('mongodb://h/?tls=true&tlsAllowInvalidHostnames=true').tls;
    expect([hostnames?.allowInvalidCertificates, hostnames?.allowInvalidHostnames]).toEqual([false, true]);
  });

  it.each([
    ['tls and ssl disagree', 'mongodb://h/?tls=true&ssl=false'],
    ['tlsInsecure with tlsAllowInvalidCertificates', 'mongodb://h/?tlsInsecure=true&tlsAllowInvalidCertificates=true'],
    ['tlsInsecure with tlsAllowInvalidHostnames', 'mongodb://h/?tlsInsecure=true&tlsAllowInvalidHostnames=false'],
    ['TLS options with tls=false', 'mongodb://h/?tls=false&tlsCAFile=/ca.pem'],
    ['a key password without a key', 'mongodb://h/?tls=true&tlsCertificateKeyFilePassword=x'],
    ['a bad boolean', 'mongodb://h/?tls=yes'],
    ['a repeated option', 'mongodb://h/?appName=a&appName=b'],
    ['directConnection with two hosts', 'mongodb://a,b/?directConnection=true'],
    ['an unknown compressor', 'mongodb://h/?compressors=lz4'],
    ['a zlib level out of range', 'mongodb://h/?zlibCompressionLevel=10'],
    ['a negative connectTimeoutMS', 'mongodb://h/?connectTimeoutMS=-1'],
    ['a bad port', 'mongodb://h:99999/'],
    ['an unbracketed IPv6 host', 'mongodb://::1:27017/'],
    ['a Unix socket', 'mongodb://%2Ftmp%2Fmongodb-27017.sock/'],
    ['a long appName', `mongodb://h/?appName=${'x'.repeat(129)}`],
    ['another scheme', 'postgres://h/'],
    ['srvServiceName without SRV', 'mongodb://h/?srvServiceName=x'],
    ['directConnection with SRV', 'mongodb+srv://c.example.com/?directConnection=true'],
  ])('rejects %s', (_name, uri) => {
    uriError(() => parseUpstreamUri(uri));
  });

  it('allows tls and ssl repeated with the same value', () => {
    expect(parseUpstreamUri('mongodb://h/?tls=true&ssl=true&tls=true').tls).toBeDefined();
  });

  it('reads compressors, zlib level, timeouts, appName, replicaSet and directConnection', () => {
    const t = parseUpstreamUri(
      'mongodb://h/?compressors=zstd,noop,zlib,zstd&zlibCompressionLevel=6&connectTimeoutMS=1500' +
        '&appName=my%20app&replicaSet=rs0&directConnection=TRUE',
    );
    expect(t.compressors).toEqual(['zstd', 'zlib']);
    expect(t.zlibCompressionLevel).toBe(6);
    expect(t.connectTimeoutMS).toBe(1500);
    expect(t.appName).toBe('my app');
    expect(t.replicaSet).toBe('rs0');
    expect(t.directConnection).toBe(true);
  });

  it('never echoes the password in a parse error', () => {
    const err = uriError(() => parseUpstreamUri('mongodb://user:s3cr@t@h/'));
    expect(err.message).not.toContain('s3cr');
  });
});

describe('SRV', () => {
  const resolver = (records: { name: string; port: number }[], txt: string[][] = []): SrvResolver => ({
    resolveSrv: async (name) => {
      expect(name).toBe('_mongodb._tcp.cluster0.example.com');
      return records;
    },
    resolveTxt: async () => txt,
  });

  it('parses an SRV URI with TLS on and no hosts yet', () => {
    const t = parseUpstreamUri('mongodb+srv://u:p@Cluster0.example.com/?srvMaxHosts=1');
    expect(t.hosts).toEqual([]);
    expect(t.srv).toEqual({
      hostname: 'cluster0.example.com',
      serviceName: 'mongodb',
      maxHosts: 1,
      authSourceInUri: false,
    });
    expect(t.tls).toBeDefined();
  });

  it('resolves hosts and applies TXT options the URI did not set', async () => {
    const t = await loadUpstreamTarget(
      'mongodb+srv://u:p@cluster0.example.com/',
      resolver(
        [
          { name: 'a.example.com', port: 27017 },
          { name: 'B.example.com.', port: 27018 },
        ],
        [['replicaSet=rs9&', 'authSource=thedb']],
      ),
    );
    expect(t.hosts).toEqual([
      { host: 'a.example.com', port: 27017 },
      { host: 'b.example.com', port: 27018 },
    ]);
    expect(t.replicaSet).toBe('rs9');
    expect(t.credentials?.source).toBe('thedb');
  });

  it('keeps the URI authSource over the TXT one and honours srvMaxHosts', async () => {
    const t = await loadUpstreamTarget(
      'mongodb+srv://u:p@cluster0.example.com/?authSource=mine&srvMaxHosts=1',
      resolver(
        [
          { name: 'a.example.com', port: 1 },
          { name: 'b.example.com', port: 2 },
        ],
        [['authSource=theirs']],
      ),
    );
    expect(t.credentials?.source).toBe('mine');
    expect(t.hosts).toHaveLength(1);
  });

  it('rejects hosts outside the parent domain and forbidden TXT options', async () => {
    const target = parseUpstreamUri('mongodb+srv://cluster0.example.com/');
    await expect(resolveUpstreamTarget(target, resolver([{ name: 'evil.com', port: 1 }]))).rejects.toThrow(
      /not within example.com/,
    );
    await expect(
      resolveUpstreamTarget(target, resolver([{ name: 'a.example.com', port: 1 }], [['tls=false']])),
    ).rejects.toThrow(/TXT record option "tls"/);
    await expect(resolveUpstreamTarget(target, resolver([]))).rejects.toThrow(/no hosts/);
  });

  it('returns non-SRV targets unchanged', async () => {
    const t = parseUpstreamUri('mongodb://h/');
    expect(await resolveUpstreamTarget(t)).toBe(t);
  });
});

describe('helpers', () => {
  it('redactUri masks the password and the key password but keeps the user', () => {
    const r = redactUri('mongodb://alice:hunter2@h:27017/db?tls=true&tlsCertificateKeyFilePassword=kp');
    expect(r).not.toContain('hunter2');
    expect(r).not.toContain('kp');
    expect(r).toContain('alice');
    expect(redactUri('mongodb://alice:hunter2@@bad')).not.toContain('hunter2');
  });

  it('formats and parses addresses', () => {
    expect(formatAddress({ host: '::1', port: 1 })).toBe('[::1]:1');
    expect(formatAddress({ host: 'h', port: 2 })).toBe('h:2');
    expect(parseAddress('[::1]:5')).toEqual({ host: '::1', port: 5 });
    expect(parseAddress('Host:7')).toEqual({ host: 'host', port: 7 });
  });
});

describe('database names', () => {
  it.each(['a/b', 'a.b', 'a$b', 'a b', 'a\\b', 'a"b'])('rejects %j in the URI path', (db) => {
    expect(() => parseUpstreamUri(`mongodb://u:p@h/${encodeURIComponent(db)}`)).toThrow(/forbids/);
  });
});
