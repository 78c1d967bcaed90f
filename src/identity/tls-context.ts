/**
 * TLS material of one client-facing listener: the server certificate chain and key, the CA
 * bundle client certificates are verified against, and hot reload of all three.
 *
 * Files are read and checked at creation (a problem is a ConfigError naming the field, e.g.
 * `listeners[0].tls.keyFile`, never a secret). `watch()` polls the files; after a change the new
 * material is read and loaded into a throw-away SecureContext first, and only material that loads
 * (a parsable chain, a key that decrypts and matches the certificate, a parsable CA bundle)
 * replaces the current one and reaches `onChange`. A half-written or broken file keeps the old
 * material and is reported through `onReload(false, error)`; the next change is tried again.
 *
 * The server layer applies `onChange` with `server.setSecureContext(options)`, which affects new
 * handshakes only: established connections keep the context they were accepted with.
 *
 * Client certificate modes map onto Node's server options:
 * - `none`: no certificate is requested;
 * - `optional`: requested; the handshake also succeeds without one or with one that does not
 *   verify, and the socket reports `authorized: false` (no tenant can come from it);
 * - `required`: requested and verified during the handshake; anything else is refused.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import * as tls from 'node:tls';
import type { ListenerTlsConfig } from '../config/types.js';
import { ConfigError, InvariantError } from '../errors.js';
import { watchFiles, type FileWatch } from './file-watch.js';

export interface ListenerTlsOptions {
  /** How often the certificate, key and CA files are checked for changes. */
  reloadIntervalMS: number;
  /** After each reload attempt: `ok` false means the old material stays in use. */
  onReload?(ok: boolean, error?: Error): void;
  /** Config path of this TLS block for error messages; default `tls` (e.g. `listeners[0].tls`). */
  path?: string;
}

export interface ListenerTls {
  /** Options for `tls.createServer`: current material plus the client certificate policy. */
  serverOptions(): tls.TlsOptions;
  /** The current material, as `server.setSecureContext()` takes it. */
  secureContext(): tls.SecureContextOptions;
  /** Starts watching the files; `onChange` receives each new material that loads. Once only. */
  watch(onChange: (options: tls.SecureContextOptions) => void): void;
  /** Stops watching. */
  close(): void;
}

interface Material {
  cert: Buffer;
  key: Buffer;
  ca: Buffer | undefined;
}

export function createListenerTls(config: ListenerTlsConfig, options: ListenerTlsOptions): ListenerTls {
  const path = options.path ?? 'tls';
  if (config.clientCertificates !== 'none' && config.caFile === null) {
    // Without a CA file Node would verify client certificates against the public root store.
    throw new ConfigError(
      `${path}.caFile`,
      `is required when clientCertificates is ${config.clientCertificates} (client certificates are verified against it)`,
    );
  }

  let current = validate(config, readAllSync(config, path), path);
  let watcher: FileWatch | undefined;
  let closed = false;
  let reloading: Promise<void> = Promise.resolve();

  const secureContext = (): tls.SecureContextOptions => contextOptions(config, current);

  const reload = async (onChange: (options: tls.SecureContextOptions) => void): Promise<void> => {
    let next: Material;
    try {
      next = validate(config, await readAll(config, path), path);
    } catch (error) {
      if (!closed) options.onReload?.(false, error instanceof Error ? error : new Error(String(error)));
      return;
    }
    if (closed) return;
    const previous = current;
    current = next;
    try {
      onChange(secureContext());
    } catch (error) {
      // The server refused it: keep serving (and reporting) what it still uses.
      current = previous;
      options.onReload?.(false, error instanceof Error ? error : new Error(String(error)));
      return;
    }
    options.onReload?.(true);
  };

  return {
    serverOptions(): tls.TlsOptions {
      return {
        ...secureContext(),
        requestCert: config.clientCertificates !== 'none',
        rejectUnauthorized: config.clientCertificates === 'required',
      };
    },
    secureContext,
    watch(onChange) {
      if (watcher !== undefined) throw new InvariantError('createListenerTls: watch() was already called');
      if (closed) return;
      const files = [config.certFile, config.keyFile, ...(config.caFile === null ? [] : [config.caFile])];
      watcher = watchFiles(files, options.reloadIntervalMS, () => {
        // One reload at a time, in order; a change seen meanwhile reloads again afterwards.
        reloading = reloading.then(() => reload(onChange)).catch(() => undefined);
      });
    },
    close() {
      closed = true;
      watcher?.close();
    },
  };
}

