/**
 * The pino logger factory: JSON lines with `service`, an ISO `time`, a textual `level`, and
 * redaction of every field that could carry a secret or a user's data.
 *
 * Conventions for callers: log a command's *name* as `commandName` (a field named `command`
 * is taken to be the command document and redacted), log errors under `err`, and never log
 * documents, filters or payloads (they are redacted if you do).
 */

import { pino, type DestinationStream, type Logger } from 'pino';
import { maskUri } from '../secrets.js';
import type { LogLevel } from '../config/types.js';

export type { Logger } from 'pino';

export const SERVICE_NAME = 'mongo-tenant-proxy';

/** Field names whose values are replaced by `[redacted]` wherever they appear (top level or one level down). */
export const REDACTED_FIELDS = [
  // credentials
  'password', 'pwd', 'pass', 'passphrase', 'secret', 'token', 'accessToken', 'refreshToken', 'apiKey', 'key',
  'privateKey', 'authorization', 'cookie', 'credentials', 'saslPayload', 'payload',
  // user data: commands, documents and what they contain
  'command', 'cmd', 'document', 'documents', 'filter', 'query', 'update', 'updates', 'pipeline', 'body',
  'reply', 'sort', 'projection', 'values',
] as const;

/** Field names holding URIs: only the credentials inside are masked, the rest stays readable. */
export const URI_FIELDS = ['uri', 'url', 'connectionString'] as const;

const URI_FIELD_SET: ReadonlySet<string> = new Set(URI_FIELDS);

function redactionPaths(): string[] {
  return [...REDACTED_FIELDS, ...URI_FIELDS].flatMap((field) => [field, `*.${field}`]);
}

function censor(value: unknown, path: string[]): unknown {
  const field = path[path.length - 1] ?? '';
  if (URI_FIELD_SET.has(field) && typeof value === 'string') return maskUri(value);
  return '[redacted]';
}

export interface CreateLoggerOptions {
  level: LogLevel;
  /** Where JSON lines go; standard output when omitted. */
  destination?: DestinationStream;
}

export function createLogger(options: CreateLoggerOptions): Logger {
  return pino(
    {
      level: options.level,
      base: { service: SERVICE_NAME },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: redactionPaths(), censor },
      serializers: { err: pino.stdSerializers.err },
    },
    options.destination,
  );
}

export interface ConnectionContext {
  /** The proxy's own sequence number for the client connection. */
  connectionId: number | string;
  /** The client's address as `host:port`. */
  remote: string;
}

/** A child logger whose every line names the client connection. */
export function connectionLogger(root: Logger, context: ConnectionContext): Logger {
  return root.child({ connectionId: context.connectionId, remote: context.remote });
}
