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

/** Whether a TLS listener asks for, or insists on, a client certificate. */
export type ClientCertificateMode = 'none' | 'optional' | 'required';

export interface ListenerTlsConfig {
  /** PEM server certificate (chain) and key; re-read when they change on disk. */
  certFile: string;
  keyFile: string;
  /** Passphrase of an encrypted key (a secret: never shown). */
  keyPassphrase: string | null;
  /** PEM CA bundle that client certificates are verified against. */
  caFile: string | null;
  clientCertificates: ClientCertificateMode;
  minVersion: 'TLSv1.2' | 'TLSv1.3';
}

/**
 * Ways a connection's tenant is established (issue: tenant identity).
 * - `mtls`: from the verified client certificate (also accepts authMechanism=MONGODB-X509);
 * - `scram`: SCRAM-SHA-256 / SCRAM-SHA-1 verified by the proxy against the credentials file;
 * - `scram-passthrough`: SCRAM relayed to the upstream, user mapped to a tenant;
 * - `plain-jwt`: a signed JWT sent as the password with authMechanism=PLAIN;
 * - `static`: the listener's fixed tenant (loopback or required-mTLS listeners only).
 */
export type IdentityMethod = 'mtls' | 'scram' | 'scram-passthrough' | 'plain-jwt' | 'static';

export interface ListenerConfig {
  /** Names the listener in logs and metrics. */
  name: string;
  /** Client-facing address (MongoDB wire protocol only; never HTTP). */
  listen: HostPort;
  tls: ListenerTlsConfig | null;
  /** Identity methods enabled on this listener; none means only the handshake is answered. */
  methods: IdentityMethod[];
  /** The tenant of every connection when `methods` includes `static`. */
  staticTenant: string | null;
}

/** Certificate fields a mapping rule can read. */
export type CertificateField = 'san-uri' | 'san-dns' | 'san-email' | 'subject-cn' | 'subject-ou' | 'subject-o';

export interface CertificateRule {
  field: CertificateField;
  /**
   * JavaScript regular expression (compiled with the `u` flag, not anchored: configurations
   * write `^…$`) with a named group `tenant`; the first rule that matches wins. The loader has
   * checked that it compiles and has the group.
   */
  pattern: string;
}

export type ScramMechanism = 'SCRAM-SHA-256' | 'SCRAM-SHA-1';

/**
 * Signature algorithms a JWT may use (method plain-jwt): asymmetric only, so the proxy holds
 * no secret that could mint tokens; `none` and HMAC are never accepted.
 */
export const JWT_ALGORITHMS = [
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519',
] as const;

/** Maps a user authenticated by the upstream (scram-passthrough) to a tenant. */
export interface PassthroughRule {
  /** Exactly this user name (with `db`, its authentication database). */
  user?: string;
  /**
   * Or: a regular expression matched against the whole user name (no flags); a named group
   * `tenant` may supply the tenant.
   */
  userPattern?: string;
  /** Or: users holding this role (`role` or `role@db`). */
  role?: string;
  /** Authentication database of the user (or the role); unset matches any. */
  db?: string;
  /** The tenant; required unless `userPattern` has a `tenant` group (never both). */
  tenant?: string;
}

export interface IdentityConfig {
  /** Ordered rules that pick the tenant from a client certificate (method `mtls`). */
  certificateRules: CertificateRule[];
  scram: {
    /** YAML file of users: stored keys, salts and iteration counts, never plaintext. */
    credentialsFile: string | null;
    mechanisms: ScramMechanism[];
  };
  passthrough: { rules: PassthroughRule[] };
  jwt: {
    /**
     * PEM public key or certificate (or one JWK), or a JWKS file: never both, and one of them is
     * needed for `plain-jwt`, as is `audience`.
     */
    keyFile: string | null;
    jwksFile: string | null;
    audience: string | null;
    issuer: string | null;
    /** Claim holding the tenant (dotted path allowed, e.g. `kubernetes.io.namespace`). */
    tenantClaim: string;
    /** JWS algorithms allowed; the loader accepts RS*, PS*, ES*, EdDSA, Ed25519 and HS* (never `none`). */
    algorithms: string[];
    clockToleranceSeconds: number;
  };
  /** Repeated failures from one user or address wait this long, doubling up to the maximum (baseMS <= maxMS). */
  failureDelay: { baseMS: number; maxMS: number };
  /** How often certificate, key, CA, credentials and key files are checked for changes. */
  reloadIntervalMS: number;
  /** Distinct tenants given their own metrics label; the rest count as `other`. */
  maxTenantLabels: number;
}

