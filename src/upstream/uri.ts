/**
 * The upstream connection string: a standard `mongodb://` (or `mongodb+srv://`) URI parsed with
 * `mongodb-connection-string-url`, the package the official driver uses, then validated against
 * the subset of options the proxy implements. Anything else is a ConfigError naming the option,
 * because silently ignoring e.g. `readPreference` would make the proxy do something other than
 * what the operator wrote.
 *
 * Specs: mongodb/specifications source/connection-string/connection-string-spec.md,
 * source/uri-options/uri-options.md, source/auth/auth.md (credential rules),
 * source/initial-dns-seedlist-discovery (SRV and TXT records).
 */

import { promises as dnsPromises } from 'node:dns';
import { ConnectionString } from 'mongodb-connection-string-url';
import { maskUri } from '../secrets.js';
import type { CompressorName, HostPort } from '../config/types.js';
import { ConfigError } from '../errors.js';

const PATH = 'upstream.uri';

export const AuthMechanism = {
  scramSha1: 'SCRAM-SHA-1',
  scramSha256: 'SCRAM-SHA-256',
  x509: 'MONGODB-X509',
} as const;

export type AuthMechanismName = (typeof AuthMechanism)[keyof typeof AuthMechanism];

export interface UpstreamCredentials {
  /** Raw (percent-decoded, never SASLprep'd) user name; absent only for MONGODB-X509. */
  readonly username: string | undefined;
  readonly password: string | undefined;
  /** Database the authentication commands go to (`authSource`, else the URI database, else admin). */
  readonly source: string;
  /** Undefined: negotiate SCRAM-SHA-256 / SCRAM-SHA-1 from the hello's `saslSupportedMechs`. */
  readonly mechanism: AuthMechanismName | undefined;
}

export interface UpstreamTls {
  readonly caFile: string | undefined;
  readonly certificateKeyFile: string | undefined;
  readonly certificateKeyFilePassword: string | undefined;
  readonly allowInvalidCertificates: boolean;
  readonly allowInvalidHostnames: boolean;
}

export interface UpstreamSrv {
  /** The `mongodb+srv` host name, before resolution. */
  readonly hostname: string;
  readonly serviceName: string;
  /** 0: use every host the SRV record lists. */
  readonly maxHosts: number;
  /** The URI named authSource itself, so a TXT record's authSource does not apply. */
  readonly authSourceInUri: boolean;
}

export interface UpstreamTarget {
  /** Seed list; empty for an SRV URI until `resolveUpstreamTarget` fills it. */
  readonly hosts: readonly Readonly<HostPort>[];
  readonly srv: UpstreamSrv | undefined;
  readonly credentials: UpstreamCredentials | undefined;
  /** Undefined: plain TCP. */
  readonly tls: UpstreamTls | undefined;
  readonly replicaSet: string | undefined;
  /** True: talk to the single seed as is, never follow the hello to a primary. */
  readonly directConnection: boolean;
  /** Compressors to offer the upstream, in preference order. */
  readonly compressors: readonly CompressorName[];
  /** -1 is zlib's default level. */
  readonly zlibCompressionLevel: number;
  /** From the URI when given (0 = no timeout); otherwise the caller's configured value applies. */
  readonly connectTimeoutMS: number | undefined;
  readonly appName: string | undefined;
}

/**
 * Options accepted, by lower-case name. Everything the driver would act on but the proxy does
 * not (read preference, write concern, pool sizing, retry flags, ...) is rejected on purpose.
 */
const KNOWN_OPTIONS = new Set([
  'authsource',
  'authmechanism',
  'tls',
  'ssl',
  'tlscafile',
  'tlscertificatekeyfile',
  'tlscertificatekeyfilepassword',
  'tlsallowinvalidcertificates',
  'tlsallowinvalidhostnames',
  'tlsinsecure',
  'replicaset',
  'directconnection',
  'compressors',
  'zlibcompressionlevel',
  'connecttimeoutms',
  'appname',
  'srvservicename',
  'srvmaxhosts',
]);

/** Options that may legally appear more than once (with the same value). */
const REPEATABLE_OPTIONS = new Set(['tls', 'ssl']);

const COMPRESSORS: ReadonlySet<string> = new Set<CompressorName>(['zstd', 'snappy', 'zlib']);

