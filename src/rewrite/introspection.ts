/**
 * Server introspection answered safely instead of refused (catalogue 25, 26; issue 14). Drivers,
 * ODMs, shells and test harnesses read these at start; a refusal with 13 Unauthorized makes them
 * think authentication is required, skip whole test blocks or log errors. Every answer here is
 * built by the proxy from what every tenant may know (the upstream's buildInfo, the proxy's own
 * uptime, the caller's own address) and forwards nothing: never another tenant's names, counts,
 * operations or connections, never the upstream's host names, command line or log lines.
 *
 * - serverStatus: version, process kind, the proxy's uptime and clock (Mongoose reads `version`);
 *   no sections about the shared server.
 * - hostInfo: the time and the address size only; getCmdLineOpts: an empty command line.
 * - getParameter: featureCompatibilityVersion (the upstream's major.minor) and requireApiVersion;
 *   any other name is absent, and asking for none of these is the server's "no option found to
 *   get" (InvalidOptions).
 * - getLog: the names MongoDB has, each with no lines; currentOp: no operation (the upstream's
 *   list holds every tenant's and cannot be attributed); top: no namespace.
 * - listCommands: the commands the proxy answers or forwards; whatsmyuri: the caller's address;
 *   getFreeMonitoringStatus: disabled; startSession: a new session id (mapped per tenant like
 *   any other when used).
 * - find / aggregate / count / distinct on a collection of `admin` (not `system.*`): the tenant's
 *   `admin` database is empty (mongosh counts `admin.atlascli` at start).
 *
 * Pure apart from the clock, the host name and random session ids, all injectable.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { ErrorCodes, codeNameOf } from '../errors.js';
import { Long, UUID, type Document } from '../wire/bson.js';
import { BsonType } from '../wire/bson-scan.js';
import { RawDocument, arrayItems, numberOf, stringOf, type RawValue } from '../wire/raw-bson.js';
import { CLASSIFIED_COMMANDS, classify, type HandlerName } from '../policy/commands.js';
import type { CommandHandler, CommandInput, RewriteResult } from '../policy/types.js';
import type { UpstreamFacts } from './upstream-facts.js';

export interface IntrospectionOptions {
  /** The upstream as last described (its buildInfo and hello). */
  upstream: () => UpstreamFacts;
  /** When the proxy started (ms since the epoch): serverStatus reports the proxy's uptime. */
  startedAt: number;
  now?: () => number;
  /** The proxy's host name (serverStatus.host, hostInfo.system.hostname); default os.hostname(). */
  host?: string;
  /** A new session id (startSession); default a random UUID. */
  newSessionId?: () => UUID;
}

/** The introspection commands the proxy answers itself. */
export type IntrospectionHandlerName = Extract<
  HandlerName,
  | 'serverStatus'
  | 'hostInfo'
  | 'getCmdLineOpts'
  | 'getParameter'
  | 'getLog'
  | 'currentOp'
  | 'top'
  | 'listCommands'
  | 'whatsmyuri'
  | 'getFreeMonitoringStatus'
  | 'startSession'
>;

/** A reply that the proxy sends itself; nothing is forwarded. */
function local(reply: Document): RewriteResult {
  return {
    body: new RawDocument([]),
    sequences: new Map(),
    reply: { scrubErrors: false, localReply: reply },
    notes: [],
  };
}

/** An error reply as the server shapes it (an answer, not a refusal: nothing here is forbidden). */
function errorReply(code: number, errmsg: string): Document {
  return { ok: 0, errmsg, code, codeName: codeNameOf(code) };
}

/** The upstream's version ("8.0.4"), when its buildInfo was read. */
function versionOf(facts: UpstreamFacts): string | undefined {
  const version = facts.buildInfo?.version;
  return typeof version === 'string' ? version : undefined;
}

/** featureCompatibilityVersion as a server of that version reports it by default: "major.minor". */
function featureCompatibilityVersion(facts: UpstreamFacts): string | undefined {
  const match = /^(\d+)\.(\d+)/.exec(versionOf(facts) ?? '');
  return match === null ? undefined : `${match[1]}.${match[2]}`;
}