function contextOptions(config: ListenerTlsConfig, material: Material): tls.SecureContextOptions {
  return {
    cert: material.cert,
    key: material.key,
    ...(config.keyPassphrase === null ? {} : { passphrase: config.keyPassphrase }),
    ...(material.ca === undefined ? {} : { ca: material.ca }),
    minVersion: config.minVersion,
  };
}

function readAllSync(config: ListenerTlsConfig, path: string): Material {
  const read = (field: string, file: string): Buffer => {
    try {
      return readFileSync(file);
    } catch (error) {
      throw unreadable(path, field, file, error);
    }
  };
  return {
    cert: read('certFile', config.certFile),
    key: read('keyFile', config.keyFile),
    ca: config.caFile === null ? undefined : read('caFile', config.caFile),
  };
}

async function readAll(config: ListenerTlsConfig, path: string): Promise<Material> {
  const read = async (field: string, file: string): Promise<Buffer> => {
    try {
      return await readFile(file);
    } catch (error) {
      throw unreadable(path, field, file, error);
    }
  };
  const [cert, key, ca] = await Promise.all([
    read('certFile', config.certFile),
    read('keyFile', config.keyFile),
    config.caFile === null ? undefined : read('caFile', config.caFile),
  ]);
  return { cert, key, ca };
}

function unreadable(path: string, field: string, file: string, error: unknown): ConfigError {
  const code = (error as NodeJS.ErrnoException).code ?? 'error';
  return new ConfigError(`${path}.${field}`, `${file} cannot be read (${code})`);
}

/**
 * Loads the material the way the TLS server will and names the field at fault. Returns the
 * material unchanged when it is usable. Messages are OpenSSL's reasons: they never echo a
 * passphrase or key bytes.
 */
function validate(config: ListenerTlsConfig, material: Material, path: string): Material {
  try {
    new X509Certificate(material.cert);
  } catch (error) {
    throw new ConfigError(`${path}.certFile`, `${config.certFile} holds no PEM certificate (${reason(error)})`);
  }
  try {
    createPrivateKey({
      key: material.key,
      format: 'pem',
      ...(config.keyPassphrase === null ? {} : { passphrase: config.keyPassphrase }),
    });
  } catch (error) {
    // OpenSSL 3 reports a missing passphrase as "interrupted or cancelled": look at the PEM.
    const encrypted = /-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(
      material.key.toString('latin1'),
    );
    if (encrypted && config.keyPassphrase === null) {
      throw new ConfigError(`${path}.keyPassphrase`, `${config.keyFile} is encrypted and no passphrase is set`);
    }
    if (encrypted) {
      throw new ConfigError(`${path}.keyPassphrase`, `does not decrypt ${config.keyFile}`);
    }
    throw new ConfigError(`${path}.keyFile`, `${config.keyFile} holds no usable PEM private key (${reason(error)})`);
  }
  if (material.ca !== undefined) {
    // OpenSSL silently skips what it cannot parse in a CA bundle, so a truncated or garbled
    // bundle would quietly trust fewer CAs (or none): check every block here.
    const problem = caBundleProblem(material.ca);
    if (problem !== undefined) throw new ConfigError(`${path}.caFile`, `${config.caFile ?? ''} ${problem}`);
  }
  try {
    tls.createSecureContext(contextOptions(config, material));
  } catch (error) {
    // Typically "key values mismatch": the key is not the certificate's.
    throw new ConfigError(
      `${path}.keyFile`,
      `${config.keyFile} does not load with ${config.certFile} (${reason(error)})`,
    );
  }
  return material;
}

const BEGIN = '-----BEGIN CERTIFICATE-----';
const END = '-----END CERTIFICATE-----';

function caBundleProblem(bundle: Buffer): string | undefined {
  const text = bundle.toString('latin1');
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) return 'holds no PEM certificate';
  if (text.split(BEGIN).length - 1 !== blocks.length || text.split(END).length - 1 !== blocks.length) {
    return 'has an incomplete PEM certificate block';
  }
  for (const [index, block] of blocks.entries()) {
    try {
      new X509Certificate(block);
    } catch (error) {
      return `certificate #${index + 1} cannot be parsed (${reason(error)})`;
    }
  }
  return undefined;
}

function reason(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
