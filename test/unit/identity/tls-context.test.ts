import { createPrivateKey, X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { copyFile, readFile, rename, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ListenerTlsConfig } from '../../../src/config/types.js';
import { ConfigError } from '../../../src/errors.js';
import { createListenerTls, type ListenerTls } from '../../../src/identity/tls-context.js';
import { makeTestPki, type IssuedCertificate, type TestPki } from '../../helpers/certs.js';
import { configError } from '../../helpers/config.js';
import { until } from '../../helpers/wait.js';

let pki: TestPki;
const cleanups: Array<() => unknown> = [];

beforeAll(async () => {
  pki = await makeTestPki();
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

afterAll(async () => {
  await pki?.remove();
});

function config(overrides: Partial<ListenerTlsConfig> = {}): ListenerTlsConfig {
  return {
    certFile: pki.server.certFile,
    keyFile: pki.server.keyFile,
    keyPassphrase: null,
    caFile: pki.caFile,
    clientCertificates: 'required',
    minVersion: 'TLSv1.2',
    ...overrides,
  };
}

/** A separate copy of the server files, so tests may break and rotate them freely. */
async function ownServerFiles(name: string): Promise<{ certFile: string; keyFile: string }> {
  const certFile = join(pki.dir, `${name}.crt.pem`);
  const keyFile = join(pki.dir, `${name}.key.pem`);
  await copyFile(pki.server.certFile, certFile);
  await copyFile(pki.server.keyFile, keyFile);
  return { certFile, keyFile };
}

async function replaceFile(path: string, contents: string | Buffer): Promise<void> {
  const temporary = `${path}.${Date.now()}.tmp`;
  await writeFile(temporary, contents);
  await rename(temporary, path);
}

function serialOf(options: tls.SecureContextOptions): string {
  return new X509Certificate(options.cert as Buffer).serialNumber;
}

describe('serverOptions', () => {
  it('requests and requires client certificates according to the mode', () => {
    const modes = (['none', 'optional', 'required'] as const).map((clientCertificates) => {
      const options = createListenerTls(config({ clientCertificates }), { reloadIntervalMS: 1_000 }).serverOptions();
      return [clientCertificates, options.requestCert, options.rejectUnauthorized];
    });
    expect(modes).toEqual([
      ['none', false, false],
      ['optional', true, false],
      ['required', true, true],
    ]);
  });

  it('carries the material, the minimum version and, when set, the passphrase and CA', async () => {
    const listener = createListenerTls(config({ minVersion: 'TLSv1.3' }), { reloadIntervalMS: 1_000 });
    const options = listener.serverOptions();
    expect(options.minVersion).toBe('TLSv1.3');
    expect(options.cert).toEqual(await readFile(pki.server.certFile));
    expect(options.key).toEqual(await readFile(pki.server.keyFile));
    expect(options.ca).toEqual(await readFile(pki.caFile));
    expect(options).not.toHaveProperty('passphrase');
    expect(listener.secureContext()).toEqual({
      cert: options.cert,
      key: options.key,
      ca: options.ca,
      minVersion: 'TLSv1.3',
    });
    const noCa = createListenerTls(config({ caFile: null, clientCertificates: 'none' }), { reloadIntervalMS: 1_000 });
    expect(noCa.serverOptions()).not.toHaveProperty('ca');
  });
});

describe('start-up errors name the field', () => {
  const path = 'listeners[2].tls';

  it('a file that cannot be read', () => {
    const missing = join(pki.dir, 'missing.pem');
    for (const field of ['certFile', 'keyFile', 'caFile'] as const) {
      const error = configError(() =>
        createListenerTls(config({ [field]: missing }), { reloadIntervalMS: 1_000, path }),
      );
      expect(error.path).toBe(`${path}.${field}`);
      expect(error.message).toContain(missing);
      expect(error.message).toContain('ENOENT');
    }
  });

  it('a CA is required to verify client certificates', () => {
    for (const clientCertificates of ['optional', 'required'] as const) {
      const error = configError(() =>
        createListenerTls(config({ caFile: null, clientCertificates }), { reloadIntervalMS: 1_000, path }),
      );
      expect(error.path).toBe(`${path}.caFile`);
    }
  });

  it('a certificate, key or CA file that does not load', async () => {
    const garbage = join(pki.dir, 'garbage.pem');
    await writeFile(garbage, 'not PEM at all\n');
    const truncatedCa = join(pki.dir, 'truncated-ca.pem');
    const ca = await readFile(pki.caFile, 'utf8');
    await writeFile(truncatedCa, ca + ca.slice(0, 120));
    const cases: Array<[Partial<ListenerTlsConfig>, string]> = [
      [{ certFile: garbage }, 'certFile'],
      [{ keyFile: garbage }, 'keyFile'],
      [{ caFile: garbage }, 'caFile'],
      [{ caFile: truncatedCa }, 'caFile'],
      // A key that is not the certificate's.
      [{ keyFile: pki.clients.cn.keyFile }, 'keyFile'],
    ];
    for (const [overrides, field] of cases) {
      expect(configError(() => createListenerTls(config(overrides), { reloadIntervalMS: 1_000, path })).path).toBe(
        `${path}.${field}`,
      );
    }
  });

  it('an encrypted key: missing or wrong passphrase, never echoed', async () => {
    const encrypted = join(pki.dir, 'server-encrypted.key.pem');
    const passphrase = 'correct horse battery staple';
    await writeFile(
      encrypted,
      createPrivateKey(await readFile(pki.server.keyFile)).export({
        type: 'pkcs8',
        format: 'pem',
        cipher: 'aes-256-cbc',
        passphrase,
      }),
    );
    const missing = configError(() =>
      createListenerTls(config({ keyFile: encrypted }), { reloadIntervalMS: 1_000, path }),
    );
    expect(missing.path).toBe(`${path}.keyPassphrase`);
    const wrong = configError(() =>
      createListenerTls(config({ keyFile: encrypted, keyPassphrase: 'not the passphrase' }), {
        reloadIntervalMS: 1_000,
        path,
      }),
    );
    expect(wrong.path).toBe(`${path}.keyPassphrase`);
    expect(wrong.message).not.toContain('not the passphrase');
    const ok = createListenerTls(config({ keyFile: encrypted, keyPassphrase: passphrase }), {
      reloadIntervalMS: 1_000,
    });
    expect(ok.secureContext().passphrase).toBe(passphrase);
    expect(() => tls.createSecureContext(ok.secureContext())).not.toThrow();
  });
});

describe('hot reload', () => {
  function watched(files: { certFile: string; keyFile: string }): {
    listener: ListenerTls;
    changes: tls.SecureContextOptions[];
    reloads: Array<{ ok: boolean; error?: Error | undefined }>;
  } {
    const changes: tls.SecureContextOptions[] = [];
    const reloads: Array<{ ok: boolean; error?: Error | undefined }> = [];
    const listener = createListenerTls(config(files), {
      reloadIntervalMS: 25,
      path: 'listeners[0].tls',
      onReload: (ok, error) => reloads.push({ ok, error }),
    });
    listener.watch((options) => changes.push(options));
    cleanups.push(() => listener.close());
    return { listener, changes, reloads };
  }

  it('delivers new material after a change on disk', async () => {
    const files = await ownServerFiles('reload-ok');
    const { listener, changes, reloads } = watched(files);
    const before = serialOf(listener.secureContext());
    const next = await pki.issueClient({ name: 'reload-ok-next', cn: 'localhost' });
    await replaceFile(files.keyFile, next.keyPem);
    await replaceFile(files.certFile, next.certPem);
    await until(() => changes.some((options) => serialOf(options) === next.serialNumber), { timeoutMS: 5_000 });
    expect(serialOf(listener.secureContext())).toBe(next.serialNumber);
    expect(serialOf(listener.secureContext())).not.toBe(before);
    expect(reloads.at(-1)).toEqual({ ok: true, error: undefined });
  });

  it('keeps the old material when a file is broken, and recovers when it is fixed', async () => {
    const files = await ownServerFiles('reload-broken');
    const { listener, changes, reloads } = watched(files);
    const original = listener.secureContext();

    await replaceFile(files.keyFile, '-----BEGIN PRIVATE KEY-----\nhalf-writ');
    await until(() => reloads.length > 0, { timeoutMS: 5_000 });
    expect(reloads[0]?.ok).toBe(false);
    expect(reloads[0]?.error).toBeInstanceOf(ConfigError);
    expect((reloads[0]?.error as ConfigError).path).toBe('listeners[0].tls.keyFile');
    expect(changes).toHaveLength(0);
    expect(listener.secureContext()).toEqual(original);
    expect(listener.serverOptions().key).toEqual(original.key);

    // A key that parses but is not the certificate's is refused the same way.
    const stranger: IssuedCertificate = pki.clients.cn;
    await replaceFile(files.keyFile, stranger.keyPem);
    await until(() => reloads.length > 1, { timeoutMS: 5_000 });
    expect(reloads[1]?.ok).toBe(false);
    expect(changes).toHaveLength(0);
    expect(listener.secureContext()).toEqual(original);

    // Fixed: the right key is back, the new material is delivered.
    await replaceFile(files.keyFile, pki.server.keyPem);
    await until(() => changes.length > 0, { timeoutMS: 5_000 });
    expect(serialOf(changes[0]!)).toBe(serialOf(original));
    expect(reloads.filter((reload) => reload.ok)).toHaveLength(1);
  });

  it('keeps the old CA bundle when the new one is incomplete', async () => {
    const files = await ownServerFiles('reload-ca');
    const caFile = join(pki.dir, 'reload-ca.pem');
    await copyFile(pki.caFile, caFile);
    const reloads: Array<{ ok: boolean; error?: Error | undefined }> = [];
    const listener = createListenerTls(config({ ...files, caFile }), {
      reloadIntervalMS: 25,
      onReload: (ok, error) => reloads.push({ ok, error }),
    });
    cleanups.push(() => listener.close());
    const changes: tls.SecureContextOptions[] = [];
    listener.watch((options) => changes.push(options));
    const original = listener.secureContext();
    await replaceFile(caFile, (await readFile(pki.caFile, 'utf8')).slice(0, 200));
    await until(() => reloads.length > 0, { timeoutMS: 5_000 });
    expect(reloads[0]?.ok).toBe(false);
    expect((reloads[0]?.error as ConfigError).path).toBe('tls.caFile');
    expect(changes).toHaveLength(0);
    expect(listener.secureContext()).toEqual(original);
  });

  it('stops after close()', async () => {
    const files = await ownServerFiles('reload-closed');
    const { listener, changes, reloads } = watched(files);
    listener.close();
    const next = await pki.issueClient({ name: 'reload-closed-next', cn: 'localhost' });
    await replaceFile(files.keyFile, next.keyPem);
    await replaceFile(files.certFile, next.certPem);
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(changes).toHaveLength(0);
    expect(reloads).toHaveLength(0);
  });

  it('watch() can be called once', async () => {
    const { listener } = watched(await ownServerFiles('watch-once'));
    expect(() => listener.watch(() => undefined)).toThrow(/already/);
  });

  it('keeps the old material when the server refuses the new one', async () => {
    const files = await ownServerFiles('reload-refused');
    const reloads: Array<{ ok: boolean; error?: Error | undefined }> = [];
    const listener = createListenerTls(config(files), {
      reloadIntervalMS: 25,
      onReload: (ok, error) => reloads.push({ ok, error }),
    });
    cleanups.push(() => listener.close());
    const original = listener.secureContext();
    listener.watch(() => {
      throw new Error('refused');
    });
    const next = await pki.issueClient({ name: 'reload-refused-next', cn: 'localhost' });
    await replaceFile(files.keyFile, next.keyPem);
    await replaceFile(files.certFile, next.certPem);
    await until(() => reloads.some((reload) => reload.error?.message === 'refused'), { timeoutMS: 5_000 });
    expect(listener.secureContext()).toEqual(original);
  });
});

describe('through a real TLS server', () => {
  interface Handshake {
    ok: boolean;
    authorized?: boolean;
    serial?: string;
    socket?: tls.TLSSocket;
  }

  async function serve(
    listener: ListenerTls,
  ): Promise<{ port: number; server: tls.Server; accepted: tls.TLSSocket[] }> {
    const accepted: tls.TLSSocket[] = [];
    const server = tls.createServer(listener.serverOptions(), (socket) => {
      accepted.push(socket);
      socket.on('error', () => undefined);
      // Echo, prefixed with whether the client certificate verified.
      socket.on('data', (data) =>
        socket.write(`${socket.authorized ? 'authorized' : 'unauthorized'}:${data.toString()}`),
      );
    });
    server.on('tlsClientError', () => undefined);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          for (const socket of accepted) socket.destroy();
          server.close(() => resolve());
        }),
    );
    return { port: (server.address() as AddressInfo).port, server, accepted };
  }

  async function connect(port: number, clientCert?: IssuedCertificate): Promise<Handshake> {
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      servername: 'localhost',
      ca: await readFile(pki.caFile),
      ...(clientCert === undefined ? {} : { cert: clientCert.certPem, key: clientCert.keyPem }),
    });
    cleanups.push(() => socket.destroy());
    // TLS 1.3: the server's verdict on the client certificate arrives after the client's
    // handshake completes, so wait for the echo (or the connection's end).
    return new Promise<Handshake>((resolve) => {
      socket.once('secureConnect', () => socket.write('ping'));
      socket.once('data', (data: Buffer) =>
        resolve({
          ok: true,
          authorized: data.toString().startsWith('authorized:'),
          serial: socket.getPeerCertificate().serialNumber,
          socket,
        }),
      );
      socket.once('error', () => resolve({ ok: false }));
      socket.once('close', () => resolve({ ok: false }));
    });
  }

  it('required: only certificates from the CA that are valid now get through', async () => {
    const { port } = await serve(
      createListenerTls(config({ clientCertificates: 'required' }), { reloadIntervalMS: 1_000 }),
    );
    expect(await connect(port, pki.clients.spiffe)).toMatchObject({ ok: true, authorized: true });
    expect(await connect(port, pki.clients.unmatched)).toMatchObject({ ok: true, authorized: true });
    expect((await connect(port, pki.clients.expired)).ok).toBe(false);
    expect((await connect(port, pki.clients.unknownCa)).ok).toBe(false);
    expect((await connect(port)).ok).toBe(false);
  });

  it('optional: every handshake succeeds, only a valid certificate is authorized', async () => {
    const { port } = await serve(
      createListenerTls(config({ clientCertificates: 'optional' }), { reloadIntervalMS: 1_000 }),
    );
    expect(await connect(port, pki.clients.spiffe)).toMatchObject({ ok: true, authorized: true });
    expect(await connect(port, pki.clients.expired)).toMatchObject({ ok: true, authorized: false });
    expect(await connect(port, pki.clients.unknownCa)).toMatchObject({ ok: true, authorized: false });
    expect(await connect(port)).toMatchObject({ ok: true, authorized: false });
  });

  it('none: no certificate is asked for', async () => {
    const { port } = await serve(
      createListenerTls(config({ clientCertificates: 'none', caFile: null }), { reloadIntervalMS: 1_000 }),
    );
    expect(await connect(port)).toMatchObject({ ok: true, authorized: false });
  });

  it('refuses TLS below the minimum version', async () => {
    const { port } = await serve(createListenerTls(config({ minVersion: 'TLSv1.3' }), { reloadIntervalMS: 1_000 }));
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      ca: await readFile(pki.caFile),
      maxVersion: 'TLSv1.2',
      servername: 'localhost',
    });
    cleanups.push(() => socket.destroy());
    await expect(once(socket, 'secureConnect')).rejects.toThrow();
  });

  it('a rotated server certificate reaches new connections; existing ones keep working', async () => {
    const files = await ownServerFiles('rotate-live');
    const listener = createListenerTls(config(files), { reloadIntervalMS: 25 });
    cleanups.push(() => listener.close());
    const { port, server } = await serve(listener);
    let applied = 0;
    listener.watch((options) => {
      server.setSecureContext(options);
      applied++;
    });

    const before = await connect(port, pki.clients.spiffe);
    expect(before.serial).toBe(pki.server.serialNumber);

    const next = await pki.issueClient({ name: 'rotate-live-next', cn: 'localhost', dns: ['localhost'] });
    await replaceFile(files.keyFile, next.keyPem);
    await replaceFile(files.certFile, next.certPem);
    await until(() => applied > 0 && serialOf(listener.secureContext()) === next.serialNumber, { timeoutMS: 5_000 });

    // A client certificate is not a server certificate (no serverAuth), so check only the serial.
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      rejectUnauthorized: false,
      cert: pki.clients.spiffe.certPem,
      key: pki.clients.spiffe.keyPem,
    });
    cleanups.push(() => socket.destroy());
    await once(socket, 'secureConnect');
    expect(socket.getPeerCertificate().serialNumber).toBe(next.serialNumber);

    before.socket?.write('still there');
    const [data] = (await once(before.socket!, 'data')) as [Buffer];
    expect(data.toString()).toBe('authorized:still there');
  });
});