/** Handshake spec: client.application.name must not exceed 128 bytes. */
const MAX_APP_NAME_BYTES = 128;

const DEFAULT_PORT = 27017;

/**
 * Parses and validates an upstream URI. Synchronous: an SRV URI comes back with `srv` set and
 * no hosts; call `resolveUpstreamTarget` to look the records up.
 */
export function parseUpstreamUri(uri: string): UpstreamTarget {
  let cs: ConnectionString;
  try {
    cs = new ConnectionString(uri);
  } catch (err) {
    // The parser's messages can quote the user-info section; never echo it.
    throw new ConfigError(PATH, `not a valid mongodb:// URI (${describeParseError(err)}): ${redactUri(uri)}`);
  }

  const options = collectOptions(cs);
  const isSrv = cs.isSRV;

  const bool = (name: string): boolean | undefined => parseBool(name, options.get(name));

  // --- hosts -------------------------------------------------------------------------------
  let hosts: HostPort[] = [];
  let srv: UpstreamSrv | undefined;
  if (isSrv) {
    const hostname = (cs.hosts[0] ?? '').toLowerCase();
    srv = {
      hostname,
      serviceName: options.get('srvservicename') ?? 'mongodb',
      maxHosts: parseInteger('srvMaxHosts', options.get('srvmaxhosts'), 0, 2 ** 31 - 1) ?? 0,
      authSourceInUri: options.has('authsource'),
    };
    if (!/^[A-Za-z0-9_-]+$/.test(srv.serviceName)) {
      throw new ConfigError(PATH, `srvServiceName "${srv.serviceName}" is not a valid DNS label`);
    }
  } else {
    if (options.has('srvservicename') || options.has('srvmaxhosts')) {
      throw new ConfigError(PATH, 'srvServiceName and srvMaxHosts need a mongodb+srv:// URI');
    }
    hosts = cs.hosts.map(parseHost);
  }

  // --- TLS ---------------------------------------------------------------------------------
  const tlsFlag = bool('tls');
  const sslFlag = bool('ssl');
  if (tlsFlag !== undefined && sslFlag !== undefined && tlsFlag !== sslFlag) {
    throw new ConfigError(PATH, 'tls and ssl must not disagree');
  }
  const insecure = bool('tlsinsecure');
  const allowInvalidCertificates = bool('tlsallowinvalidcertificates');
  const allowInvalidHostnames = bool('tlsallowinvalidhostnames');
  if (insecure !== undefined && allowInvalidCertificates !== undefined) {
    throw new ConfigError(PATH, 'tlsInsecure and tlsAllowInvalidCertificates must not both be given');
  }
  if (insecure !== undefined && allowInvalidHostnames !== undefined) {
    throw new ConfigError(PATH, 'tlsInsecure and tlsAllowInvalidHostnames must not both be given');
  }
  const caFile = nonEmpty('tlsCAFile', options.get('tlscafile'));
  const certificateKeyFile = nonEmpty('tlsCertificateKeyFile', options.get('tlscertificatekeyfile'));
  const certificateKeyFilePassword = options.get('tlscertificatekeyfilepassword');
  if (certificateKeyFilePassword !== undefined && certificateKeyFile === undefined) {
    throw new ConfigError(PATH, 'tlsCertificateKeyFilePassword needs tlsCertificateKeyFile');
  }
  const tlsOptionGiven = [...options.keys()].some((k) => k.startsWith('tls') && k !== 'tls');
  const explicitTls = tlsFlag ?? sslFlag;
  if (explicitTls === false && tlsOptionGiven) {
    throw new ConfigError(PATH, 'TLS options are given but tls=false');
  }
  // SRV implies TLS (seedlist discovery spec); a TLS option without tls= turns TLS on.
  const tlsEnabled = explicitTls ?? (isSrv || tlsOptionGiven);
  const tls: UpstreamTls | undefined = tlsEnabled
    ? Object.freeze({
        caFile,
        certificateKeyFile,
        certificateKeyFilePassword,
        allowInvalidCertificates: insecure ?? allowInvalidCertificates ?? false,
        allowInvalidHostnames: insecure ?? allowInvalidHostnames ?? false,
      })
    : undefined;

  // --- credentials -------------------------------------------------------------------------
  const credentials = parseCredentials(cs, options, tls);

  // --- topology ----------------------------------------------------------------------------
  const directConnection = bool('directconnection') ?? false;
  if (directConnection && isSrv) {
    throw new ConfigError(PATH, 'directConnection=true cannot be used with mongodb+srv://');
  }
  if (directConnection && hosts.length > 1) {
    throw new ConfigError(PATH, 'directConnection=true needs exactly one host');
  }
  const replicaSet = options.has('replicaset') ? nonEmpty('replicaSet', options.get('replicaset')) : undefined;

  // --- compression, timeouts, metadata -----------------------------------------------------
  const compressors: CompressorName[] = [];
  const compressorList = options.get('compressors');
  if (compressorList !== undefined) {
    for (const raw of compressorList.split(',')) {
      const name = raw.trim().toLowerCase();
      if (name === '' || name === 'noop') continue;
      if (!COMPRESSORS.has(name)) {
        throw new ConfigError(PATH, `compressors: unsupported compressor "${raw}" (zstd, snappy, zlib)`);
      }
      if (!compressors.includes(name as CompressorName)) compressors.push(name as CompressorName);
    }
  }
  const zlibCompressionLevel = parseInteger('zlibCompressionLevel', options.get('zlibcompressionlevel'), -1, 9) ?? -1;
  const connectTimeoutMS = parseInteger('connectTimeoutMS', options.get('connecttimeoutms'), 0, 2 ** 31 - 1);
  const appName = options.get('appname');
  if (appName !== undefined && Buffer.byteLength(appName, 'utf8') > MAX_APP_NAME_BYTES) {
    throw new ConfigError(PATH, `appName is longer than ${MAX_APP_NAME_BYTES} bytes`);
  }

  return Object.freeze({
    hosts: Object.freeze(hosts.map((hp) => Object.freeze(hp))),
    srv: srv === undefined ? undefined : Object.freeze(srv),
    credentials,
    tls,
    replicaSet,
    directConnection,
    compressors: Object.freeze(compressors),
    zlibCompressionLevel,
    connectTimeoutMS,
    appName,
  });
}

