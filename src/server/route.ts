/**
 * Where one decoded command goes, decided from the connection's state alone: answered by the
 * proxy (handshake, authentication, connectionStatus, ping before authentication, an engine's
 * local reply), refused (with the rule audited and the error the client gets), or forwarded
 * with a plan (the isolation engine's rewrite, the reply transform, the traits the upstream
 * picks a connection and retries by).
 *
 * Pure: no sockets, no clock, no metrics; the connection carries the route out. Asking the
 * tenant's isolation engine is part of routing (it is pure too).
 */
import { ErrorCodes, PolicyRefusal, ProxyError } from '../errors.js';
import { AUTH_COMMANDS } from '../identity/authenticator.js';
import { HELLO_COMMANDS } from '../protocol/hello.js';
import type { Decision } from '../rewrite/engine.js';
import type { CommandInput, ReplyPlan, VirtualOperation } from '../policy/types.js';
import { traitsOf, type CommandTraits } from '../upstream/command-traits.js';
import type { Document } from '../wire/bson.js';
import type { RawDocument } from '../wire/raw-bson.js';
import type { CommandView } from './command-view.js';
import { TenantLimitExceeded } from './tenant-limits.js';

/** Answered by the proxy before a tenant exists; buildInfo is forwarded (it names no data). */
export const PRE_AUTH_LOCAL_OK: ReadonlySet<string> = new Set(['ping', 'endSessions']);
export const PRE_AUTH_FORWARDED: ReadonlySet<string> = new Set(['buildInfo', 'buildinfo']);
/**
 * Commands a client may send with moreToCome: no reply is expected. w:0 writes, and endSessions,
 * which drivers send so when they close (it opens nothing a tenant would not be told about).
 */
export const FIRE_AND_FORGET_COMMANDS: ReadonlySet<string> = new Set([
  'insert',
  'update',
  'delete',
  'bulkWrite',
  'endSessions',
]);

/** What routing reads of the connection. */
export interface ConnectionState {
  /** The established tenant; undefined until authentication establishes one. */
  tenant: string | undefined;
  /**
   * The tenant already had `limits.maxConnectionsPerTenant` connections when this one established
   * it: every command gets this error (and the connection closes after the reply).
   */
  overConnectionLimit: TenantLimitExceeded | undefined;
  /** The tenant's isolation engine; undefined when the tenant cannot be isolated (`engineError` says why). */
  engine: { decide(input: CommandInput): Decision } | undefined;
  engineError: ProxyError | undefined;
  /** The refusal of a command that needs a tenant (the authenticator knows what is missing). */
  unauthorized(command: string): ProxyError;
}

/** What the proxy answers itself. */
export type LocalReply =
  /** The handshake (it may carry speculative authentication). */
  | { kind: 'hello' }
  /** One step of an authentication conversation (saslStart, saslContinue, authenticate, logout). */
  | { kind: 'authenticate' }
  /** Who this connection is, from its own state. */
  | { kind: 'connectionStatus' }
  /** A fixed answer: ping before authentication, or the isolation engine's (e.g. killCursors naming only foreign ids). */
  | { kind: 'document'; document: Document }
  /** moreToCome: the client expects no reply. */
  | { kind: 'none' };

export type IsolationDecision = 'refused' | 'rewritten' | 'would-refuse' | 'would-rewrite';

/** A decision of the isolation engine: counted and audited. */
export interface RouteDecision {
  decision: IsolationDecision;
  rule: string;
}

export interface ForwardPlan {
  /** The engine's rewritten body and sequences; undefined: the client's own are sent. */
  rewrite: { body: RawDocument; sequences: ReadonlyMap<string, readonly Uint8Array[]> } | undefined;
  /** How the replies are transformed (cursor ownership, names mapped back, values scrubbed); undefined: relayed as sent. */
  reply: ReplyPlan | undefined;
  /** Of the body actually sent: what the upstream picks a connection and decides retries by. */
  traits: CommandTraits;
}

export type Route =
  | { action: 'local'; reply: LocalReply; outcome: string; decisions: readonly RouteDecision[] }
  | {
      action: 'refuse';
      refusal: ProxyError;
      /** The audit rule: the engine's, or `auth.required`, `limit.connections`, `moreToCome.command`… */
      rule: string;
      /** The refusal is the engine's and already among `decisions` (audited there, not again). */
      decided: boolean;
      decisions: readonly RouteDecision[];
    }
  | { action: 'forward'; plan: ForwardPlan; outcome: string; decisions: readonly RouteDecision[] }
  /** Shared-collection DDL, listings and stats: run by the tenancy executor (src/tenancy), not forwarded. */
  | { action: 'virtual'; operation: VirtualOperation; outcome: string; decisions: readonly RouteDecision[] };

const NONE: LocalReply = { kind: 'none' };

/**
 * Whether routing `name` may ask the tenant's engine: false for what is answered before it (the
 * handshake, authentication, connectionStatus), so a connection that only sends those needs no
 * engine (it is made on first use: connection-identity.ts).
 */
export function mayReachEngine(name: string): boolean {
  return !HELLO_COMMANDS.has(name) && !AUTH_COMMANDS.has(name) && name !== 'connectionStatus';
}

/**
 * Where `command` goes. In order: a connection over its tenant's limit refuses everything; the
 * handshake, authentication and connectionStatus are answered locally; without a tenant only the
 * pre-auth tables pass; moreToCome only on fire-and-forget commands; then the tenant's engine.
 */