/** BSON type of the tenant value stamped into documents and used in filters (catalogue G8). */
export type TenantValueType = 'string' | 'objectId' | 'uuid' | 'int64';

/**
 * How a namespace keeps tenants apart:
 * - `shared-collection`: one collection for all tenants, a tenant field in every document;
 * - `database-per-tenant`: the client's database is mapped to the tenant's own database;
 * - `collection-prefix`: the client's collection is mapped to the tenant's own collection.
 */
export type IsolationModel = 'shared-collection' | 'database-per-tenant' | 'collection-prefix';

/** What a tenant may do in a namespace. */
export type NamespaceAccess = 'scoped' | 'shared-readonly' | 'denied';

export interface NamespaceRule {
  /** `db.collection` glob: `*` matches any run of characters except `.` in the db part; e.g. `app.*`, `ref.countries`, `*.audit_*`. */
  match: string;
  model?: IsolationModel;
  access?: NamespaceAccess;
}

/** Whether documents read from shared collections show the tenant field. */
export type TenantFieldInReplies = 'show' | 'hide';

export interface IsolationConfig {
  /**
   * `enforce` (default) or `audit-only`: decisions are computed, logged and counted but NOT
   * enforced. Only for rolling out new rules; it must be spelled out in full and logs a loud
   * warning at start-up and sets a metric.
   */
  mode: 'enforce' | 'audit-only';
  /** Field holding the tenant in shared collections (default `tenantId`). */
  tenantField: string;
  tenantValueType: TenantValueType;
  defaultModel: IsolationModel;
  /** database-per-tenant: physical database name; `{tenant}` and `{db}` are replaced (injective: validated). */
  databaseTemplate: string;
  /** collection-prefix: physical collection name; `{tenant}` and `{collection}` are replaced. */
  collectionTemplate: string;
  /** Ordered rules; the first whose `match` fits a namespace decides its model and access. */
  namespaces: NamespaceRule[];
  /** Upper bound (and default) for maxTimeMS on every command that takes one. */
  maxTimeMS: number;
  /** HMAC key deriving upstream session ids per tenant (a secret); null: a random key per process. */
  sessionKey: string | null;
  /**
   * `hide`: the tenant field is removed from every document a tenant reads from shared
   * collections (find, getMore, aggregate incl. joined documents, findAndModify); `show` leaves it.
   * Optional in the type so engines built by hand (tests) show it; the schema fills in `hide`.
   */
  tenantFieldInReplies?: TenantFieldInReplies;
  /**
   * A private database for each tenant in shared collections (virtual DDL, listings and stats
   * answered from the ownership catalogue). Optional in the type so engines built by hand (tests)
   * keep today's refusals; the schema always fills it in.
   */
  tenancy?: TenancyConfig;
}

/** An index the operator declares on a shared namespace: always tenant-prefixed, shared by every tenant. */
export interface DeclaredIndex {
  /** `db.collection` (exact, no glob). */
  namespace: string;
  /** The index name, as created upstream and shown to every tenant. */
  name: string;
  /** The key as tenants see it, in order (`field`, `-field`, `field:type`); the proxy prefixes the tenant field. */
  key: string[];
  unique: boolean;
}

export interface TenancyConfig {
  /** Shared collections: createIndexes, dropIndexes, drop, dropDatabase, listings and stats are virtual per tenant. */
  virtualDdl: boolean;
  /** The proxy-owned database holding the ownership catalogue; never reachable by tenants. */
  catalogueDatabase: string;
  /** Indexes one tenant may own on one shared collection (declared ones not counted). */
  indexesPerTenant: number;
  /** Physical index slots per collection no tenant can take (left for declared indexes and the operator). */
  indexReserve: number;
  /** The upstream's index limit per collection (MongoDB: 64, the `_id` index included). */
  maxIndexesPerCollection: number;
  /** Documents deleted per batch by a virtual drop (FerretDB's SQLite backend fails very large deletes). */
  deleteBatchSize: number;
  /** Stats computed by the proxy read at most this many of the tenant's documents; beyond it they are refused. */
  statsMaxDocuments: number;
  /** Operator-declared shared indexes, created at start and by `ensure-indexes`. */
  sharedIndexes: DeclaredIndex[];
}