/** DNS look-ups `resolveUpstreamTarget` needs; node:dns/promises by default, a fake in tests. */
export interface SrvResolver {
  resolveSrv(name: string): Promise<{ name: string; port: number }[]>;
  resolveTxt(name: string): Promise<string[][]>;
}

/**
 * Fills the seed list of an SRV target from `_<service>._tcp.<host>` and applies the options
 * of its TXT record (only authSource and replicaSet may appear there; URI options win).
 * Returns non-SRV targets unchanged.
 */
export async function resolveUpstreamTarget(
  target: UpstreamTarget,
  resolver: SrvResolver = dnsPromises,
): Promise<UpstreamTarget> {
  const srv = target.srv;
  if (srv === undefined) return target;

  const parentDomain = srvParentDomain(srv.hostname);
  let records: { name: string; port: number }[];
  try {
    records = await resolver.resolveSrv(`_${srv.serviceName}._tcp.${srv.hostname}`);
  } catch (err) {
    throw new ConfigError(PATH, `SRV lookup for ${srv.hostname} failed: ${(err as Error).message}`);
  }
  let hosts: HostPort[] = records.map((r) => {
    const host = r.name.toLowerCase().replace(/\.$/, '');
    // Seedlist spec: every host must share the SRV name's parent domain, or DNS could send
    // the proxy (and its credentials) anywhere.
    if (!isWithinDomain(host, parentDomain, srv.hostname)) {
      throw new ConfigError(PATH, `SRV record host ${host} is not within ${parentDomain}`);
    }
    return { host, port: r.port };
  });
  if (hosts.length === 0) throw new ConfigError(PATH, `SRV lookup for ${srv.hostname} returned no hosts`);
  if (srv.maxHosts > 0 && hosts.length > srv.maxHosts) {
    hosts = shuffle(hosts).slice(0, srv.maxHosts);
  }

  let txt: string[][] = [];
  try {
    txt = await resolver.resolveTxt(srv.hostname);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENODATA' && code !== 'ENOTFOUND') {
      throw new ConfigError(PATH, `TXT lookup for ${srv.hostname} failed: ${(err as Error).message}`);
    }
  }
  if (txt.length > 1) throw new ConfigError(PATH, `${srv.hostname} has more than one TXT record`);
  let replicaSet = target.replicaSet;
  let credentials = target.credentials;
  if (txt.length === 1) {
    const params = new URLSearchParams((txt[0] ?? []).join(''));
    for (const [key, value] of params) {
      const lower = key.toLowerCase();
      if (lower === 'replicaset') {
        replicaSet ??= value;
      } else if (lower === 'authsource') {
        if (credentials !== undefined && credentials.mechanism !== AuthMechanism.x509 && !srv.authSourceInUri) {
          credentials = Object.freeze({ ...credentials, source: value });
        }
      } else {
        throw new ConfigError(PATH, `TXT record option "${key}" is not allowed (authSource, replicaSet)`);
      }
    }
  }

  return Object.freeze({
    ...target,
    hosts: Object.freeze(hosts.map((hp) => Object.freeze(hp))),
    replicaSet,
    credentials,
  });
}

