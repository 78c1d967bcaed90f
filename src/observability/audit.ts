/**
 * The audit stream: one JSON line per security-relevant event, on its own pino logger (not the
 * main log: its level never hides an audit event, and it can go to its own destination).
 *
 * - `decision`: an isolation decision (a refusal, a rewrite, or in `audit-only` mode what would
 *   have been refused or rewritten) and every other refusal of a command: not authenticated
 *   (`auth.required`), a per-tenant limit (`limit.*`).
 * - `authentication`: every authentication outcome, success or failure, with the listener,
 *   method, mechanism, the user name the client gave, the tenant and the remote address.
 *
 * Events carry names only (tenant, user, command, namespace, rule), never values, passwords,
 * tokens or payloads: only the fields listed here are copied from the caller's object. Each
 * event is bounded in size: long fields are halved until it fits `maxEventBytes` (an audit event
 * that outgrows its sink is lost, Teleport #15645).
 */
import { pino, type DestinationStream, type Logger } from 'pino';
import { SERVICE_NAME } from './logger.js';

export type AuditDecision = 'refused' | 'rewritten' | 'would-refuse' | 'would-rewrite';

/** Where a client connection came from: part of every event. */
export interface AuditConnection {
  /** The proxy's id of the client connection. */
  connectionId?: number | string;
  /** Name of the listener the connection came through. */
  listener: string;
  /** The client's address. */
  remoteAddress?: string;
}

export interface DecisionAuditEvent extends AuditConnection {
  /** Absent when the connection has no tenant yet (a command refused before authentication). */
  tenant?: string;
  /** The command's name (never its document). */
  command: string;
  /** The database, or `db.coll`, as the client named it. */
  namespace?: string;
  /** Stable rule id, e.g. `filter.tenant`, `cursor.foreign`, `auth.required`, `limit.rate`. */
  rule: string;
  decision: AuditDecision;
}

export interface AuthenticationAuditEvent extends AuditConnection {
  outcome: 'success' | 'failure';
  method: string;
  mechanism: string;
  /** The user name the client claimed, or the certificate subject. */
  user?: string;
  tenant?: string;
  /** Failure only: an error code name or a short fixed phrase. */
  reason?: string;
}

/** Where audit events go: standard output or error, or a file (appended, JSON lines). */
export type AuditDestination = 'stdout' | 'stderr' | (string & {});

export interface AuditLogOptions {
  destination: AuditDestination;
  /** Upper bound of one event's serialized size; long fields are truncated to fit. */
  maxEventBytes: number;
  /** Also write `rewritten` / `would-rewrite` decisions (as many as commands); refusals always. */
  rewrites?: boolean;
  /** Writes here instead of `destination` (tests, embedders). */
  stream?: DestinationStream;
  /**
   * A file destination failed (disk full, file gone, permission). Without a handler the stream's
   * `error` event would be uncaught and crash the proxy; with one, the proxy keeps serving and the
   * caller reports the loss of audit events.
   */
  onError?: (error: Error) => void;
}

export interface AuditLog {
  decision(event: DecisionAuditEvent): void;
  /**
   * Whether `decision` events are logged at all (rewrites are only with `audit.rewrites`): a
   * caller may skip building the event. Absent: assume they are.
   */
  logs?(decision: string): boolean;
  authentication(event: AuthenticationAuditEvent): void;
  /**
   * Reopens a file destination at its path (no-op for standard streams): after logrotate moved
   * the file, later events go to a new file there. Called on every reload (SIGHUP).
   */
  reopen(): void;
  /** Flushes, and closes a file destination. */
  close(): Promise<void>;
}

const AUDIT_MESSAGE = 'audit';
/** Bytes taken by what pino adds around the fields: time, level, service, msg, audit flag, braces. */
const ENVELOPE_BYTES = 128;
/** A truncated field keeps at least this many bytes. */
const MIN_FIELD_BYTES = 16;
const ELLIPSIS = '…';

/** `text` cut to at most `maxBytes` UTF-8 bytes (ellipsis included), never inside a character. */
export function truncateUtf8(text: string, maxBytes: number): string {
  if (Buffer.byteLength(text, 'utf8') <= maxBytes) return text;
  const budget = Math.max(0, maxBytes - Buffer.byteLength(ELLIPSIS, 'utf8'));
  const bytes = Buffer.from(text, 'utf8');
  let end = budget;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--; // back off a continuation byte
  return bytes.toString('utf8', 0, end) + ELLIPSIS;
}

/** A logged event: known fields only, strings possibly truncated. */
export type AuditFields = Record<string, string | number | true>;

type FieldValue = string | number | undefined;

/**
 * The fields as logged, in this order, with the longest string halved until the whole event fits
 * `maxEventBytes`. Numbers (a connection id) are never cut; `undefined` fields are left out.
 */
