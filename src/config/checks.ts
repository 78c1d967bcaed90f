/**
 * Rules across fields that JSON Schema cannot express, checked after the schema passed (so the
 * data has its defaults and the right types) and reported like schema errors: one line each,
 * naming the field (`listeners[1].tls.caFile: …`) and where its value came from.
 */

import { isIPv4, isIPv6 } from 'node:net';
import { tryParseHostPort } from './host-port.js';
import { originOf, pathKey, type PathSegment } from './layers.js';

/** One problem: the field and what is wrong (without the path). */
export interface CrossFieldIssue {
  path: string;
  message: string;
}

/** The file-shaped data these rules read; the schema guarantees these types. */
interface FileTls {
  certFile: string;
  keyFile: string;
  caFile: string | null;
  clientCertificates: 'none' | 'optional' | 'required';
}

interface FileListener {
  name: string;
  listen: string;
  tls: FileTls | null;
  methods: string[];
  staticTenant: string | null;
}

interface FilePassthroughRule {
  user?: string;
  userPattern?: string;
  role?: string;
  db?: string;
  tenant?: string;
}

interface FileIdentity {
  certificateRules: { field: string; pattern: string }[];
  scram: { credentialsFile: string | null };
  passthrough: { rules: FilePassthroughRule[] };
  jwt: { keyFile: string | null; jwksFile: string | null; audience: string | null };
  failureDelay: { baseMS: number; maxMS: number };
}

interface FileIsolation {
  mode: string;
  tenantField: string;
  defaultModel: string;
  databaseTemplate: string;
  collectionTemplate: string;
  namespaces: { match: string; model?: string; access?: string }[];
  sessionKey: string | null;
}