/** Parses and, for mongodb+srv, resolves: the one call most callers need. */
export async function loadUpstreamTarget(uri: string, resolver?: SrvResolver): Promise<UpstreamTarget> {
  return resolveUpstreamTarget(parseUpstreamUri(uri), resolver);
}

/** The URI with the password (and a TLS key password) masked, safe for logs. */
/** The URI with its password and secret options masked, for logs and errors. */
export const redactUri = maskUri;

export function formatAddress(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** `host:port` or `[v6]:port` as a hello's `primary`/`hosts` lists it. */
export function parseAddress(address: string): HostPort {
  return parseHost(address);
}

// -------------------------------------------------------------------------------------------

function collectOptions(cs: ConnectionString): Map<string, string> {
  const out = new Map<string, string>();
  for (const [rawKey, value] of cs.searchParams) {
    const key = rawKey.toLowerCase();
    if (!KNOWN_OPTIONS.has(key)) {
      // Driver-side behaviour (retryWrites, w, readPreference, pool sizes…) belongs on the
      // clients' own connection strings; silently ignoring it here would mislead.
      throw new ConfigError(
        PATH,
        `unsupported URI option "${rawKey}": the upstream URI takes only hosts, credentials, TLS, replicaSet, directConnection, compressors, connectTimeoutMS and appName; set driver behaviour on the clients' connection strings`,
      );
    }
    const previous = out.get(key);
    if (previous !== undefined && (!REPEATABLE_OPTIONS.has(key) || previous !== value)) {
      throw new ConfigError(PATH, `URI option "${rawKey}" is given more than once`);
    }
    out.set(key, value);
  }
  return out;
}

function parseCredentials(
  cs: ConnectionString,
  options: Map<string, string>,
  tls: UpstreamTls | undefined,
): UpstreamCredentials | undefined {
  const rawMechanism = options.get('authmechanism');
  let mechanism: AuthMechanismName | undefined;
  if (rawMechanism !== undefined) {
    const upper = rawMechanism.toUpperCase();
    const known = Object.values(AuthMechanism).find((m) => m === upper);
    if (known === undefined) {
      throw new ConfigError(
        PATH,
        `authMechanism "${rawMechanism}" is not supported (SCRAM-SHA-256, SCRAM-SHA-1, MONGODB-X509)`,
      );
    }
    mechanism = known;
  }
  // Auth spec: the "@" delimiter means credentials, even if empty. WHATWG URL keeps them
  // percent-encoded.
  const hasUserInfo = cs.username !== '' || cs.password !== '';
  const username = hasUserInfo ? decode(cs.username, 'user name') : undefined;
  const password = cs.password !== '' ? decode(cs.password, 'password') : undefined;
  const database = cs.pathname.length > 1 ? decode(cs.pathname.slice(1), 'database') : undefined;
  if (database !== undefined && /[/\\. "$\0]/.test(database)) {
    throw new ConfigError(PATH, `database name "${database}" contains a character MongoDB forbids`);
  }
  const authSource = options.get('authsource');

  if (!hasUserInfo && mechanism === undefined) {
    // authSource alone does not ask for authentication (auth spec); it is just unused.
    return undefined;
  }

  if (mechanism === AuthMechanism.x509) {
    if (password !== undefined) throw new ConfigError(PATH, 'MONGODB-X509 takes no password');
    if (authSource !== undefined && authSource !== '$external') {
      throw new ConfigError(PATH, 'MONGODB-X509 authenticates against $external only');
    }
    if (tls === undefined || tls.certificateKeyFile === undefined) {
      throw new ConfigError(PATH, 'MONGODB-X509 needs tls=true and tlsCertificateKeyFile');
    }
    return Object.freeze({ username: username || undefined, password: undefined, source: '$external', mechanism });
  }

  if (username === undefined || username === '') {
    throw new ConfigError(PATH, `${mechanism ?? 'SCRAM'} needs a user name`);
  }
  if (password === undefined) {
    throw new ConfigError(PATH, `${mechanism ?? 'SCRAM'} needs a password`);
  }
  return Object.freeze({ username, password, source: authSource ?? database ?? 'admin', mechanism });
}

function parseHost(raw: string): HostPort {
  let host: string;
  let portText: string | undefined;
  if (raw.startsWith('[')) {
    const close = raw.indexOf(']');
    if (close < 0) throw new ConfigError(PATH, `invalid host "${raw}"`);
    host = raw.slice(1, close);
    const rest = raw.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) throw new ConfigError(PATH, `invalid host "${raw}"`);
    portText = rest === '' ? undefined : rest.slice(1);
  } else {
    if (raw.includes('%2F') || raw.includes('%2f') || raw.endsWith('.sock')) {
      throw new ConfigError(PATH, 'Unix domain socket hosts are not supported');
    }
    const colon = raw.lastIndexOf(':');
    if (colon >= 0 && raw.indexOf(':') !== colon) {
      throw new ConfigError(PATH, `IPv6 host "${raw}" must be written in brackets`);
    }
    host = colon < 0 ? raw : raw.slice(0, colon);
    portText = colon < 0 ? undefined : raw.slice(colon + 1);
  }
  if (host === '') throw new ConfigError(PATH, `empty host in "${raw}"`);
  let port = DEFAULT_PORT;
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
      throw new ConfigError(PATH, `invalid port in "${raw}"`);
    }
    port = Number(portText);
  }
  return { host: host.toLowerCase(), port };
}

