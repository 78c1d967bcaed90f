/**
 * Which server a command goes to (mongodb/specifications source/server-selection, reduced to what
 * a proxy in front of one deployment needs). Pure: descriptions come from topology monitoring.
 *
 * - Writes, and reads without `$readPreference`, go to the primary (replica set), any mongos
 *   (sharded: balanced by fewest commands in flight within the latency window) or the standalone.
 * - Reads with `$readPreference` on a replica set follow its mode (primary, primaryPreferred,
 *   secondary, secondaryPreferred, nearest), `tags` (the first tag set that matches a server wins;
 *   `{}` matches all) and `maxStalenessSeconds` (secondaries estimated staler are skipped); among
 *   the eligible servers, those within `localThresholdMS` of the fastest round trip, then the one
 *   with the fewest commands in flight. On a mongos or a standalone the read preference is not the
 *   proxy's to apply (a mongos applies it itself, a standalone ignores it).
 */
import { ErrorCodes, UpstreamError } from '../errors.js';
import type { Document } from '../wire/bson.js';

export type ServerType = 'primary' | 'secondary' | 'mongos' | 'standalone' | 'unknown';

export interface SelectableServer {
  key: string;
  type: ServerType;
  /** Smoothed round-trip time of the monitoring hello, ms. */
  roundTripMS: number;
  /** When the description was last refreshed (ms, the proxy's clock). */
  lastUpdateTime: number;
  /** `lastWrite.lastWriteDate` of the hello, ms; undefined when not reported. */
  lastWriteDate: number | undefined;
  tags: Readonly<Record<string, string>>;
  /** Commands currently in flight to this server (load balancing). */
  inFlight: number;
}

export type ReadPreferenceMode = 'primary' | 'primaryPreferred' | 'secondary' | 'secondaryPreferred' | 'nearest';

export interface ReadPreference {
  mode: ReadPreferenceMode;
  tagSets: ReadonlyArray<Readonly<Record<string, string>>>;
  /** Absent (or -1 on the wire): no limit. */
  maxStalenessSeconds: number | undefined;
}

export interface SelectionContext {
  heartbeatFrequencyMS: number;
  localThresholdMS: number;
}

/** The idle write period of a replica set primary (server-selection spec: idleWritePeriodMS). */
const IDLE_WRITE_PERIOD_MS = 10_000;
/** The smallest maxStalenessSeconds a client may ask for. */
export const SMALLEST_MAX_STALENESS_SECONDS = 90;

const MODES: ReadonlySet<string> = new Set([
  'primary',
  'primaryPreferred',
  'secondary',
  'secondaryPreferred',
  'nearest',
]);

/** Reads a `$readPreference` document; anything malformed is an error the client sees. */
export function parseReadPreference(document: Document | undefined): ReadPreference {
  if (document === undefined) return { mode: 'primary', tagSets: [], maxStalenessSeconds: undefined };
  const mode = document.mode;
  if (typeof mode !== 'string' || !MODES.has(mode)) {
    throw new UpstreamError(ErrorCodes.BadValue, `invalid $readPreference mode ${JSON.stringify(mode)}`);
  }
  const tagSets: Array<Record<string, string>> = [];
  if (Array.isArray(document.tags)) {
    for (const set of document.tags as unknown[]) {
      if (typeof set !== 'object' || set === null) continue;
      tagSets.push(
        Object.fromEntries(
          Object.entries(set).filter((entry): entry is [string, string] => typeof entry[1] === 'string'),
        ),
      );
    }
  }
  let maxStalenessSeconds: number | undefined;
  const staleness = Number(document.maxStalenessSeconds ?? -1);
  if (Number.isFinite(staleness) && staleness !== -1) maxStalenessSeconds = staleness;
  if (mode === 'primary' && (tagSets.some((set) => Object.keys(set).length > 0) || maxStalenessSeconds !== undefined)) {
    throw new UpstreamError(
      ErrorCodes.BadValue,
      'read preference mode primary cannot be combined with tags or maxStalenessSeconds',
    );
  }
  return { mode: mode as ReadPreferenceMode, tagSets, maxStalenessSeconds };
}

