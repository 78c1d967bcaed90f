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

/**
 * Field names whose values are secrets: replaced by `[redacted]` up to two levels down (an
 * options object inside a context object is common: `{ tls: { keyPassphrase } }`).
 */
export const SECRET_FIELDS = [
  'password',
  'passwd',
  'pwd',
  'pass',
  'passphrase',
  'keyPassphrase',
  'secret',
  'clientSecret',
  'client_secret',
  'sessionKey',
  'token',
  'accessToken',
  'refreshToken',
  'idToken',
  'id_token',
  'jwt',
  'bearer',
  'apiKey',
  'key',
  'privateKey',
  'authorization',
  'cookie',
  'set-cookie',
  'credentials',
  'saslPayload',
  'payload',
  'speculativeAuthenticate',
] as const;

/**
 * Field names that hold user data (commands, documents, filters, what replies carry): replaced by
 * `[redacted]` at the top level and one level down. Log a command's name as `commandName`.
 */
export const DATA_FIELDS = [
  'command',
  'cmd',
  'document',
  'documents',
  'doc',
  'docs',
  'filter',
  'query',
  'q',
  'update',
  'updates',
  'u',
  'deletes',
  'arrayFilters',
  'pipeline',
  'let',
  'body',
  'reply',
  'firstBatch',
  'nextBatch',
  'sort',
  'projection',
  'values',
  'value',
] as const;

/** Every field name whose value is replaced by `[redacted]`. */
export const REDACTED_FIELDS = [...SECRET_FIELDS, ...DATA_FIELDS] as const;

/** Field names holding URIs: only the credentials inside are masked, the rest stays readable. */
export const URI_FIELDS = ['uri', 'url', 'connectionString', 'upstreamUri', 'mongoUri'] as const;

const URI_FIELD_SET: ReadonlySet<string> = new Set(URI_FIELDS);

function redactionPaths(): string[] {
  return [
    ...[...SECRET_FIELDS, ...URI_FIELDS].flatMap((field) => [field, `*.${field}`, `*.*.${field}`]),
    ...DATA_FIELDS.flatMap((field) => [field, `*.${field}`]),
  ].map(pathOf);
}

/** A redaction path; names that are not identifiers (`set-cookie`) are written in brackets. */
function pathOf(path: string): string {
  const parts = path.split('.');
  const last = parts.pop()!;
  const quoted = /^[A-Za-z_$][\w$]*$/.test(last) ? last : `["${last}"]`;
  return parts.length === 0 ? quoted : `${parts.join('.')}${quoted.startsWith('[') ? '' : '.'}${quoted}`;
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

/**
 * The root logger. Its level can be changed at run time (`logger.level = 'debug'`): child
 * loggers (per connection, per component) follow the root's level unless one was set on them.
 */
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
