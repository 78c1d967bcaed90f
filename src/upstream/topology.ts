/**
 * Which upstream server the proxy talks to, decided from hello replies
 * (mongodb/specifications source/server-discovery-and-monitoring, much simplified): a mongos or
 * a standalone is used as is; in a replica set the proxy follows `primary` / `hosts` until it
 * finds the writable primary. `directConnection=true` skips all of that.
 *
 * This module only decides; opening and authenticating connections is passed in, so the
 * logic is testable with fake hello documents.
 */

import type { Logger } from 'pino';
import type { HostPort } from '../config/types.js';
import { ErrorCodes, ProxyError, UpstreamError } from '../errors.js';
import type { Document } from '../wire/bson.js';
import {
  DEFAULT_MAX_BSON_OBJECT_SIZE,
  DEFAULT_MAX_MESSAGE_SIZE_BYTES,
  DEFAULT_MAX_WRITE_BATCH_SIZE,
} from '../wire/constants.js';
import { FALLBACK_CAPABILITIES, type UpstreamCapabilities } from './capabilities.js';
import { formatAddress, parseAddress } from './uri.js';

export type UpstreamKind = 'standalone' | 'replicaSet' | 'sharded';

/** What the proxy learned from the selected server's hello; mirrored to clients. */
export interface UpstreamServerInfo {
  kind: UpstreamKind;
  /** `host:port` of the server the pool connects to. */
  address: string;
  setName?: string;
  minWireVersion: number;
  maxWireVersion: number;
  maxBsonObjectSize: number;
  maxMessageSizeBytes: number;
  maxWriteBatchSize: number;
  logicalSessionTimeoutMinutes?: number;
  /** Compressors the server agreed to (a subset of those the URI asked for). */
  compression: string[];
  /**
   * What the server did when probed at start (capabilities.ts); Upstream.capabilities follows
   * the server that takes the writes after a failover.
   */
  capabilities: UpstreamCapabilities;
  /** The buildInfo reply read with the hello (absent when it failed): version, what kind of server. */
  buildInfo?: Document;
  /** The raw hello reply, for fields not lifted above. */
  hello: Document;
}

/** How a hello reply classifies its server (SDAM ServerType, reduced to what we act on). */
export type ServerRole =
  | { type: 'mongos' }
  | { type: 'standalone' }
  | { type: 'primary'; setName: string }
  | { type: 'member'; setName: string; primary: string | undefined; hosts: string[] }
  | { type: 'ghost' }
  | { type: 'other'; reason: string };

export function classifyHello(hello: Document): ServerRole {
  if (hello.msg === 'isdbgrid') return { type: 'mongos' };
  if (hello.isreplicaset === true) return { type: 'ghost' };
  const setName = typeof hello.setName === 'string' ? hello.setName : undefined;
  if (setName === undefined) return { type: 'standalone' };
  if (hello.arbiterOnly === true) return { type: 'other', reason: 'is an arbiter' };
  if (hello.isWritablePrimary === true || hello.ismaster === true) return { type: 'primary', setName };
  const hosts = [hello.hosts, hello.passives]
    .flatMap((list: unknown) => (Array.isArray(list) ? list : []))
    .filter((h): h is string => typeof h === 'string');
  const primary = typeof hello.primary === 'string' ? hello.primary : undefined;
  return { type: 'member', setName, primary, hosts };
}

/**
 * Lifts the limits and wire versions out of a hello reply, with server defaults for gaps; the
 * capabilities are the probe's (MongoDB's when not probed); buildInfo is kept as read (absent
 * when it failed) for what introspection answers.
 */
export function describeServer(
  hello: Document,
  address: string,
  compression: readonly string[] = [],
  capabilities: UpstreamCapabilities = FALLBACK_CAPABILITIES,
  buildInfo: Document | undefined = undefined,
): UpstreamServerInfo {
  const role = classifyHello(hello);
  const kind: UpstreamKind =
    role.type === 'mongos' ? 'sharded' : typeof hello.setName === 'string' ? 'replicaSet' : 'standalone';
  const info: UpstreamServerInfo = {
    kind,
    address,
    minWireVersion: integer(hello.minWireVersion, 0),
    maxWireVersion: integer(hello.maxWireVersion, 0),
    maxBsonObjectSize: integer(hello.maxBsonObjectSize, DEFAULT_MAX_BSON_OBJECT_SIZE),
    maxMessageSizeBytes: integer(hello.maxMessageSizeBytes, DEFAULT_MAX_MESSAGE_SIZE_BYTES),
    maxWriteBatchSize: integer(hello.maxWriteBatchSize, DEFAULT_MAX_WRITE_BATCH_SIZE),
    compression: [...compression],
    capabilities: { ...capabilities },
    hello,
  };
  if (typeof hello.setName === 'string') info.setName = hello.setName;
  if (buildInfo !== undefined) info.buildInfo = buildInfo;
  // Absent (FerretDB v1, standalones without sessions) means: no sessions; keep it absent.
  if (typeof hello.logicalSessionTimeoutMinutes === 'number') {
    info.logicalSessionTimeoutMinutes = hello.logicalSessionTimeoutMinutes;
  }
  return info;
}