/** Parameters a tenant may read, with the value the proxy can vouch for. */
function knownParameters(facts: UpstreamFacts): Map<string, unknown> {
  const parameters = new Map<string, unknown>();
  const fcv = featureCompatibilityVersion(facts);
  if (fcv !== undefined) parameters.set('featureCompatibilityVersion', { version: fcv });
  parameters.set('requireApiVersion', false);
  return parameters;
}

function isTruthyFlag(value: RawValue): boolean {
  if (value.type === BsonType.boolean) return value.value[0] === 1;
  const n = numberOf(value);
  return n !== undefined && n !== 0;
}

/**
 * getParameter: `{getParameter: 1, <name>: 1, …}`, `{getParameter: "*"}`, or
 * `{getParameter: {allParameters, showDetails}, …}` (the server's forms).
 */
function getParameter(input: CommandInput, facts: UpstreamFacts): Document {
  const spec = input.body.first!;
  let all = false;
  let details = false;
  if (spec.type === BsonType.string) all = stringOf(spec) === '*';
  else if (spec.type === BsonType.document) {
    const options = RawDocument.parse(spec.value);
    const allParameters = options.get('allParameters');
    const showDetails = options.get('showDetails');
    all = allParameters !== undefined && isTruthyFlag(allParameters);
    details = showDetails !== undefined && isTruthyFlag(showDetails);
  }
  const known = knownParameters(facts);
  const wanted = all ? [...known.keys()] : input.body.names.slice(1).filter((name) => known.has(name));
  if (wanted.length === 0) return errorReply(ErrorCodes.InvalidOptions, 'no option found to get');
  const reply: Document = {};
  for (const name of wanted) {
    const value = known.get(name);
    reply[name] = details ? { value, settableAtRuntime: false, settableAtStartup: false } : value;
  }
  reply.ok = 1;
  return reply;
}

const LOG_NAMES = ['global', 'startupWarnings'];

/** getLog: the log names MongoDB has, each without lines (the upstream's lines are every tenant's). */
function getLog(input: CommandInput): Document {
  const which = input.body.first!;
  if (which.type !== BsonType.string) {
    return errorReply(ErrorCodes.TypeMismatch, "BSON field 'getLog.getLog' is the wrong type, expected type 'string'");
  }
  const name = stringOf(which);
  if (name === '*') return { names: LOG_NAMES, ok: 1 };
  if (!LOG_NAMES.includes(name)) return errorReply(ErrorCodes.OperationFailed, `no RecentEntries named: ${name}`);
  return { totalLinesWritten: 0, log: [], ok: 1 };
}

/** Commands that need no authentication on a server (the handshake family). */
const NO_AUTH: ReadonlySet<string> = new Set([
  'hello',
  'isMaster',
  'ismaster',
  'saslStart',
  'saslContinue',
  'authenticate',
  'logout',
  'ping',
  'buildInfo',
  'buildinfo',
  'connectionStatus',
]);
const ADMIN_ONLY: ReadonlySet<string> = new Set([
  'bulkWrite',
  'commitTransaction',
  'abortTransaction',
  'endSessions',
  'killSessions',
  'refreshSessions',
  'startSession',
  'listDatabases',
  'renameCollection',
  'getParameter',
  'getCmdLineOpts',
  'getLog',
  'currentOp',
  'top',
  'getDefaultRWConcern',
  'getFreeMonitoringStatus',
  'atlasVersion',
]);

/** listCommands: every command the proxy answers or forwards (the refused ones are not there). */
function listCommands(): Document {
  const commands: Document = {};
  for (const name of [...CLASSIFIED_COMMANDS].sort()) {
    if (classify(name).kind === 'refuse') continue;
    commands[name] = {
      help: '',
      requiresAuth: !NO_AUTH.has(name),
      secondaryOk: true,
      adminOnly: ADMIN_ONLY.has(name),
      apiVersions: [],
      deprecatedApiVersions: [],
    };
  }
  return { commands, ok: 1 };
}