export interface ProxyConfig {
  /** Client-facing listeners; `--listen` / MTP_LISTEN set the first one's address. */
  listeners: ListenerConfig[];
  identity: IdentityConfig;
  isolation: IsolationConfig;
  upstream: {
    /** Standard `mongodb://` URI: hosts, TLS options, the proxy's own credentials. */
    uri: string;
    connectTimeoutMS: number;
    /** Idle authenticated upstream connections kept for reuse. */
    maxIdleConnections: number;
    idleTimeoutMS: number;
    /** Connections per server (in use + idle + opening); commands wait beyond it. */
    maxPoolSize: number;
    minPoolSize: number;
    /** Connections are retired after this long; 0 never. */
    maxLifetimeMS: number;
    /** A command waits at most this long for a pool connection. */
    waitQueueTimeoutMS: number;
    /** Pool connections one tenant may hold at once per server (in use + pinned); 0 no cap. */
    maxPoolConnectionsPerTenant: number;
    /** A command waits at most this long for a suitable server (e.g. a primary). */
    serverSelectionTimeoutMS: number;
    heartbeatFrequencyMS: number;
    localThresholdMS: number;
    /** An upstream request waits at most this long for a reply; 0 no limit (maxTimeMS still bounds it). */
    socketTimeoutMS: number;
    retry: { maxAttempts: number; initialBackoffMS: number; maxBackoffMS: number };
    circuitBreaker: {
      failureThreshold: number;
      /** The longest open time (the doubling's cap). */
      openMS: number;
      halfOpenProbes: number;
      /** The first open time; doubles on each re-open up to openMS. */
      initialOpenMS: number;
      /** Health checks while open; 0 none. */
      probeIntervalMS: number;
    };
  };
  /** Prometheus `/metrics` listener; `null` disables it. */
  metrics: {
    listen: HostPort | null;
    /** Distinct database names labelled on operation metrics; the rest count as `other`. */
    maxDatabaseLabels: number;
    /** `/readyz` answers 503 while no writable upstream server is reachable (breaker open, no primary). */
    readinessFollowsUpstream: boolean;
  };
  log: { level: LogLevel };
  /** The audit stream (refusals, rewrites, authentication outcomes): names only, never values. */
  audit: {
    /** `stdout`, `stderr`, or a file the JSON lines are appended to. */
    destination: string;
    /** Largest audit event in bytes; longer fields are truncated. */
    maxEventBytes: number;
    /** Also audit isolation rewrites (one event per rewritten command); refusals are always audited. */
    rewrites: boolean;
  };
  /** Hot reload (SIGHUP always; file changes when `watchConfigFile`). */
  reload: {
    watchConfigFile: boolean;
    /** How often the configuration file is checked for changes. */
    intervalMS: number;
  };
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
    /** Idle client connections are closed after this long; 0 never. */
    clientIdleTimeoutMS: number;
    /** A message must arrive whole within this long of its first byte. */
    frameTimeoutMS: number;
    /** Time allowed for a client's TLS handshake on TLS listeners. */
    tlsHandshakeTimeoutMS: number;
    /** Shutdown: how long in-flight requests get before their connections are closed. */
    drainTimeoutMS: number;
    /** Client connections per tenant; one more gets an error and is closed. 0 unlimited. */
    maxConnectionsPerTenant: number;
    /** Commands forwarded upstream at once per tenant, across its connections. 0 unlimited. */
    maxInFlightPerTenant: number;
    /** Connections without an established tenant, across listeners; 0 unlimited. */
    maxUnauthenticatedConnections: number;
    /** A connection without a tenant is closed after this long without a hello; 0 never. */
    authTimeoutMS: number;
    /** Request and unread reply bytes held in memory over all connections (fair share per tenant). */
    maxBufferedBytes: number;
    /** Request bytes per second per tenant, charged before parsing; 0 unlimited. */
    bytesPerSecondPerTenant: number;
    /** Milliseconds of the proxy's CPU per second per tenant (its work on the tenant's requests); 0 unlimited. */
    cpuMillisPerSecondPerTenant: number;
    /** Commands per second per tenant (token bucket; every command but hello). 0 unlimited. */
    operationsPerSecondPerTenant: number;
    /** Token bucket size for `operationsPerSecondPerTenant`; 0 means the same as the rate. */
    operationsBurstPerTenant: number;
    /** Open upstream cursors per tenant; a command opening one more is refused. 0 unlimited. */
    maxOpenCursorsPerTenant: number;
  };
}