function boundedFields(values: Record<string, FieldValue>, maxEventBytes: number): AuditFields {
  const strings = new Map<string, string>();
  for (const [name, value] of Object.entries(values)) if (typeof value === 'string') strings.set(name, value);
  const build = (): AuditFields => {
    const fields: AuditFields = {};
    for (const [name, value] of Object.entries(values)) {
      if (value === undefined) continue;
      fields[name] = typeof value === 'number' ? value : strings.get(name)!;
    }
    return fields;
  };
  const budget = Math.max(maxEventBytes - ENVELOPE_BYTES, MIN_FIELD_BYTES * strings.size);
  const size = (fields: AuditFields): number => Buffer.byteLength(JSON.stringify(fields), 'utf8');
  let fields = build();
  if (size(fields) <= budget) return fields;
  // Cut until the event fits with its `truncated` mark.
  while (size({ ...fields, truncated: true }) > budget) {
    let longest: string | undefined;
    let longestBytes = MIN_FIELD_BYTES;
    for (const [name, value] of strings) {
      const bytes = Buffer.byteLength(value, 'utf8');
      if (bytes > longestBytes) {
        longest = name;
        longestBytes = bytes;
      }
    }
    if (longest === undefined) break; // everything is at its minimum already
    strings.set(longest, truncateUtf8(strings.get(longest)!, Math.max(MIN_FIELD_BYTES, Math.floor(longestBytes / 2))));
    fields = build();
  }
  fields.truncated = true;
  return fields;
}

const text = (value: unknown): string | undefined =>
  value === undefined || value === null ? undefined : String(value);
const connectionIdOf = (value: unknown): FieldValue => (typeof value === 'number' ? value : text(value));

/**
 * The logged fields of a decision: `commandName` because the main logger (and log pipelines
 * configured like it) treat a field named `command` as a command document.
 */
export function decisionFields(event: DecisionAuditEvent, maxEventBytes: number): AuditFields {
  return boundedFields(
    {
      event: 'decision',
      decision: text(event.decision),
      rule: text(event.rule),
      tenant: text(event.tenant),
      commandName: text(event.command),
      namespace: text(event.namespace),
      listener: text(event.listener),
      remoteAddress: text(event.remoteAddress),
      connectionId: connectionIdOf(event.connectionId),
    },
    maxEventBytes,
  );
}

export function authenticationFields(event: AuthenticationAuditEvent, maxEventBytes: number): AuditFields {
  return boundedFields(
    {
      event: 'authentication',
      outcome: text(event.outcome),
      method: text(event.method),
      mechanism: text(event.mechanism),
      user: text(event.user),
      tenant: text(event.tenant),
      reason: text(event.reason),
      listener: text(event.listener),
      remoteAddress: text(event.remoteAddress),
      connectionId: connectionIdOf(event.connectionId),
    },
    maxEventBytes,
  );
}

/** The sink for a destination; standard streams are written synchronously, one whole line per write. */
function destinationStream(destination: AuditDestination): { stream: DestinationStream; file: boolean } {
  if (destination === 'stdout' || destination === 'stderr') {
    return { stream: pino.destination({ dest: destination === 'stdout' ? 1 : 2, sync: true }), file: false };
  }
  return { stream: pino.destination({ dest: destination, append: true, mkdir: true, sync: false }), file: true };
}

export function createAuditLog(options: AuditLogOptions): AuditLog {
  const { maxEventBytes } = options;
  const auditRewrites = options.rewrites ?? false;
  const sink =
    options.stream === undefined ? destinationStream(options.destination) : { stream: options.stream, file: false };
  const logger: Logger = pino(
    {
      level: 'info',
      base: { service: SERVICE_NAME, audit: true },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    sink.stream,
  );
  // Registered even without a handler: an unhandled stream error would end the process.
  if (sink.file)
    (sink.stream as ReturnType<typeof pino.destination>).on('error', (error: Error) => options.onError?.(error));
  let closed = false;
  const write = (fields: AuditFields): void => {
    if (!closed) logger.info(fields, AUDIT_MESSAGE);
  };
  const logs = (decision: string): boolean =>
    auditRewrites || (decision !== 'rewritten' && decision !== 'would-rewrite');
  return {
    decision: (event) => {
      if (!logs(event.decision)) return;
      write(decisionFields(event, maxEventBytes));
    },
    logs,
    authentication: (event) => write(authenticationFields(event, maxEventBytes)),
    reopen: () => {
      if (!closed && sink.file) (sink.stream as ReturnType<typeof pino.destination>).reopen();
    },
    close: () => {
      if (closed) return Promise.resolve();
      closed = true;
      if (!sink.file) return Promise.resolve(); // standard streams stay open for the rest of the process
      const destination = sink.stream as ReturnType<typeof pino.destination>;
      return new Promise<void>((resolve, reject) => {
        const end = (): void => {
          destination.once('close', () => resolve());
          destination.once('error', reject);
          destination.end();
        };
        // SonicBoom opens the file asynchronously; it cannot flush before it is ready.
        if ((destination as unknown as { fd: number }).fd >= 0) end();
        else destination.once('ready', end);
      });
    },
  };
}