/** The handlers, answered from `options` and the caller's context. */
export function createIntrospectionHandlers(
  options: IntrospectionOptions,
): Readonly<Record<IntrospectionHandlerName, CommandHandler>> {
  const now = options.now ?? Date.now;
  const host = options.host ?? hostname();
  const newSessionId = options.newSessionId ?? (() => new UUID(randomUUID()));
  return {
    serverStatus: () => {
      const facts = options.upstream();
      const uptimeMillis = Math.max(0, now() - options.startedAt);
      const reply: Document = { host };
      const version = versionOf(facts);
      if (version !== undefined) reply.version = version;
      reply.process = facts.kind === 'sharded' ? 'mongos' : 'mongod';
      reply.uptime = uptimeMillis / 1000;
      reply.uptimeMillis = Long.fromNumber(uptimeMillis);
      reply.uptimeEstimate = Long.fromNumber(Math.floor(uptimeMillis / 1000));
      reply.localTime = new Date(now());
      reply.ok = 1;
      return local(reply);
    },
    hostInfo: () =>
      local({
        system: { currentTime: new Date(now()), hostname: host, cpuAddrSize: 64, numaEnabled: false },
        os: {},
        extra: {},
        ok: 1,
      }),
    getCmdLineOpts: () => local({ argv: [], parsed: {}, ok: 1 }),
    getParameter: (input) => local(getParameter(input, options.upstream())),
    getLog: (input) => local(getLog(input)),
    currentOp: () => local({ inprog: [], ok: 1 }),
    top: () => local({ totals: { note: 'all times in microseconds' }, ok: 1 }),
    listCommands: () => local(listCommands()),
    whatsmyuri: (_input, context) => local({ you: context.clientAddress ?? '', ok: 1 }),
    getFreeMonitoringStatus: () => local({ state: 'disabled', ok: 1 }),
    startSession: () => {
      const timeout = options.upstream().hello?.logicalSessionTimeoutMinutes;
      return local({ id: { id: newSessionId() }, timeoutMinutes: typeof timeout === 'number' ? timeout : 30, ok: 1 });
    },
  };
}

/** The read commands whose namespace can be a collection of `admin`. */
const EMPTY_READS: ReadonlySet<string> = new Set(['find', 'aggregate', 'count', 'distinct']);

/**
 * A read of a collection in the `admin` database (not `system.*`) answered as the tenant's own,
 * empty `admin` database would: no documents, nothing forwarded. Undefined for anything else
 * (which the namespace rules refuse as before). An explained or pipeline-less aggregate is not
 * answered here.
 */
export function emptyAdminRead(input: CommandInput): RewriteResult | undefined {
  if (input.db !== 'admin' || !EMPTY_READS.has(input.name)) return undefined;
  const target = input.body.first;
  if (target === undefined || target.type !== BsonType.string) return undefined;
  const coll = stringOf(target);
  if (coll.length === 0 || coll.startsWith('system.') || coll.includes('\0') || coll.startsWith('$')) return undefined;
  const ns = `admin.${coll}`;
  switch (input.name) {
    case 'count':
      return withNote(local({ n: 0, ok: 1 }));
    case 'distinct':
      return withNote(local({ values: [], ok: 1 }));
    case 'aggregate': {
      const pipeline = input.body.get('pipeline');
      if (pipeline === undefined || pipeline.type !== BsonType.array || input.body.has('explain')) return undefined;
      if (arrayItems(pipeline).some((stage) => stage.type !== BsonType.document)) return undefined;
      return withNote(local({ cursor: { id: Long.ZERO, ns, firstBatch: [] }, ok: 1 }));
    }
    default:
      return withNote(local({ cursor: { id: Long.ZERO, ns, firstBatch: [] }, ok: 1 }));
  }
}

function withNote(result: RewriteResult): RewriteResult {
  return { ...result, notes: [{ kind: 'rewrite', rule: 'namespace.admin-empty', namespace: 'admin' }] };
}
