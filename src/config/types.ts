/**
 * The effective, validated configuration every other module receives. It is produced by
 * `loadConfig` (file < MTP_* environment < command-line flags) and frozen.
 *
 * The file format (field names, types, defaults, descriptions) is defined by the JSON Schema in
 * `schema.ts`; these types are its runtime shape (`host:port` strings become `HostPort`).
 * Keep the two in step: test/unit/config/load.test.ts compares the defaults with this type.
 */

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export type CompressorName = 'zstd' | 'snappy' | 'zlib';

/** How the proxy describes itself in hello replies; `auto` mirrors the upstream's kind. */
export type PresentAs = 'auto' | 'standalone' | 'sharded';

export interface HostPort {
  host: string;
  port: number;
}

export interface ProxyConfig {
  /** Client-facing listener (MongoDB wire protocol only; never HTTP). */
  listen: HostPort;
  upstream: {
    /** Standard `mongodb://` URI: hosts, TLS options, the proxy's own credentials. */
    uri: string;
    connectTimeoutMS: number;
    /** Idle authenticated upstream connections kept for reuse. */
    maxIdleConnections: number;
    idleTimeoutMS: number;
  };
  /** Prometheus `/metrics` listener; `null` disables it. */
  metrics: { listen: HostPort | null };
  log: { level: LogLevel };
  compression: {
    /** Compressors offered to clients in hello, in order of preference. */
    compressors: CompressorName[];
    zlibLevel: number;
  };
  handshake: {
    presentAs: PresentAs;
  };
  limits: {
    /** Upper bound on any frame; the upstream's `maxMessageSizeBytes` applies when smaller. */
    maxMessageSizeBytes: number;
    /** Deepest BSON nesting accepted from clients. */
    maxBsonDepth: number;
    /** Simultaneous client connections; more are refused. */
    maxConnections: number;
  };
}
