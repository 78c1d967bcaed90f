/**
 * What a configuration reload changes while the proxy runs, and what needs a restart. Pure: it
 * compares two validated configurations and says which one to run.
 *
 * Everything applies live except what is bound when the proxy starts: the sockets it listens on,
 * the upstream it connects to, the metrics endpoint and its label budgets, and the session key (a new
 * key would move every open session and transaction to other upstream sessions mid-flight). A
 * listener whose socket changed (name, address, TLS on or off, client certificate mode: Node
 * cannot change those on an open server) keeps *all* its running settings, so a half-applied
 * listener (a static tenant on an address it was not validated for) never exists.
 */
import { isDeepStrictEqual } from 'node:util';
import type { ListenerConfig, ProxyConfig } from './types.js';
import { deepFreeze } from './load.js';
import { isPlainObject, pathKey, type PathSegment } from './layers.js';
import { Formats, schemaAt } from './schema.js';

/** The settings that need a restart, as documented (README "Hot reload", config/example.yaml). */
export const RESTART_REQUIRED_SETTINGS = [
  'listeners (added or removed)',
  'listeners[].name',
  'listeners[].listen',
  'listeners[].tls (turned on or off)',
  'listeners[].tls.clientCertificates',
  'upstream',
  'metrics',
  'identity.maxTenantLabels',
  'isolation.sessionKey',
  'limits.tlsHandshakeTimeoutMS',
] as const;

export interface ReloadPlan {
  /** The configuration to run: the new one, with every restart-only setting at its running value. */
  config: ProxyConfig;
  /** Settings whose new value applies now (paths such as `isolation.namespaces`). */
  applied: string[];
  /** Settings that changed but need a restart; they keep their running values. */
  requiresRestart: string[];
}

/** Compares the running configuration with a newly loaded one. */
export function planReload(running: ProxyConfig, next: ProxyConfig): ReloadPlan {
  const listeners = running.listeners.map((current, index) => {
    const wanted = next.listeners[index];
    return wanted !== undefined && sameSocket(current, wanted) ? wanted : current;
  });
  const config = deepFreeze<ProxyConfig>({
    ...next,
    listeners,
    upstream: running.upstream,
    metrics: running.metrics,
    identity: { ...next.identity, maxTenantLabels: running.identity.maxTenantLabels },
    isolation: { ...next.isolation, sessionKey: running.isolation.sessionKey },
    limits: { ...next.limits, tlsHandshakeTimeoutMS: running.limits.tlsHandshakeTimeoutMS },
  });
  return {
    config,
    applied: changedPaths(running, config),
    requiresRestart: changedPaths(config, next),
  };
}

/** Whether a listener can take `wanted`'s settings without reopening its server socket. */
function sameSocket(current: ListenerConfig, wanted: ListenerConfig): boolean {
  return (
    current.name === wanted.name &&
    isDeepStrictEqual(current.listen, wanted.listen) &&
    (current.tls === null) === (wanted.tls === null) &&
    current.tls?.clientCertificates === wanted.tls?.clientCertificates
  );
}

/**
 * The paths of the settings that differ, e.g. `['limits.maxConnections', 'listeners[0].methods']`.
 * Sections and listed objects are compared field by field (a list that grew or shrank reports its
 * extra items, `listeners[2]`); other values, `host:port` addresses included, are compared whole.
 * Paths only: never a value, so secrets cannot leak through them.
 */
export function changedPaths(before: unknown, after: unknown, path: PathSegment[] = []): string[] {
  const leaf = path.length > 0 && isAddress(path);
  if (!leaf && isPlainObject(before) && isPlainObject(after)) {
    const keys = new Set([...Object.keys(before), ...Object.keys(after)]);
    return [...keys].flatMap((key) => changedPaths(before[key], after[key], [...path, key]));
  }
  if (Array.isArray(before) && Array.isArray(after) && [...before, ...after].some(isPlainObject)) {
    const length = Math.max(before.length, after.length);
    const paths: string[] = [];
    for (let index = 0; index < length; index += 1) {
      if (index >= before.length || index >= after.length) paths.push(pathKey([...path, index]));
      else paths.push(...changedPaths(before[index], after[index], [...path, index]));
    }
    return paths;
  }
  return isDeepStrictEqual(before, after) ? [] : [pathKey(path) || '(root)'];
}

function isAddress(path: readonly PathSegment[]): boolean {
  const format = schemaAt(path)?.format;
  return format === Formats.hostPort || format === Formats.hostPortOrOff;
}
