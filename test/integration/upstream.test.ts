/**
 * Upstream against a real FerretDB v1: handshake, SCRAM-SHA-256, TLS, replica-set hello, idle
 * reuse and connect failures. Each group starts its own FerretDB with the flags it needs.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, ErrorCodes, ProxyError, UpstreamError } from '../../src/errors.js';
import { runCommand } from '../../src/upstream/handshake.js';
import { Upstream, type UpstreamOptions } from '../../src/upstream/upstream.js';
import { type FerretDBInstance, startFerretDB } from '../helpers/upstream.js';

const run = promisify(execFile);

const USER = 'proxyuser';
const PASSWORD = 'S3cret-pa55word';

function options(uri: string, extra: Partial<UpstreamOptions> = {}): UpstreamOptions {
  return { uri, connectTimeoutMS: 5_000, maxIdleConnections: 4, idleTimeoutMS: 60_000, ...extra };
}

async function withUpstream<T>(opts: UpstreamOptions, fn: (upstream: Upstream) => Promise<T>): Promise<T> {
  const upstream = new Upstream(opts);
  try {
    return await fn(upstream);
  } finally {
    await upstream.close();
  }
}

async function failure(promise: Promise<unknown>): Promise<ProxyError> {
  const error = await promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e,
  );
  expect(ProxyError.is(error)).toBe(true);
  return error as ProxyError;
}

describe('Upstream against FerretDB (no auth)', () => {
  let ferret: FerretDBInstance;
  beforeAll(async () => {
    ferret = await startFerretDB();
  });
  afterAll(async () => {
    await ferret?.stop();
  });

  it('handshakes, describes the server and round-trips a ping', async () => {
    await withUpstream(options(`mongodb://127.0.0.1:${ferret.port}/`), async (upstream) => {
      const info = await upstream.start();
      expect(info.kind).toBe('standalone');
      expect(info.address).toBe(`127.0.0.1:${ferret.port}`);
      expect(info.maxWireVersion).toBeGreaterThanOrEqual(info.minWireVersion);
      expect(info.maxWireVersion).toBeGreaterThan(0);
      expect(info.maxBsonObjectSize).toBeGreaterThan(0);
      expect(info.maxMessageSizeBytes).toBeGreaterThan(0);
      expect(info.hello.ok).toBe(1);
      expect(upstream.info).toBe(info);

      const connection = await upstream.acquire();
      const pong = await runCommand(connection, 'admin', { ping: 1 });
      expect(pong.ok).toBe(1);
      upstream.release(connection);
    });
  });

  it('reuses an idle connection instead of opening a new one', async () => {
    await withUpstream(options(`mongodb://127.0.0.1:${ferret.port}/`), async (upstream) => {
      await upstream.start();
      expect(upstream.stats).toMatchObject({ created: 1, idle: 1, inUse: 0 });
      const first = await upstream.acquire();
      upstream.release(first);
      const second = await upstream.acquire();
      expect(second).toBe(first);
      const third = await upstream.acquire(); // the only idle one is taken: a new one opens
      expect(third).not.toBe(first);
      expect(upstream.stats).toMatchObject({ created: 2, idle: 0, inUse: 2 });
      upstream.release(second);
      upstream.release(third);
      expect(upstream.stats).toMatchObject({ idle: 2, inUse: 0 });
    });
  });

  it('keeps at most maxIdleConnections and closes idle ones after idleTimeoutMS', async () => {
    await withUpstream(
      options(`mongodb://127.0.0.1:${ferret.port}/`, { maxIdleConnections: 1, idleTimeoutMS: 150 }),
      async (upstream) => {
        await upstream.start();
        const a = await upstream.acquire();
        const b = await upstream.acquire();
        upstream.release(a);
        upstream.release(b); // no room: closed
        expect(b.closed).toBe(true);
        expect(a.closed).toBe(false);
        await new Promise((resolve) => setTimeout(resolve, 400));
        expect(a.closed).toBe(true);
        expect(upstream.stats.idle).toBe(0);
        const c = await upstream.acquire();
        expect(c.closed).toBe(false);
        upstream.release(c);
      },
    );
  });

  it('drops a connection the server closed and opens a fresh one', async () => {
    await withUpstream(options(`mongodb://127.0.0.1:${ferret.port}/`), async (upstream) => {
      await upstream.start();
      const a = await upstream.acquire();
      upstream.release(a);
      a.close();
      const b = await upstream.acquire();
      expect(b).not.toBe(a);
      expect((await runCommand(b, 'admin', { ping: 1 })).ok).toBe(1);
      upstream.release(b);
    });
  });

  it('rejects acquire after close', async () => {
    const upstream = new Upstream(options(`mongodb://127.0.0.1:${ferret.port}/`));
    await upstream.start();
    const held = await upstream.acquire();
    await upstream.close();
    expect(held.closed).toBe(true);
    expect((await failure(upstream.acquire())).code).toBe(ErrorCodes.ShutdownInProgress);
  });

  it('offers compressors but uses none when FerretDB agrees to none', async () => {
    await withUpstream(options(`mongodb://127.0.0.1:${ferret.port}/?compressors=zlib,snappy`), async (upstream) => {
      const info = await upstream.start();
      // FerretDB v1 does not implement OP_COMPRESSED (FerretDB#4362).
      expect(info.compression).toEqual([]);
      const connection = await upstream.acquire();
      expect((await runCommand(connection, 'admin', { ping: 1 })).ok).toBe(1);
      upstream.release(connection);
    });
  });
});

describe('Upstream connect failures', () => {
  it('reports a closed port as HostUnreachable with the NetworkError label', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as net.AddressInfo;
    await new Promise((resolve) => server.close(resolve));

    const error = await withUpstream(options(`mongodb://127.0.0.1:${port}/`), (u) => failure(u.start()));
    expect(error).toBeInstanceOf(UpstreamError);
    expect(error.code).toBe(ErrorCodes.HostUnreachable);
    expect(error.labels).toContain('NetworkError');
    expect(error.message).toContain(`127.0.0.1:${port}`);
  });

  it('times out a server that accepts but never answers the hello (connectTimeoutMS)', async () => {
    const sockets: net.Socket[] = [];
    const server = net.createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as net.AddressInfo;
    try {
      const started = Date.now();
      const error = await withUpstream(options(`mongodb://127.0.0.1:${port}/?connectTimeoutMS=300`), (u) =>
        failure(u.start()),
      );
      // Not before the timeout was due (a lower bound holds under any load; slack for libuv's cached loop time).
      expect(Date.now() - started).toBeGreaterThanOrEqual(280);
      // Discovery wraps the per-seed failure; the seed's own error names the timeout.
      expect(error.message).toMatch(/timed out after 300 ms/);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('times out a TCP connect that never completes', async () => {
    // A listener with a full backlog is not portable; a non-routable address usually hangs, but
    // some sandboxes answer ENETUNREACH at once. Either outcome must be a network error.
    const error = await withUpstream(
      options('mongodb://10.255.255.1:27017/?connectTimeoutMS=200', { connectTimeoutMS: 200 }),
      (u) => failure(u.start()),
    );
    expect(error.labels).toContain('NetworkError');
    expect([ErrorCodes.HostUnreachable, ErrorCodes.NetworkTimeout, ErrorCodes.SocketException]).toContain(error.code);
  });
});

describe('Upstream SCRAM against FerretDB', () => {
  let ferret: FerretDBInstance;
  beforeAll(async () => {
    ferret = await startFerretDB({ auth: { username: USER, password: PASSWORD, database: 'admin' } });
  });
  afterAll(async () => {
    await ferret?.stop();
  });

  it.each([
    ['SCRAM-SHA-256 named in the URI', '?authMechanism=SCRAM-SHA-256'],
    ['SCRAM-SHA-1 named in the URI', '?authMechanism=SCRAM-SHA-1'],
    ['the negotiated mechanism', '?authSource=admin'],
  ])('authenticates with %s', async (_name, query) => {
    const uri = `mongodb://${USER}:${encodeURIComponent(PASSWORD)}@127.0.0.1:${ferret.port}/${query}`;
    await withUpstream(options(uri), async (upstream) => {
      await upstream.start();
      const connection = await upstream.acquire();
      const status = await runCommand(connection, 'admin', { connectionStatus: 1 });
      expect(status.authInfo?.authenticatedUsers).toEqual([{ user: USER, db: 'admin' }]);
      // A second connection authenticates with the cached SCRAM keys.
      const other = await upstream.acquire();
      expect((await runCommand(other, 'admin', { listDatabases: 1, nameOnly: true })).ok).toBe(1);
      upstream.release(connection);
      upstream.release(other);
    });
  });

  it('refuses a wrong password with AuthenticationFailed and no password in the message', async () => {
    const wrong = 'Wrong-pa55word-xyz';
    const uri = `mongodb://${USER}:${wrong}@127.0.0.1:${ferret.port}/?authMechanism=SCRAM-SHA-256`;
    const error = await withUpstream(options(uri), (u) => failure(u.start()));
    expect(error).toBeInstanceOf(UpstreamError);
    expect(error.code).toBe(ErrorCodes.AuthenticationFailed);
    expect(error.codeName).toBe('AuthenticationFailed');
    expect(error.message).not.toContain(wrong);
    expect(error.message).not.toContain(PASSWORD);
    expect(String(error.stack)).not.toContain(wrong);
  });

  it('refuses an unknown user with AuthenticationFailed', async () => {
    const uri = `mongodb://nobody:whatever@127.0.0.1:${ferret.port}/?authMechanism=SCRAM-SHA-256`;
    const error = await withUpstream(options(uri), (u) => failure(u.start()));
    expect(error.code).toBe(ErrorCodes.AuthenticationFailed);
    expect(error.message).not.toContain('whatever');
  });
});

describe('Upstream TLS against FerretDB', () => {
  let dir: string;
  let ferret: FerretDBInstance;
  let caFile: string;
  let otherCaFile: string;
  let clientPem: string;
  let mtlsFerret: FerretDBInstance;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'mtp-upstream-tls-'));
    const f = (name: string): string => path.join(dir, name);
    const openssl = (...args: string[]) => run('openssl', args, { cwd: dir });
    const makeCa = async (name: string): Promise<void> => {
      await openssl(
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '2',
        '-subj',
        `/CN=${name}`,
        '-keyout',
        f(`${name}.key`),
        '-out',
        f(`${name}.pem`),
      );
    };
    await makeCa('test-ca');
    await makeCa('other-ca');
    await openssl(
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-subj',
      '/CN=localhost',
      '-keyout',
      f('server.key'),
      '-out',
      f('server.csr'),
    );
    await writeFile(f('server.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
    await openssl(
      'x509',
      '-req',
      '-in',
      f('server.csr'),
      '-CA',
      f('test-ca.pem'),
      '-CAkey',
      f('test-ca.key'),
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      f('server.ext'),
      '-out',
      f('server.pem'),
    );
    caFile = f('test-ca.pem');
    otherCaFile = f('other-ca.pem');
    // A client certificate with an encrypted key, certificate and key concatenated as
    // tlsCertificateKeyFile expects.
    await openssl(
      'req',
      '-newkey',
      'rsa:2048',
      '-subj',
      '/CN=proxy-client',
      '-passout',
      'pass:keypass',
      '-keyout',
      f('client.key'),
      '-out',
      f('client.csr'),
    );
    await openssl(
      'x509',
      '-req',
      '-in',
      f('client.csr'),
      '-CA',
      f('test-ca.pem'),
      '-CAkey',
      f('test-ca.key'),
      '-CAcreateserial',
      '-days',
      '2',
      '-out',
      f('client.crt'),
    );
    clientPem = f('client.pem');
    await writeFile(clientPem, Buffer.concat([await readFile(f('client.crt')), await readFile(f('client.key'))]));
    ferret = await startFerretDB({ tls: { certFile: f('server.pem'), keyFile: f('server.key') } });
    mtlsFerret = await startFerretDB({ tls: { certFile: f('server.pem'), keyFile: f('server.key'), caFile } });
  });
  afterAll(async () => {
    await ferret?.stop();
    await mtlsFerret?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('presents tlsCertificateKeyFile (encrypted key) to a server that requires client certificates', async () => {
    const base = `mongodb://localhost:${mtlsFerret.tlsPort}/?tls=true&tlsCAFile=${encodeURIComponent(caFile)}`;
    const withCert = `${base}&tlsCertificateKeyFile=${encodeURIComponent(clientPem)}&tlsCertificateKeyFilePassword=keypass`;
    await withUpstream(options(withCert), async (upstream) => {
      await upstream.start();
      const connection = await upstream.acquire();
      expect((await runCommand(connection, 'admin', { ping: 1 })).ok).toBe(1);
      upstream.release(connection);
    });
    const error = await withUpstream(options(base), (u) => failure(u.start()));
    expect(error.labels).toContain('NetworkError');
  });

  it('turns a wrong key password into a ConfigError without echoing it', async () => {
    const uri =
      `mongodb://localhost:${mtlsFerret.tlsPort}/?tls=true&tlsCAFile=${encodeURIComponent(caFile)}` +
      `&tlsCertificateKeyFile=${encodeURIComponent(clientPem)}&tlsCertificateKeyFilePassword=not-the-pass`;
    const error = (await withUpstream(options(uri), (u) => u.start()).catch((e: unknown) => e)) as Error;
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.message).toMatch(/could not be loaded/);
    expect(error.message).not.toContain('not-the-pass');
  });

  it('connects over TLS when the server certificate chains to tlsCAFile', async () => {
    for (const host of ['127.0.0.1', 'localhost']) {
      const uri = `mongodb://${host}:${ferret.tlsPort}/?tls=true&tlsCAFile=${encodeURIComponent(caFile)}`;
      await withUpstream(options(uri), async (upstream) => {
        await upstream.start();
        const connection = await upstream.acquire();
        expect((await runCommand(connection, 'admin', { ping: 1 })).ok).toBe(1);
        upstream.release(connection);
      });
    }
  });

  it('refuses a server certificate from an unknown CA', async () => {
    const uri = `mongodb://127.0.0.1:${ferret.tlsPort}/?tls=true&tlsCAFile=${encodeURIComponent(otherCaFile)}`;
    const error = await withUpstream(options(uri), (u) => failure(u.start()));
    expect(error.labels).toContain('NetworkError');
    expect(error.message).toMatch(/certificate/i);
  });

  it('refuses the system roots by default and accepts anything with tlsAllowInvalidCertificates', async () => {
    const strict = `mongodb://127.0.0.1:${ferret.tlsPort}/?tls=true`;
    expect((await withUpstream(options(strict), (u) => failure(u.start()))).message).toMatch(/certificate/i);
    const relaxed = `mongodb://127.0.0.1:${ferret.tlsPort}/?tls=true&tlsAllowInvalidCertificates=true`;
    await withUpstream(options(relaxed), async (upstream) => {
      await upstream.start();
    });
  });

  it('turns an unreadable tlsCAFile into a ConfigError naming the option', async () => {
    const uri = `mongodb://127.0.0.1:${ferret.tlsPort}/?tls=true&tlsCAFile=${encodeURIComponent(path.join(dir, 'missing.pem'))}`;
    await expect(withUpstream(options(uri), (u) => u.start())).rejects.toThrow(/tlsCAFile .* cannot be read/);
  });
});

describe('Upstream replica-set discovery against FerretDB', () => {
  let ferret: FerretDBInstance;
  beforeAll(async () => {
    ferret = await startFerretDB({ replSetName: 'rs0' });
  });
  afterAll(async () => {
    await ferret?.stop();
  });

  it('selects the primary of the named replica set', async () => {
    await withUpstream(options(`mongodb://127.0.0.1:${ferret.port}/?replicaSet=rs0`), async (upstream) => {
      const info = await upstream.start();
      expect(info.kind).toBe('replicaSet');
      expect(info.setName).toBe('rs0');
    });
  });

  it('refuses a replica set with another name', async () => {
    const error = await withUpstream(options(`mongodb://127.0.0.1:${ferret.port}/?replicaSet=other`), (u) =>
      failure(u.start()),
    );
    expect(error.message).toMatch(/replica set "rs0", not "other"/);
  });

  it('uses the host as is with directConnection=true', async () => {
    await withUpstream(options(`mongodb://127.0.0.1:${ferret.port}/?directConnection=true`), async (upstream) => {
      expect((await upstream.start()).setName).toBe('rs0');
    });
  });
});
