/**
 * The custom string formats of the schema. Each returns `null` when the text is valid and
 * otherwise the reason it is not, which the loader puts in its error message.
 */

import { isOff, tryParseHostPort } from './host-port.js';
import { Formats } from './schema.js';

export type FormatCheck = (text: string) => string | null;

function hostPort(text: string): string | null {
  const result = tryParseHostPort(text);
  return result.ok ? null : result.reason;
}

function hostPortOrOff(text: string): string | null {
  return isOff(text) ? null : hostPort(text);
}

/**
 * A light check of a MongoDB connection string: the scheme and a non-empty host list. The full
 * parse (options, SRV lookups) belongs to `src/upstream`, which reports its own errors.
 */
function mongodbUri(text: string): string | null {
  const match = /^(mongodb|mongodb\+srv):\/\/(.*)$/s.exec(text);
  if (match === null) return 'must start with "mongodb://" or "mongodb+srv://"';
  const rest = match[2] ?? '';
  // Credentials end at the last "@" of the authority; hosts run to the first "/" or "?".
  const at = rest.lastIndexOf('@');
  const afterCredentials = at >= 0 ? rest.slice(at + 1) : rest;
  const hosts = afterCredentials.split(/[/?]/, 1)[0] ?? '';
  if (hosts === '') return 'has no host';
  if (/\s/.test(hosts)) return 'has spaces in its host list';
  if (match[1] === 'mongodb+srv' && (hosts.includes(',') || hosts.includes(':'))) {
    return 'mongodb+srv:// takes exactly one host name and no port';
  }
  for (const host of hosts.split(',')) {
    const parsed = /^(\[[^\]]*\]|[^:[\]]*)(?::(.*))?$/.exec(host);
    if (parsed === null || parsed[1] === '' || parsed[1] === '[]') return `has a host without a name ("${host}")`;
    const port = parsed[2];
    if (port !== undefined && (!/^\d{1,5}$/.test(port) || Number(port) > 65_535)) {
      return `has an invalid port ("${host}")`;
    }
  }
  return null;
}

export const formatChecks: Readonly<Record<string, FormatCheck>> = {
  [Formats.hostPort]: hostPort,
  [Formats.hostPortOrOff]: hostPortOrOff,
  [Formats.mongodbUri]: mongodbUri,
};

/** What a value of each format must look like, for error messages. */
export const formatExpectations: Readonly<Record<string, string>> = {
  [Formats.hostPort]: 'must be "host:port" (IPv6 as "[::1]:27018")',
  [Formats.hostPortOrOff]: 'must be "host:port" (IPv6 as "[::1]:27018") or "off"',
  [Formats.mongodbUri]: 'must be a mongodb:// or mongodb+srv:// connection string',
};
