/**
 * `host:port` addresses as written in configuration: `127.0.0.1:27018`, `db.internal:27017`,
 * `[::1]:27018` (IPv6 always in brackets, so the last colon is never ambiguous).
 */

import { isIPv4, isIPv6 } from 'node:net';
import { HostPortError } from '../errors.js';
import type { HostPort } from './types.js';

/** Words that disable an optional listener (`--metrics-listen off`). */
const OFF_WORDS = new Set(['', 'off']);

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;

export type HostPortResult = { ok: true; value: HostPort } | { ok: false; reason: string };

/** Parses `host:port`; on failure says why, without throwing. */
export function tryParseHostPort(text: string): HostPortResult {
  const fail = (reason: string): HostPortResult => ({ ok: false, reason });
  if (text.trim() !== text) return fail('no spaces allowed');
  let host: string;
  let portText: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) return fail('missing "]" after the IPv6 address');
    host = text.slice(1, close);
    if (!isIPv6(host)) return fail(`"${host}" is not an IPv6 address`);
    if (text[close + 1] !== ':') return fail('missing ":port"');
    portText = text.slice(close + 2);
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) return fail('missing ":port"');
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(':')) return fail('IPv6 addresses go in brackets, e.g. "[::1]:27018"');
    if (host === '') return fail('missing host');
    if (!isIPv4(host) && !HOSTNAME.test(host)) return fail(`"${host}" is not a valid host name or IP address`);
  }
  if (!/^\d{1,5}$/.test(portText)) return fail(portText === '' ? 'missing port number' : `port "${portText}" is not a number`);
  const port = Number(portText);
  if (port > 65_535) return fail(`port ${port} is above 65535`);
  return { ok: true, value: { host, port } };
}

/** Parses `host:port`, throwing a HostPortError whose message says what is wrong. */
export function parseHostPort(text: string): HostPort {
  const result = tryParseHostPort(text);
  if (!result.ok) throw new HostPortError(result.reason);
  return result.value;
}

/** True for the values that mean "disabled" in an optional address (`off`, empty, null). */
export function isOff(value: unknown): boolean {
  return value === null || (typeof value === 'string' && OFF_WORDS.has(value.trim().toLowerCase()));
}

/** `{host, port}` back to `host:port`, with brackets around IPv6 hosts. */
export function formatHostPort(address: HostPort): string {
  return address.host.includes(':') ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}
