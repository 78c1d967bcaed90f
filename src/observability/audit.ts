/**
 * The audit stream: one JSON line per isolation decision (a refusal, a rewrite, or in
 * `audit-only` mode a refusal that was not enforced). Events carry names only (tenant, command,
 * namespace, rule), never values, and are bounded in size: long fields are truncated (an audit
 * event that outgrows its sink is lost, Teleport #15645).
 *
 * With `file` the events are appended to that file through a pino destination; without, they go
 * to the main log as a child logger with `audit: true`.
 */
import { pino, type Logger } from 'pino';
import { SERVICE_NAME } from './logger.js';

export type AuditDecision = 'refused' | 'rewritten' | 'would-refuse' | 'would-rewrite';

export interface AuditEvent {
  tenant: string;
  /** The command's name (never its document). */
  command: string;
  /** `db.coll` as the client named it. */
  namespace?: string;
  /** Stable rule id, e.g. `filter.tenant`, `cursor.foreign`. */
  rule: string;
  decision: AuditDecision;
  connectionId: number | string;
  /** Name of the listener the connection came through. */
  listener: string;
}

export interface AuditLogOptions {
  /** Append JSON lines to this file; null: the main log (`logger`) with `audit: true`. */
  file: string | null;
  /** Upper bound of one event's serialized size; long fields are truncated to fit. */
  maxEventBytes: number;
  logger: Logger;
}

export interface AuditLog {
  record(event: AuditEvent): void;
  /** Flushes and closes the file (no-op for the main log). */
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

type StringField = 'tenant' | 'command' | 'namespace' | 'rule' | 'listener' | 'connectionId';

/** The fields as logged: `commandName` because the main logger redacts any field named `command`. */
export interface AuditFields {
  tenant: string;
  commandName: string;
  namespace?: string;
  rule: string;
  decision: AuditDecision;
  connectionId: number | string;
  listener: string;
  truncated?: true;
}

/**
 * The logged fields of an event, with the longest string field halved until the whole event fits
 * `maxEventBytes`. Only the known fields are copied: nothing else an event object might carry
 * can reach the log.
 */
export function auditFields(event: AuditEvent, maxEventBytes: number): AuditFields {
  const values: Record<StringField, string | undefined> = {
    tenant: String(event.tenant),
    command: String(event.command),
    namespace: event.namespace === undefined ? undefined : String(event.namespace),
    rule: String(event.rule),
    listener: String(event.listener),
    connectionId: typeof event.connectionId === 'number' ? undefined : String(event.connectionId),
  };
  const build = (): AuditFields => {
    const fields: AuditFields = {
      tenant: values.tenant!,
      commandName: values.command!,
      rule: values.rule!,
      decision: event.decision,
      connectionId: typeof event.connectionId === 'number' ? event.connectionId : values.connectionId!,
      listener: values.listener!,
    };
    if (values.namespace !== undefined) fields.namespace = values.namespace;
    return fields;
  };
  const budget = Math.max(maxEventBytes - ENVELOPE_BYTES, MIN_FIELD_BYTES * 6);
  let fields = build();
  let truncated = false;
  while (Buffer.byteLength(JSON.stringify(fields), 'utf8') > budget) {
    let longest: StringField | undefined;
    let longestBytes = MIN_FIELD_BYTES;
    for (const name of Object.keys(values) as StringField[]) {
      const value = values[name];
      if (value === undefined) continue;
      const bytes = Buffer.byteLength(value, 'utf8');
      if (bytes > longestBytes) {
        longest = name;
        longestBytes = bytes;
      }
    }
    if (longest === undefined) break; // everything is at its minimum already
    values[longest] = truncateUtf8(values[longest]!, Math.max(MIN_FIELD_BYTES, Math.floor(longestBytes / 2)));
    truncated = true;
    fields = build();
  }
  if (truncated) fields.truncated = true;
  return fields;
}

export function createAuditLog(options: AuditLogOptions): AuditLog {
  const { maxEventBytes } = options;
  if (options.file === null) {
    const child = options.logger.child({ audit: true });
    return {
      record: (event) => child.info(auditFields(event, maxEventBytes), AUDIT_MESSAGE),
      close: async () => {},
    };
  }
  const destination = pino.destination({ dest: options.file, append: true, mkdir: true, sync: false });
  const logger = pino(
    {
      level: 'info',
      base: { service: SERVICE_NAME, audit: true },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
  let closed = false;
  return {
    record: (event) => {
      if (!closed) logger.info(auditFields(event, maxEventBytes), AUDIT_MESSAGE);
    },
    close: () => {
      if (closed) return Promise.resolve();
      closed = true;
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
