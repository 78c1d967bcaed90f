/**
 * Per-tenant limits left at -1 (the default) are sized from the global ones, so a multi-tenant
 * proxy is safe without tuning (issue 15): one tenant gets at most a quarter of the client
 * connections, half of each server's pool, and as many commands in flight as a server's pool
 * has connections; connections without a tenant get at most a quarter of the client connections.
 * Explicit values, 0 (off) included, are kept.
 */
import { isPlainObject } from './layers.js';
import type { ProxyConfig } from './types.js';

/** What -1 means for each derived field, from the validated (defaults applied) file-shaped data. */
export function deriveLimits(data: Record<string, unknown>): void {
  const limits = data['limits'];
  const upstream = data['upstream'];
  if (!isPlainObject(limits) || !isPlainObject(upstream)) return;
  const maxConnections = Number(limits['maxConnections']);
  const maxPoolSize = Number(upstream['maxPoolSize']);
  const derive = (section: Record<string, unknown>, field: string, value: number): void => {
    if (section[field] === -1) section[field] = Math.max(1, value);
  };
  derive(limits, 'maxConnectionsPerTenant', Math.ceil(maxConnections / 4));
  derive(limits, 'maxUnauthenticatedConnections', Math.ceil(maxConnections / 4));
  derive(limits, 'maxInFlightPerTenant', maxPoolSize);
  derive(upstream, 'maxPoolConnectionsPerTenant', Math.ceil(maxPoolSize / 2));
}

/** `config` with any -1 left in it derived (a copy, frozen like a loaded one); `config` itself when there is none. */
export function withDerivedLimits(config: ProxyConfig): ProxyConfig {
  const { limits, upstream } = config;
  const pending = [
    limits.maxConnectionsPerTenant,
    limits.maxUnauthenticatedConnections,
    limits.maxInFlightPerTenant,
    upstream.maxPoolConnectionsPerTenant,
  ].includes(-1);
  if (!pending) return config;
  const data = { ...config, limits: { ...limits }, upstream: { ...upstream } } as unknown as Record<string, unknown>;
  deriveLimits(data);
  return Object.freeze(data) as unknown as ProxyConfig;
}
