/**
 * TLS settings for upstream sockets, built once per Upstream from the URI's tls* options: the
 * files are read and the key decrypted at start-up, so a wrong path or key password is a
 * ConfigError before any connection is attempted, and each connection reuses one SecureContext.
 *
 * Defaults are strict: the server certificate must chain to the CA file (or the system roots
 * when no CA file is given) and match the host name, unless the URI relaxes that explicitly.
 */

import { readFile } from 'node:fs/promises';
import * as tls from 'node:tls';
import { ConfigError } from '../errors.js';
import type { UpstreamTls } from './uri.js';

const PATH = 'upstream.uri';

export async function loadTlsOptions(settings: UpstreamTls): Promise<tls.ConnectionOptions> {
  const ca = settings.caFile === undefined ? undefined : await readPem('tlsCAFile', settings.caFile);
  const certKey =
    settings.certificateKeyFile === undefined
      ? undefined
      : await readPem('tlsCertificateKeyFile', settings.certificateKeyFile);

  let secureContext: tls.SecureContext;
  try {
    secureContext = tls.createSecureContext({
      ...(ca === undefined ? {} : { ca }),
      // tlsCertificateKeyFile holds the certificate and its key in one PEM file; OpenSSL picks
      // the block it needs from each.
      ...(certKey === undefined
        ? {}
        : { cert: certKey, key: certKey, passphrase: settings.certificateKeyFilePassword }),
    });
  } catch (error) {
    // OpenSSL's reason ("bad decrypt", "no start line") names no secret.
    const reason = error instanceof Error ? error.message : String(error);
    throw new ConfigError(PATH, `TLS certificate, key or CA could not be loaded: ${reason}`);
  }

  const options: tls.ConnectionOptions = {
    secureContext,
    rejectUnauthorized: !settings.allowInvalidCertificates,
  };
  if (settings.allowInvalidHostnames) options.checkServerIdentity = () => undefined;
  return options;
}

async function readPem(option: string, file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    throw new ConfigError(PATH, `${option} ${file} cannot be read (${code})`);
  }
}