/** An opened, handshaken connection as discovery sees it. */
export interface Probe<C> {
  connection: C;
  hello: Document;
}

export interface DiscoveryOptions<C> {
  seeds: readonly HostPort[];
  replicaSet: string | undefined;
  directConnection: boolean;
  /** Opens and authenticates a connection; rejects with an UpstreamError. */
  open(address: HostPort): Promise<Probe<C>>;
  /** Closes a connection discovery does not keep. */
  discard(connection: C): void;
  logger?: Logger | undefined;
  /** Upper bound on servers contacted, against a hello that keeps pointing elsewhere. */
  maxAttempts?: number;
}

export interface Discovered<C> extends Probe<C> {
  address: HostPort;
}

/**
 * Finds the server to use: the first reachable seed for directConnection, otherwise a mongos,
 * a lone standalone, or the replica set's writable primary. The winning connection is returned
 * open (the pool keeps it); every other one is discarded. Authentication failures end the
 * search at once: other members would refuse the same credentials.
 */
export async function discoverServer<C>(options: DiscoveryOptions<C>): Promise<Discovered<C>> {
  const { seeds, replicaSet, logger } = options;
  const queue: HostPort[] = [...seeds];
  const seen = new Set<string>();
  const failures: string[] = [];
  const maxAttempts = options.maxAttempts ?? Math.max(8, seeds.length * 2);
  let attempts = 0;

  while (queue.length > 0 && attempts < maxAttempts) {
    const address = queue.shift() as HostPort;
    const key = formatAddress(address);
    if (seen.has(key)) continue;
    seen.add(key);
    attempts++;

    let probe: Probe<C>;
    try {
      probe = await options.open(address);
    } catch (error) {
      if (isFinal(error)) throw error;
      failures.push(`${key}: ${error instanceof Error ? error.message : String(error)}`);
      logger?.debug({ address: key, err: errorSummary(error) }, 'upstream seed unusable');
      continue;
    }

    const keep = (): Discovered<C> => ({ ...probe, address });
    const skip = (reason: string): void => {
      failures.push(`${key}: ${reason}`);
      options.discard(probe.connection);
    };
    const role = classifyHello(probe.hello);

    if (options.directConnection) {
      if (replicaSet !== undefined && !('setName' in role && role.setName === replicaSet)) {
        skip(`is not a member of replica set "${replicaSet}"`);
        continue;
      }
      return keep();
    }
    switch (role.type) {
      case 'mongos':
        if (replicaSet !== undefined) {
          skip(`is a mongos, not a member of replica set "${replicaSet}"`);
          continue;
        }
        return keep();
      case 'standalone':
        // SDAM removes a standalone from a multi-seed or replica-set topology.
        if (replicaSet !== undefined || seeds.length > 1) {
          skip('is a standalone server, but a replica set was expected');
          continue;
        }
        return keep();
      case 'primary':
        if (replicaSet !== undefined && role.setName !== replicaSet) {
          skip(`belongs to replica set "${role.setName}", not "${replicaSet}"`);
          continue;
        }
        return keep();
      case 'member': {
        if (replicaSet !== undefined && role.setName !== replicaSet) {
          skip(`belongs to replica set "${role.setName}", not "${replicaSet}"`);
          continue;
        }
        skip(
          role.primary === undefined
            ? 'is not primary and knows no primary'
            : `is not primary (primary: ${role.primary})`,
        );
        const hinted: HostPort[] = [];
        for (const text of [role.primary, ...role.hosts]) {
          if (text === undefined) continue;
          try {
            hinted.push(parseAddress(text));
          } catch {
            // A malformed host in a hello is the server's problem; ignore that entry.
          }
        }
        // The named primary goes first; other members after the remaining seeds.
        const [first, ...rest] = hinted;
        if (role.primary !== undefined && first !== undefined) queue.unshift(first);
        queue.push(...(role.primary !== undefined ? rest : hinted));
        continue;
      }
      case 'ghost':
        skip('is a replica set member that is not initialized yet');
        continue;
      case 'other':
        skip(role.reason);
        continue;
    }
  }

  throw new UpstreamError(
    ErrorCodes.HostUnreachable,
    `no usable upstream server${replicaSet === undefined ? '' : ` (replica set "${replicaSet}" has no reachable primary)`}` +
      (failures.length > 0 ? `: ${failures.join('; ')}` : ''),
    { labels: ['NetworkError'] },
  );
}

/** Errors that would repeat on every server: bad credentials, bad configuration. */
function isFinal(error: unknown): boolean {
  if (!ProxyError.is(error)) return error instanceof Error && error.name === 'ConfigError';
  return error.code === ErrorCodes.AuthenticationFailed || error.code === ErrorCodes.Unauthorized;
}

function errorSummary(error: unknown): { message: string; code?: number } {
  if (ProxyError.is(error)) return { message: error.message, code: error.code };
  return { message: error instanceof Error ? error.message : String(error) };
}

function integer(value: unknown, fallback: number): number {
  if (typeof value === 'number' && Number.isFinite(value)) return Math.trunc(value);
  if (typeof value === 'bigint') return Number(value);
  return fallback;
}