/** Characters MongoDB refuses in database names (Unix and Windows), plus NUL. */
const DB_NAME_FORBIDDEN = /[/\\. "$*<>:|?\0]/;
/** Longest database name MongoDB accepts, in bytes. */
const MAX_DB_NAME_BYTES = 63;
/** Characters the escaped tenant is made of (src/policy/namespaces.ts); a separator must not be one, in any case. */
const ESCAPED_TENANT_CHAR = /[A-Za-z0-9-]/;

/**
 * Checks a physical-name template: `{tenant}` and `{<placeholder>}` exactly once each, no other
 * braces, and a separator between them whose character next to `{tenant}` cannot be part of an
 * escaped tenant, so the mapping is injective (catalogue 64). Returns what is wrong, or null.
 */
export function templateProblem(template: string, placeholder: 'db' | 'collection'): string | null {
  const other = `{${placeholder}}`;
  const count = (needle: string): number => template.split(needle).length - 1;
  if (count('{tenant}') !== 1 || count(other) !== 1) return `must contain {tenant} and ${other} exactly once each`;
  const literal = template.replace('{tenant}', '').replace(other, '');
  if (/[{}]/.test(literal)) return `may contain no braces other than {tenant} and ${other}`;
  const tenantAt = template.indexOf('{tenant}');
  const otherAt = template.indexOf(other);
  const between = tenantAt < otherAt ? template.slice(tenantAt + 8, otherAt) : template.slice(otherAt + other.length, tenantAt);
  const boundary = tenantAt < otherAt ? between[0] : between[between.length - 1];
  if (boundary === undefined || ESCAPED_TENANT_CHAR.test(boundary)) {
    return (
      `needs a separator between {tenant} and ${other} whose character next to {tenant} is not a letter, a digit ` +
      `or "-" (e.g. "{tenant}_${other}"), or two tenants could map to the same name`
    );
  }
  if (placeholder === 'db') {
    if (DB_NAME_FORBIDDEN.test(literal)) return 'would make invalid database names: MongoDB refuses /\\. "$*<>:|? and NUL in them';
    if (Buffer.byteLength(literal) + 2 > MAX_DB_NAME_BYTES) return `leaves no room for names within ${MAX_DB_NAME_BYTES} bytes`;
  } else {
    if (/[$\0]/.test(literal)) return 'would make invalid collection names: MongoDB refuses "$" and NUL in them';
    if (template.startsWith('system.')) return 'would make system collections (names starting with "system.")';
  }
  return null;
}

/** A `db.collection` glob from isolation.namespaces: what is wrong with it, or null. */
export function namespaceGlobProblem(match: string): string | null {
  const dot = match.indexOf('.');
  if (dot <= 0 || dot === match.length - 1) return 'must be "db.collection" (a glob such as "app.*"), with both parts non-empty';
  const db = match.slice(0, dot);
  const coll = match.slice(dot + 1);
  if (/[/\\ "$<>:|?\0]/.test(db)) return 'has a character MongoDB refuses in database names (/\\ "$<>:|? NUL)';
  if (/[$\0]/.test(coll)) return 'has "$" or NUL in the collection part';
  if (['admin', 'local', 'config'].includes(db)) return `names database "${db}", which is never reachable through the proxy`;
  if (coll.startsWith('system.')) return 'names system collections, which are never reachable through the proxy';
  return null;
}

/** Shortest isolation.sessionKey accepted. */
export const MIN_SESSION_KEY_LENGTH = 32;

/**
 * Lines the proxy logs at warn level (and repeats) at start-up for this isolation section; the
 * one for `audit-only` is deliberately loud: nothing is enforced in that mode.
 */
export function isolationWarnings(isolation: { mode: string }): string[] {
  if (isolation.mode !== 'audit-only') return [];
  return [
    'ISOLATION IS NOT ENFORCED: isolation.mode is "audit-only". Every decision is only logged and counted; ' +
      "tenants can read, change and delete each other's data. Use it only to roll out new rules, never in production.",
  ];
}

/**
 * Compiles a configured pattern with the flags the identity layer uses (certificate rules: `u`;
 * passthrough user patterns: none) and tells whether it has a named group `tenant`; `error`
 * says why it does not compile.
 */
export function inspectPattern(pattern: string, flags = ''): { error: string } | { hasTenantGroup: boolean } {
  try {
    new RegExp(pattern, flags);
  } catch (error) {
    return { error: error instanceof Error ? error.message : String(error) };
  }
  // Matching "" through an empty alternative lists every named group of the pattern.
  const groups = new RegExp(`(?:${pattern})|`, flags).exec('')?.groups;
  return { hasTenantGroup: groups !== undefined && Object.hasOwn(groups, 'tenant') };
}

/** Certificate rule patterns are compiled with the Unicode flag (src/identity/certificates.ts). */
const CERTIFICATE_PATTERN_FLAGS = 'u';

/**
 * The host written canonically: lower case, IPv6 compressed (`0:0::1` → `::1`), without a
 * trailing dot.
 */
function canonicalHost(host: string): string {
  if (isIPv6(host)) {
    try {
      return new URL(`http://[${host}]/`).hostname.slice(1, -1);
    } catch {
      return host.toLowerCase(); // zone ids (fe80::1%eth0) are not URL hosts
    }
  }
  return host.toLowerCase().replace(/\.$/, '');
}

/** 127.0.0.0/8, ::1 (also IPv4-mapped loopback) and `localhost`. */
export function isLoopbackHost(host: string): boolean {
  const canonical = canonicalHost(host);
  if (canonical === 'localhost' || canonical === '::1') return true;
  if (isIPv4(canonical)) return canonical.startsWith('127.');
  // ::ffff:127.0.0.1 is written ::ffff:7f00:1 once canonical.
  return /^::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}$/.test(canonical);
}

/** Whether two listener hosts would compete for the same port. */
function hostsOverlap(a: string, b: string): boolean {
  if (a === b || a === '::' || b === '::') return true;
  // 0.0.0.0 takes the port on every IPv4 address (and on what host names resolve to).
  return (a === '0.0.0.0' && !isIPv6(b)) || (b === '0.0.0.0' && !isIPv6(a));
}

export function crossFieldIssues(data: Record<string, unknown>, sources: ReadonlyMap<string, string>): CrossFieldIssue[] {
  const issues: CrossFieldIssue[] = [];
  const report = (path: readonly PathSegment[], text: string): void => {
    const key = pathKey(path);
    const origin = originOf(sources, key);
    issues.push({ path: key, message: origin === undefined ? text : `${text} (from ${origin})` });
  };
  const listeners = data['listeners'] as FileListener[];
  const identity = data['identity'] as FileIdentity;
  const isolation = data['isolation'] as FileIsolation;
  const label = (index: number): string => `listeners[${index}] "${listeners[index]?.name ?? ''}"`;

  const names = new Map<string, number>();
  const addresses: { host: string; port: number; text: string; index: number }[] = [];
  const firstUsing = new Map<string, number>();

  listeners.forEach((listener, index) => {
    const at = (...path: PathSegment[]): PathSegment[] => ['listeners', index, ...path];
    for (const method of listener.methods) if (!firstUsing.has(method)) firstUsing.set(method, index);

    const sameName = names.get(listener.name);
    if (sameName !== undefined) {
      report(at('name'), `"${listener.name}" is already the name of listeners[${sameName}]; listener names must be unique`);
    } else {
      names.set(listener.name, index);
    }

    const parsed = tryParseHostPort(listener.listen);
    if (parsed.ok && parsed.value.port !== 0) {
      const host = canonicalHost(parsed.value.host);
      const clash = addresses.find((other) => other.port === parsed.value.port && hostsOverlap(other.host, host));
      if (clash !== undefined) {
        report(
          at('listen'),
          clash.host === host
            ? `${listener.listen} is already the address of ${label(clash.index)}`
            : `${listener.listen} overlaps ${clash.text} of ${label(clash.index)} (same port)`,
        );
      }
      addresses.push({ host, port: parsed.value.port, text: listener.listen, index });
    }

    const { tls } = listener;
    const mtls = listener.methods.includes('mtls');
    if (mtls && tls === null) {
      report(at('tls'), 'method "mtls" needs TLS with a caFile and clientCertificates "optional" or "required"');
    }
    if (tls !== null) {
      if (mtls && tls.clientCertificates === 'none') {
        report(at('tls', 'clientCertificates'), 'must be "optional" or "required" for method "mtls" (got "none")');
      }
      if (tls.caFile === null && (mtls || tls.clientCertificates !== 'none')) {
        const why = mtls ? 'by method "mtls"' : `when clientCertificates is "${tls.clientCertificates}"`;
        report(at('tls', 'caFile'), `is required ${why}: client certificates are verified against this CA bundle only`);
      }
    }

    const isStatic = listener.methods.includes('static');
    if (isStatic && listener.staticTenant === null) {
      report(at('staticTenant'), 'is required when methods include "static"');
    }
    if (isStatic && listener.methods.length > 1) {
      report(
        at('methods'),
        '"static" fixes the tenant of every connection, so it cannot be combined with other methods on one listener; use a separate listener',
      );
    }
    if (!isStatic && listener.staticTenant !== null) {
      report(at('staticTenant'), 'is set but methods do not include "static"; add "static" or remove staticTenant');
    }
    if (isStatic && parsed.ok && !isLoopbackHost(parsed.value.host) && tls?.clientCertificates !== 'required') {
      report(
        at('methods'),
        '"static" gives every connection the tenant without authenticating it, so it is allowed only on a ' +
          'loopback address (127.0.0.0/8, ::1, localhost) or on TLS with clientCertificates "required" ' +
          `(got ${listener.listen}${tls === null ? ' without TLS' : `, clientCertificates "${tls.clientCertificates}"`})`,
      );
    }
  });

  const usedBy = (method: string): string | undefined => {
    const index = firstUsing.get(method);
    return index === undefined ? undefined : label(index);
  };

  // Method mtls: certificate rules.
  identity.certificateRules.forEach((rule, index) => {
    const inspected = inspectPattern(rule.pattern, CERTIFICATE_PATTERN_FLAGS);
    const path = ['identity', 'certificateRules', index, 'pattern'];
    if ('error' in inspected) report(path, `is not a valid JavaScript regular expression (Unicode mode): ${inspected.error}`);
    else if (!inspected.hasTenantGroup) report(path, 'must have a named group "tenant", e.g. (?<tenant>[a-z0-9-]+)');
  });
  const mtlsUser = usedBy('mtls');
  if (mtlsUser !== undefined && identity.certificateRules.length === 0) {
    report(['identity', 'certificateRules'], `needs at least one rule for method "mtls" (${mtlsUser}): no certificate would map to a tenant`);
  }

  // Method scram.
  const scramUser = usedBy('scram');
  if (scramUser !== undefined && identity.scram.credentialsFile === null) {
    report(['identity', 'scram', 'credentialsFile'], `is required by method "scram" (${scramUser})`);
  }

  // Method scram-passthrough: rules.
  identity.passthrough.rules.forEach((rule, index) => {
    const path = ['identity', 'passthrough', 'rules', index];
    const selectors = (['user', 'userPattern', 'role'] as const).filter((name) => rule[name] !== undefined);
    if (selectors.length !== 1) {
      report(
        path,
        `must have exactly one of user, userPattern or role (got ${selectors.length === 0 ? 'none' : selectors.join(' and ')})`,
      );
    }
    let tenantGroup = false;
    if (rule.userPattern !== undefined) {
      const inspected = inspectPattern(rule.userPattern);
      if ('error' in inspected) {
        report([...path, 'userPattern'], `is not a valid JavaScript regular expression: ${inspected.error}`);
        return;
      }
      tenantGroup = inspected.hasTenantGroup;
    }
    const roleDb = rule.role === undefined || !rule.role.includes('@') ? undefined : rule.role.slice(rule.role.lastIndexOf('@') + 1);
    if (roleDb !== undefined && rule.db !== undefined && roleDb !== rule.db) {
      report([...path, 'db'], `conflicts with the database in role "${rule.role ?? ''}"; set only one`);
    }
    if (rule.tenant === undefined && !tenantGroup) {
      report([...path, 'tenant'], 'is required unless userPattern has a named group "tenant"');
    } else if (rule.tenant !== undefined && tenantGroup) {
      report([...path, 'tenant'], 'conflicts with the "tenant" group of userPattern; set only one');
    }
  });
  const passthroughUser = usedBy('scram-passthrough');
  if (passthroughUser !== undefined && identity.passthrough.rules.length === 0) {
    report(
      ['identity', 'passthrough', 'rules'],
      `needs at least one rule for method "scram-passthrough" (${passthroughUser}): no user would map to a tenant`,
    );
  }

  // Method plain-jwt.
  const { jwt } = identity;
  const jwtUser = usedBy('plain-jwt');
  if (jwt.keyFile !== null && jwt.jwksFile !== null) {
    report(['identity', 'jwt', 'jwksFile'], 'set only one of keyFile and jwksFile');
  } else if (jwtUser !== undefined && jwt.keyFile === null && jwt.jwksFile === null) {
    report(['identity', 'jwt', 'keyFile'], `method "plain-jwt" (${jwtUser}) needs keyFile or jwksFile to verify tokens with`);
  }
  if (jwtUser !== undefined && jwt.audience === null) {
    report(['identity', 'jwt', 'audience'], `is required by method "plain-jwt" (${jwtUser}): tokens minted for other services must not be accepted`);
  }

  const { baseMS, maxMS } = identity.failureDelay;
  if (baseMS > maxMS) report(['identity', 'failureDelay', 'baseMS'], `must be <= maxMS (${maxMS}) (got ${baseMS})`);

  // Isolation.
  const field = isolation.tenantField;
  if (field === '_id') {
    report(['isolation', 'tenantField'], 'must not be "_id" (the _id index is global and cannot hold the tenant)');
  } else if (/[$.\0]/.test(field)) {
    report(['isolation', 'tenantField'], `must be a plain top-level field name, without "$", "." or NUL (got ${JSON.stringify(field)})`);
  }
  const databaseProblem = templateProblem(isolation.databaseTemplate, 'db');
  if (databaseProblem !== null) report(['isolation', 'databaseTemplate'], `${databaseProblem} (got ${JSON.stringify(isolation.databaseTemplate)})`);
  const collectionProblem = templateProblem(isolation.collectionTemplate, 'collection');
  if (collectionProblem !== null) {
    report(['isolation', 'collectionTemplate'], `${collectionProblem} (got ${JSON.stringify(isolation.collectionTemplate)})`);
  }
  isolation.namespaces.forEach((rule, index) => {
    const problem = namespaceGlobProblem(rule.match);
    if (problem !== null) report(['isolation', 'namespaces', index, 'match'], `${problem} (got ${JSON.stringify(rule.match)})`);
    if (rule.model === undefined && rule.access === undefined) {
      report(['isolation', 'namespaces', index], 'sets neither model nor access, so it changes nothing; set one or remove the rule');
    }
  });
  if (isolation.sessionKey !== null && isolation.sessionKey.length < MIN_SESSION_KEY_LENGTH) {
    report(['isolation', 'sessionKey'], `must be at least ${MIN_SESSION_KEY_LENGTH} characters (a random secret)`);
  }

  return issues;
}
