import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../../src/errors.js';
import {
  type SelectableServer,
  eligibleReplicaSetServers,
  parseReadPreference,
  pickServer,
  stalenessMS,
} from '../../../src/upstream/server-selection.js';

const NOW = 1_000_000;
const context = { heartbeatFrequencyMS: 10_000, localThresholdMS: 15 };

function server(key: string, type: SelectableServer['type'], extra: Partial<SelectableServer> = {}): SelectableServer {
  return { key, type, roundTripMS: 5, lastUpdateTime: NOW, lastWriteDate: NOW, tags: {}, inFlight: 0, ...extra };
}

const primary = server('p:1', 'primary', { tags: { dc: 'east' } });
const east = server('s1:1', 'secondary', { tags: { dc: 'east' } });
const west = server('s2:1', 'secondary', { tags: { dc: 'west' }, roundTripMS: 40 });
const unknown = server('u:1', 'unknown');
const all = [primary, east, west, unknown];

const keys = (servers: SelectableServer[]): string[] => servers.map((s) => s.key).sort();
const select = (doc: Record<string, unknown> | undefined, servers = all): string[] =>
  keys(eligibleReplicaSetServers(servers, parseReadPreference(doc), context));

describe('read preference modes on a replica set', () => {
  it('primary (and no $readPreference) uses only the primary', () => {
    expect(select(undefined)).toEqual(['p:1']);
    expect(select({ mode: 'primary' })).toEqual(['p:1']);
    expect(select({ mode: 'primary' }, [east, west])).toEqual([]);
  });

  it('secondary uses only secondaries; secondaryPreferred falls back to the primary', () => {
    expect(select({ mode: 'secondary' })).toEqual(['s1:1', 's2:1']);
    expect(select({ mode: 'secondary' }, [primary])).toEqual([]);
    expect(select({ mode: 'secondaryPreferred' })).toEqual(['s1:1', 's2:1']);
    expect(select({ mode: 'secondaryPreferred' }, [primary, unknown])).toEqual(['p:1']);
  });

  it('primaryPreferred falls back to secondaries; nearest uses every member', () => {
    expect(select({ mode: 'primaryPreferred' })).toEqual(['p:1']);
    expect(select({ mode: 'primaryPreferred' }, [east, west, unknown])).toEqual(['s1:1', 's2:1']);
    expect(select({ mode: 'nearest' })).toEqual(['p:1', 's1:1', 's2:1']);
  });

  it('tag sets: the first set that matches wins, {} matches all', () => {
    expect(select({ mode: 'secondary', tags: [{ dc: 'west' }, {}] })).toEqual(['s2:1']);
    expect(select({ mode: 'secondary', tags: [{ dc: 'north' }, { dc: 'east' }] })).toEqual(['s1:1']);
    expect(select({ mode: 'secondary', tags: [{ dc: 'north' }] })).toEqual([]);
    expect(select({ mode: 'secondary', tags: [{ dc: 'north' }, {}] })).toEqual(['s1:1', 's2:1']);
    expect(select({ mode: 'nearest', tags: [{ dc: 'east' }] })).toEqual(['p:1', 's1:1']);
  });

  it('maxStalenessSeconds skips secondaries estimated too stale, and refuses too small a value', () => {
    const stale = server('s3:1', 'secondary', { lastWriteDate: NOW - 200_000 });
    expect(select({ mode: 'secondary', maxStalenessSeconds: 120 }, [primary, east, stale])).toEqual(['s1:1']);
    expect(select({ mode: 'secondary', maxStalenessSeconds: -1 }, [primary, east, stale])).toEqual(['s1:1', 's3:1']);
    expect(() => select({ mode: 'secondary', maxStalenessSeconds: 30 })).toThrow(/at least 90/);
    // Without a primary, staleness is measured against the freshest secondary.
    expect(stalenessMS(stale, undefined, NOW, 10_000)).toBe(210_000);
    expect(stalenessMS(east, primary, NOW, 10_000)).toBe(10_000);
  });

  it('refuses malformed preferences with BadValue', () => {
    expect(() => parseReadPreference({ mode: 'fastest' })).toThrow(
      expect.objectContaining({ code: ErrorCodes.BadValue }),
    );
    expect(() => parseReadPreference({ mode: 'primary', tags: [{ dc: 'x' }] })).toThrow(
      expect.objectContaining({ code: ErrorCodes.BadValue }),
    );
  });
});

describe('pickServer', () => {
  it('keeps servers within the latency window and takes the one with the fewest commands in flight', () => {
    const busy = server('a:1', 'mongos', { inFlight: 5 });
    const idle = server('b:1', 'mongos', { inFlight: 1 });
    const far = server('c:1', 'mongos', { inFlight: 0, roundTripMS: 100 });
    expect(pickServer([busy, idle, far], context)?.key).toBe('b:1');
    expect(pickServer([far], context)?.key).toBe('c:1');
    expect(pickServer([], context)).toBeUndefined();
  });

  it('spreads ties (round-robin-like) with the random source', () => {
    const a = server('a:1', 'mongos');
    const b = server('b:1', 'mongos');
    expect(pickServer([a, b], context, () => 0)?.key).toBe('a:1');
    expect(pickServer([a, b], context, () => 0.99)?.key).toBe('b:1');
  });
});