function parseBool(name: string, value: string | undefined): boolean | undefined {
  if (value === undefined) return undefined;
  const lower = value.toLowerCase();
  if (lower === 'true') return true;
  if (lower === 'false') return false;
  throw new ConfigError(PATH, `${canonicalName(name)} must be true or false, not "${value}"`);
}

function parseInteger(name: string, value: string | undefined, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  if (!/^-?\d+$/.test(value) || Number(value) < min || Number(value) > max) {
    throw new ConfigError(PATH, `${name} must be an integer from ${min} to ${max}, not "${value}"`);
  }
  return Number(value);
}

function nonEmpty(name: string, value: string | undefined): string | undefined {
  if (value === '') throw new ConfigError(PATH, `${name} must not be empty`);
  return value;
}

function decode(value: string, what: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    throw new ConfigError(PATH, `${what} in the URI is not valid percent-encoding`);
  }
}

function describeParseError(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  // "Username contains unescaped characters <name>" and similar quote user-info; drop the tail.
  return message.replace(/(unescaped characters).*$/i, '$1').slice(0, 200);
}

const CANONICAL_NAMES = new Map(
  ['tls', 'ssl', 'tlsInsecure', 'tlsAllowInvalidCertificates', 'tlsAllowInvalidHostnames', 'directConnection'].map(
    (n) => [n.toLowerCase(), n],
  ),
);

function canonicalName(lower: string): string {
  return CANONICAL_NAMES.get(lower) ?? lower;
}

/** The domain SRV results must fall within: the SRV name minus its first label. */
function srvParentDomain(hostname: string): string {
  const labels = hostname.split('.');
  if (labels.length < 2 || labels.some((l) => l === '')) {
    throw new ConfigError(PATH, `mongodb+srv host "${hostname}" must be a domain name`);
  }
  // Names with fewer than three labels are their own parent (seedlist spec, 2024 revision).
  return labels.length < 3 ? hostname : labels.slice(1).join('.');
}

function isWithinDomain(host: string, parent: string, srvHost: string): boolean {
  if (host === srvHost && parent === srvHost) return false; // must be a sub-domain, not the name itself
  return host.endsWith(`.${parent}`);
}

function shuffle<T>(items: T[]): T[] {
  const out = items.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}