export function route(command: CommandView, state: ConnectionState): Route {
  const { name } = command;
  if (state.overConnectionLimit !== undefined) return refuse(state.overConnectionLimit);
  if (HELLO_COMMANDS.has(name)) return local({ kind: 'hello' });
  if (AUTH_COMMANDS.has(name)) return local({ kind: 'authenticate' });
  if (name === 'connectionStatus') return local({ kind: 'connectionStatus' });
  if (state.tenant === undefined) {
    if (PRE_AUTH_LOCAL_OK.has(name))
      return local(command.moreToCome ? NONE : { kind: 'document', document: { ok: 1 } });
    if (!PRE_AUTH_FORWARDED.has(name)) return refuse(state.unauthorized(name));
  }
  if (command.moreToCome && !FIRE_AND_FORGET_COMMANDS.has(name)) {
    // Only unacknowledged writes may skip their reply; anything else would, e.g., open cursors nobody reads (catalogue 50).
    // A refusal like any other isolation rule: counted as denied and audited (it also closes the connection).
    return refuse(
      new PolicyRefusal(
        'moreToCome.command',
        `moreToCome is only accepted on insert, update, delete, bulkWrite and endSessions, not ${name}`,
        ErrorCodes.InvalidOptions,
      ),
    );
  }
  // Only the pre-auth commands that name no data get here without a tenant (buildInfo).
  if (state.tenant === undefined) return forwardAsSent(command, []);
  return isolate(command, state);
}

/** The tenant's isolation engine decides: refuse, rewrite (maybe answering itself), or, in audit-only mode, forward as sent. */
function isolate(command: CommandView, state: ConnectionState): Route {
  const { engine } = state;
  if (engine === undefined)
    return refuse(
      unrepresentable(state.engineError ?? new ProxyError(ErrorCodes.InternalError, 'no isolation engine')),
    );
  let decision: Decision;
  try {
    decision = engine.decide(command.engineInput());
  } catch (error) {
    // Policy refusals come back as decisions; a ProxyError here means the (reloaded) settings cannot represent the tenant.
    if (!ProxyError.is(error)) throw error;
    return refuse(unrepresentable(error));
  }
  switch (decision.action) {
    case 'refuse': {
      const { refusal } = decision;
      return { action: 'refuse', refusal, rule: refusal.rule, decided: true, decisions: [decided('refused', refusal)] };
    }
    case 'forward-original': {
      const decisions: RouteDecision[] = [];
      if (decision.wouldRefuse !== undefined) decisions.push(decided('would-refuse', decision.wouldRefuse));
      for (const note of decision.notes) decisions.push(decided('would-rewrite', note));
      return forwardAsSent(command, decisions);
    }
    case 'virtual': {
      const decisions = decision.notes.map((note) => decided('rewritten', note));
      return { action: 'virtual', operation: decision.operation, outcome: 'rewritten', decisions };
    }
    case 'forward': {
      const { result } = decision;
      const decisions = result.notes.map((note) => decided(note.kind === 'refusal' ? 'refused' : 'rewritten', note));
      const outcome = decisions.length > 0 ? 'rewritten' : 'ok';
      const { localReply } = result.reply;
      if (localReply !== undefined) {
        const reply: LocalReply = command.moreToCome ? NONE : { kind: 'document', document: localReply };
        return { action: 'local', reply, outcome, decisions };
      }
      const plan: ForwardPlan = {
        rewrite: { body: result.body, sequences: result.sequences },
        reply: result.reply,
        traits: traitsOf(result.body.elements),
      };
      return { action: 'forward', plan, outcome, decisions };
    }
  }
}

/**
 * Every command of a tenant the isolation settings cannot represent (e.g. after a reload changed
 * `tenantValueType`) is refused: a denial like the others, audited, with the reason in the message.
 */
function unrepresentable(error: ProxyError): PolicyRefusal {
  return new PolicyRefusal(
    'tenant.unrepresentable',
    `the tenant cannot be isolated with the current isolation settings: ${error.message}`,
    error.code,
  );
}

/** The audit rule of a refusal that is not an isolation decision: not authenticated, a per-tenant limit. */
export function denialRule(error: unknown): string {
  if (error instanceof PolicyRefusal) return error.rule;
  if (error instanceof TenantLimitExceeded) return `limit.${error.reason}`;
  if (ProxyError.is(error) && error.code === ErrorCodes.Unauthorized) return 'auth.required';
  return 'denied';
}

/** The outcome label of a command that threw (`current`: what the handler had already decided). */
export function failureOutcome(error: unknown, current: string, command: string): string {
  if (current === 'denied' || error instanceof PolicyRefusal || error instanceof TenantLimitExceeded) return 'denied';
  if (!ProxyError.is(error)) return 'error';
  if (AUTH_COMMANDS.has(command) && error.code === ErrorCodes.AuthenticationFailed) return 'denied';
  // HostUnreachable: the upstream connection a passthrough client authenticated on is gone.
  if (error.name === 'UpstreamError' || error.code === ErrorCodes.HostUnreachable) return 'upstream_error';
  return 'error';
}

function local(reply: LocalReply): Route {
  return { action: 'local', reply, outcome: 'ok', decisions: [] };
}

function refuse(refusal: ProxyError): Route {
  return { action: 'refuse', refusal, rule: denialRule(refusal), decided: false, decisions: [] };
}

function forwardAsSent(command: CommandView, decisions: readonly RouteDecision[]): Route {
  return {
    action: 'forward',
    plan: { rewrite: undefined, reply: undefined, traits: command.traits },
    outcome: 'ok',
    decisions,
  };
}

function decided(decision: IsolationDecision, source: { rule: string }): RouteDecision {
  return { decision, rule: source.rule };
}
