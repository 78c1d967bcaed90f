/**
 * Per-tenant limits left at -1 (the default) are sized from the global ones, so a multi-tenant
 * proxy is safe without tuning (issue 15): one tenant gets at most a quarter of the client
 * connections, half of each server's pool, and as many commands in flight as a server's pool
 * has connections; connections without a tenant get at most a quarter of the client connections.
 * Explicit values, 0 (off) included, are kept.
 */
import { isPlainObject } from './layers.js';

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
