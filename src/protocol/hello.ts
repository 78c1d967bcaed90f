/**
 * The proxy answers every hello / isMaster / ismaster itself, so drivers see exactly one server
 * and never learn the upstream's hosts; client metadata never travels upstream.
 *
 * How it presents itself (see README "How the proxy presents itself"):
 * - upstream standalone → standalone (no sessions-dependent features a standalone lacks);
 * - upstream replica set or mongos → a mongos (`msg: "isdbgrid"`), so drivers enable retryable
 *   writes and transactions, never run replica-set discovery, and accept a pool-backed proxy.
 * Wire versions and limits are mirrored from the upstream's own hello, never hard-coded.
 */
import { ErrorCodes, ProxyError } from '../errors.js';
import type { CompressorName, PresentAs } from '../config/types.js';
import type { Document } from '../wire/bson.js';

/** The spellings of the handshake command (catalogue G1: aliases are part of the allowlist). */
export const HELLO_COMMANDS: ReadonlySet<string> = new Set(['hello', 'isMaster', 'ismaster']);

/** What the proxy learned from the upstream's hello and mirrors to clients. */
export interface AdvertisedServer {
  kind: 'standalone' | 'replicaSet' | 'sharded';
  minWireVersion: number;
  maxWireVersion: number;
  maxBsonObjectSize: number;
  maxMessageSizeBytes: number;
  maxWriteBatchSize: number;
  logicalSessionTimeoutMinutes?: number | undefined;
}

export interface HelloContext {
  server: AdvertisedServer;
  presentAs: PresentAs;
  /** Compressors the proxy offers, in its order of preference. */
  compressors: readonly CompressorName[];
  /** The proxy's own cap; the advertised maxMessageSizeBytes is the smaller of the two. */
  maxMessageSizeBytes: number;
  connectionId: number;
}

/** Per-connection handshake state: client metadata may be sent once, compression negotiated once. */
export interface HandshakeState {
  metadataReceived: boolean;
  /** Replaced (never changed in place) when a hello negotiates compression. */
  compressors: readonly CompressorName[];
}

/** Shared by every connection that negotiated none (issue 16: no empty array per connection). */
const NO_COMPRESSORS: readonly CompressorName[] = Object.freeze([]);

export function newHandshakeState(): HandshakeState {
  return { metadataReceived: false, compressors: NO_COMPRESSORS };
}

export function presentedKind(server: AdvertisedServer, presentAs: PresentAs): 'standalone' | 'sharded' {
  if (presentAs !== 'auto') return presentAs;
  return server.kind === 'standalone' ? 'standalone' : 'sharded';
}

function isCompressorName(value: unknown): value is CompressorName {
  return value === 'zstd' || value === 'snappy' || value === 'zlib';
}

/**
 * Applies a hello to the connection's handshake state: client metadata may come only once
 * (the server's rule), and compression is negotiated as the intersection with the proxy's list
 * in the client's order. Throws before anything else (e.g. speculative authentication) runs.
 */
export function acceptHello(request: Document, context: HelloContext, state: HandshakeState): void {
  if (request.client !== undefined) {
    if (state.metadataReceived) {
      throw new ProxyError(
        ErrorCodes.ClientMetadataCannotBeMutated,
        'The client metadata document may only be sent in the first hello',
      );
    }
    state.metadataReceived = true;
  }
  if (Array.isArray(request.compression)) {
    const offered = new Set(context.compressors);
    state.compressors = request.compression.filter(
      (name): name is CompressorName => isCompressorName(name) && offered.has(name),
    );
  }
}

/**
 * The reply to a hello-family command. `commandName` is the first key exactly as the client
 * spelled it; `authFields` are what the identity layer adds (saslSupportedMechs,
 * speculativeAuthenticate).
 */
export function buildHelloReply(
  commandName: string,
  request: Document,
  context: HelloContext,
  state: HandshakeState,
  authFields: Document = {},
): Document {
  const { server } = context;
  const reply: Document = {};
  // `hello` answers with isWritablePrimary; the legacy spellings with ismaster.
  if (commandName === 'hello') reply.isWritablePrimary = true;
  else reply.ismaster = true;
  if (request.helloOk !== undefined && request.helloOk !== false && request.helloOk !== 0) reply.helloOk = true;
  if (presentedKind(server, context.presentAs) === 'sharded') reply.msg = 'isdbgrid';
  reply.maxBsonObjectSize = server.maxBsonObjectSize;
  reply.maxMessageSizeBytes = Math.min(server.maxMessageSizeBytes, context.maxMessageSizeBytes);
  reply.maxWriteBatchSize = server.maxWriteBatchSize;
  reply.localTime = new Date();
  if (server.logicalSessionTimeoutMinutes !== undefined) {
    reply.logicalSessionTimeoutMinutes = server.logicalSessionTimeoutMinutes;
  }
  reply.connectionId = context.connectionId;
  reply.minWireVersion = server.minWireVersion;
  reply.maxWireVersion = server.maxWireVersion;
  reply.readOnly = false;
  if (Array.isArray(request.compression)) reply.compression = [...state.compressors];
  Object.assign(reply, authFields);
  reply.ok = 1;
  return reply;
}
