/**
 * The metrics HTTP endpoint: `/metrics` (Prometheus text), `/healthz` (the process answers) and
 * `/readyz` (the proxy can serve: upstream reached, not shutting down), 404 for anything else.
 * It is a separate listener from the MongoDB one and serves nothing more.
 */

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { HostPort } from '../config/types.js';
import type { MetricsSource } from './metrics.js';

export interface MetricsServer {
  /** The bound address (the real port when 0 was asked for). */
  readonly address: HostPort;
  /** Stops listening and drops open connections (scrapers keep theirs alive). */
  close(): Promise<void>;
}

function send(response: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  response.writeHead(status, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    ...headers,
    'Content-Length': String(Buffer.byteLength(body)),
  });
  response.end(response.req.method === 'HEAD' ? undefined : body);
}

async function handle(
  source: MetricsSource,
  ready: () => boolean,
  request: IncomingMessage,
  response: ServerResponse,
): Promise<void> {
  const path = (request.url ?? '/').split('?', 1)[0];
  if (path !== '/metrics' && path !== '/healthz' && path !== '/readyz') return send(response, 404, 'not found\n');
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    return send(response, 405, 'method not allowed\n', { Allow: 'GET, HEAD' });
  }
  if (path === '/healthz') return send(response, 200, 'ok\n');
  if (path === '/readyz') return ready() ? send(response, 200, 'ready\n') : send(response, 503, 'not ready\n');
  let text: string;
  try {
    text = await source.metrics();
  } catch {
    return send(response, 500, 'metrics collection failed\n');
  }
  send(response, 200, text, { 'Content-Type': source.contentType });
}

export interface MetricsServerOptions {
  /** Errors of the listening server after it started (rare); ignored when not given. */
  onError?: (error: Error) => void;
  /** Answers `/readyz`; always ready when not given. */
  ready?: () => boolean;
}

/** Starts the endpoint; rejects if the address cannot be bound (e.g. EADDRINUSE). */
export async function startMetricsServer(
  source: MetricsSource,
  listen: HostPort,
  options: MetricsServerOptions = {},
): Promise<MetricsServer> {
  const server = createServer((request, response) => {
    handle(source, options.ready ?? (() => true), request, response).catch(() => {
      if (!response.headersSent) send(response, 500, 'internal error\n');
      else response.destroy();
    });
  });
  // Short limits: scrapes are small requests; nothing legitimate is slow here.
  server.headersTimeout = 10_000;
  server.requestTimeout = 15_000;
  server.keepAliveTimeout = 65_000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (error) => options.onError?.(error));

  const bound = server.address();
  const address: HostPort =
    typeof bound === 'object' && bound !== null ? { host: bound.address, port: bound.port } : { ...listen };
  let closing: Promise<void> | undefined;
  return {
    address,
    close(): Promise<void> {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