/**
 * The servers a read with `preference` may use on a replica set, before the latency window. An
 * empty list means none is suitable right now (the caller waits for a re-check or fails).
 */
export function eligibleReplicaSetServers(
  servers: readonly SelectableServer[],
  preference: ReadPreference,
  context: SelectionContext,
): SelectableServer[] {
  const primary = servers.find((server) => server.type === 'primary');
  if (preference.maxStalenessSeconds !== undefined) {
    const smallest = Math.max(
      SMALLEST_MAX_STALENESS_SECONDS,
      (context.heartbeatFrequencyMS + IDLE_WRITE_PERIOD_MS) / 1000,
    );
    if (preference.maxStalenessSeconds < smallest) {
      throw new UpstreamError(ErrorCodes.BadValue, `maxStalenessSeconds must be at least ${smallest}`);
    }
  }
  const secondaries = () =>
    matchTags(
      fresh(
        servers.filter((server) => server.type === 'secondary'),
        primary,
        preference,
        context,
      ),
      preference,
    );
  switch (preference.mode) {
    case 'primary':
      return primary === undefined ? [] : [primary];
    case 'primaryPreferred':
      return primary !== undefined ? [primary] : secondaries();
    case 'secondary':
      return secondaries();
    case 'secondaryPreferred': {
      const found = secondaries();
      return found.length > 0 || primary === undefined ? found : [primary];
    }
    case 'nearest': {
      const members = servers.filter((server) => server.type === 'primary' || server.type === 'secondary');
      return matchTags(fresh(members, primary, preference, context), preference);
    }
  }
}

/** Servers within localThresholdMS of the fastest, then the one with the fewest in flight. */
export function pickServer(
  candidates: readonly SelectableServer[],
  context: SelectionContext,
  random: () => number = Math.random,
): SelectableServer | undefined {
  if (candidates.length === 0) return undefined;
  const fastest = Math.min(...candidates.map((server) => server.roundTripMS));
  const window = candidates.filter((server) => server.roundTripMS <= fastest + context.localThresholdMS);
  const least = Math.min(...window.map((server) => server.inFlight));
  const best = window.filter((server) => server.inFlight === least);
  return best[Math.min(best.length - 1, Math.floor(random() * best.length))];
}

/** Staleness estimate of a secondary in ms (server-selection spec, "maxStalenessSeconds"). */
export function stalenessMS(
  server: SelectableServer,
  primary: SelectableServer | undefined,
  maxWriteDate: number,
  heartbeatFrequencyMS: number,
): number {
  const write = server.lastWriteDate ?? 0;
  if (primary !== undefined) {
    return (
      server.lastUpdateTime - write - (primary.lastUpdateTime - (primary.lastWriteDate ?? 0)) + heartbeatFrequencyMS
    );
  }
  return maxWriteDate - write + heartbeatFrequencyMS;
}

function fresh(
  servers: readonly SelectableServer[],
  primary: SelectableServer | undefined,
  preference: ReadPreference,
  context: SelectionContext,
): SelectableServer[] {
  const limit = preference.maxStalenessSeconds;
  if (limit === undefined) return [...servers];
  const maxWriteDate = Math.max(0, ...servers.map((server) => server.lastWriteDate ?? 0));
  return servers.filter(
    (server) =>
      server.type === 'primary' ||
      stalenessMS(server, primary, maxWriteDate, context.heartbeatFrequencyMS) <= limit * 1000,
  );
}

function matchTags(servers: SelectableServer[], preference: ReadPreference): SelectableServer[] {
  if (preference.tagSets.length === 0) return servers;
  for (const set of preference.tagSets) {
    const matching = servers.filter((server) =>
      Object.entries(set).every(([key, value]) => server.tags[key] === value),
    );
    if (matching.length > 0) return matching;
  }
  return [];
}
