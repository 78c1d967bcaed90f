/**
 * The configuration's JSON Schema: the single source of truth for the shape, the types, the
 * defaults and the descriptions of every setting. `config/schema.json` is this object written
 * out (a unit test keeps the two equal), so editors can validate YAML files against it.
 *
 * Conventions the loader relies on (see `load.ts`):
 * - every object is a *section*: `additionalProperties: false` and `default: {}`, so unknown
 *   keys are errors and the defaults of its fields apply when the section is left out;
 * - everything else is a *field* (a leaf), addressable as `MTP_<SECTION>__<FIELD>`. A list of
 *   objects (`listeners`, `identity.certificateRules`, `identity.passthrough.rules`) is one
 *   field: its items are objects (`additionalProperties: false`, `required`, per-item defaults)
 *   and the environment sets it whole, as JSON (`MTP_LISTENERS='[{"name": …}]'`);
 * - rules across fields that JSON Schema cannot say (unique listener names, a method that needs
 *   a file…) are checked after the schema by `checks.ts`;
 * - `format: "host-port"` fields are written `host:port` and become `{ host, port }`;
 *   `format: "host-port-or-off"` may also be `off`, empty or `null`, which becomes `null`;
 * - `format: "mongodb-uri"` fields have their password masked wherever they are shown;
 *   `writeOnly: true` fields are secrets and are never shown at all.
 *
 * To add a section (policy…): add it to `sections` below, extend
 * `ProxyConfig` in `types.ts`, document it in `config/example.yaml` and regenerate
 * `config/schema.json` (`UPDATE_CONFIG_SCHEMA=1 npx vitest run test/unit/config/schema.test.ts`).
 */

import { JWT_ALGORITHMS } from './types.js';

export { JWT_ALGORITHMS };

/** The subset of JSON Schema draft-07 this project uses. */
export interface SchemaNode {
  type?: SchemaType | SchemaType[];
  title?: string;
  description?: string;
  default?: unknown;
  examples?: unknown[];
  properties?: Record<string, SchemaNode>;
  additionalProperties?: boolean;
  items?: SchemaNode;
  uniqueItems?: boolean;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  minLength?: number;
  minItems?: number;
  required?: string[];
  format?: string;
  writeOnly?: boolean;
}

export type SchemaType = 'object' | 'array' | 'string' | 'integer' | 'number' | 'boolean' | 'null';

export interface RootSchema extends SchemaNode {
  $schema: string;
  title: string;
}

/** Custom formats, implemented in `formats.ts` and registered with ajv. */
export const Formats = {
  hostPort: 'host-port',
  hostPortOrOff: 'host-port-or-off',
  mongodbUri: 'mongodb-uri',
} as const;

/** Largest delay Node timers accept (2^31 - 1 ms); bigger values would fire immediately. */
const MAX_TIMER_MS = 2_147_483_647;

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export const COMPRESSORS = ['zstd', 'snappy', 'zlib'] as const;
export const PRESENT_AS = ['auto', 'standalone', 'sharded'] as const;
export const IDENTITY_METHODS = ['mtls', 'scram', 'scram-passthrough', 'plain-jwt', 'static'] as const;
export const CLIENT_CERTIFICATE_MODES = ['none', 'optional', 'required'] as const;
export const TLS_VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const;
export const CERTIFICATE_FIELDS = ['san-uri', 'san-dns', 'san-email', 'subject-cn', 'subject-ou', 'subject-o'] as const;
export const SCRAM_MECHANISMS = ['SCRAM-SHA-256', 'SCRAM-SHA-1'] as const;
/** `audit-only` must be written exactly so; there are no aliases (`audit`, `dry-run`, `Audit-Only`…). */
export const ISOLATION_MODES = ['enforce', 'audit-only'] as const;
export const TENANT_VALUE_TYPES = ['string', 'objectId', 'uuid', 'int64'] as const;
export const TENANT_FIELD_IN_REPLIES = ['hide', 'show'] as const;
export const ISOLATION_MODELS = ['shared-collection', 'database-per-tenant', 'collection-prefix'] as const;
export const NAMESPACE_ACCESS = ['scoped', 'shared-readonly', 'denied'] as const;
/**
 * JWS algorithms accepted for `plain-jwt` (as src/identity/plain-jwt.ts verifies them). `none`
 * never is; HS* must be listed explicitly and needs a symmetric (`oct`) JWK in `keyFile`.
 */

/** The listener used when the configuration names none (and the one `--listen` creates). */
export const DEFAULT_LISTENER = {
  name: 'default',
  listen: '127.0.0.1:27018',
  tls: null,
  methods: [],
  staticTenant: null,
} as const;

function section(description: string, properties: Record<string, SchemaNode>): SchemaNode {
  return { type: 'object', description, additionalProperties: false, default: {}, properties };
}

function integer(description: string, defaultValue: number, minimum: number, maximum: number): SchemaNode {
  return { type: 'integer', description, default: defaultValue, minimum, maximum };
}

/** A string that may be left unset (`null`, the default). */
function optionalString(description: string, extra: Partial<SchemaNode> = {}): SchemaNode {
  return { type: ['string', 'null'], minLength: 1, description, default: null, ...extra };
}

/** The object each item of a list field is: closed, with its own required keys and defaults. */
function item(required: string[], properties: Record<string, SchemaNode>): SchemaNode {
  return { type: 'object', additionalProperties: false, ...(required.length > 0 ? { required } : {}), properties };
}

const listenerTls: SchemaNode = {
  type: ['object', 'null'],
  description:
    'TLS for this listener; null (the default) accepts plain TCP. Certificate, key and CA files are ' +
    're-read when they change on disk (see identity.reloadIntervalMS).',
  default: null,
  additionalProperties: false,
  required: ['certFile', 'keyFile'],
  properties: {
    certFile: { type: 'string', minLength: 1, description: 'PEM server certificate, followed by its chain.' },
    keyFile: { type: 'string', minLength: 1, description: 'PEM private key of the server certificate.' },
    keyPassphrase: optionalString('Passphrase of an encrypted keyFile (a secret: never shown).', { writeOnly: true }),
    caFile: optionalString(
      'PEM CA bundle that client certificates are verified against; required when clientCertificates ' +
        'is "optional" or "required".',
    ),
    clientCertificates: {
      type: 'string',
      enum: [...CLIENT_CERTIFICATE_MODES],
      description:
        '"none" does not ask for a client certificate, "optional" asks and verifies one when sent, ' +
        '"required" refuses TLS handshakes without a valid one.',
      default: 'none',
    },
    minVersion: {
      type: 'string',
      enum: [...TLS_VERSIONS],
      description: 'Oldest TLS version accepted.',
      default: 'TLSv1.2',
    },
  },
};

const listener: SchemaNode = item(['name', 'listen'], {
  name: {
    type: 'string',
    minLength: 1,
    description: 'Names the listener in logs and metrics; unique among listeners.',
  },
  listen: {
    type: 'string',
    format: Formats.hostPort,
    description:
      'Address of the listener (MongoDB wire protocol only, never HTTP), as "host:port"; IPv6 addresses ' +
      'in brackets, e.g. "[::1]:27018". Port 0 picks a free port.',
    examples: ['0.0.0.0:27018', '[::1]:27018'],
  },
  tls: listenerTls,
  methods: {
    type: 'array',
    items: { type: 'string', enum: [...IDENTITY_METHODS] },
    uniqueItems: true,
    description:
      'How connections establish their tenant: mtls, scram, scram-passthrough, plain-jwt, static. ' +
      'Several may be listed; none leaves only the handshake answered.',
    default: [],
  },
  staticTenant: optionalString(
    'The tenant of every connection; required exactly when methods include "static", which is allowed ' +
      'only on a loopback address or a TLS listener with clientCertificates "required".',
  ),
});

const certificateRule: SchemaNode = item(['field', 'pattern'], {
  field: {
    type: 'string',
    enum: [...CERTIFICATE_FIELDS],
    description: 'Certificate field the pattern is matched against (each SAN or RDN value in turn).',
  },
  pattern: {
    type: 'string',
    minLength: 1,
    description:
      'JavaScript regular expression (Unicode mode, not anchored: write ^ and $) with a named group ' +
      '"tenant", e.g. "^spiffe://cluster/ns/(?<tenant>[a-z0-9-]+)/sa/[^/]+$".',
  },
});

const passthroughRule: SchemaNode = item([], {
  user: { type: 'string', minLength: 1, description: 'Exactly this user name.' },
  userPattern: {
    type: 'string',
    minLength: 1,
    description:
      'Or: a JavaScript regular expression matched against the whole user name; a named group ' +
      '"tenant" may supply the tenant.',
  },
  role: { type: 'string', minLength: 1, description: 'Or: users holding this role ("role" or "role@db").' },
  db: { type: 'string', minLength: 1, description: 'Authentication database of the user (or the role); unset matches any.' },
  tenant: {
    type: 'string',
    minLength: 1,
    description: 'The tenant of matching users; required unless userPattern has a "tenant" group.',
  },
});

const sections: Record<string, SchemaNode> = {
  listeners: {
    type: 'array',
    items: listener,
    minItems: 1,
    description:
      'Client-facing listeners, each with its own address, TLS and identity methods. --listen and ' +
      'MTP_LISTEN set the address of the first one (creating the default listener when none is ' +
      'configured); MTP_LISTENERS sets the whole list as JSON.',
    default: [DEFAULT_LISTENER],
  },
  identity: section('How connections establish their tenant (the methods are enabled per listener).', {
    certificateRules: {
      type: 'array',
      items: certificateRule,
      description:
        'Method mtls: ordered rules that pick the tenant from the client certificate; the first match ' +
        'wins and a certificate no rule matches is refused. Env: JSON list.',
      default: [],
    },
    scram: section('Method scram: SCRAM verified by the proxy itself.', {
      credentialsFile: optionalString(
        'YAML file of users (stored keys, salts and iteration counts, never plaintext; see ' +
          '`mongo-tenant-proxy hash-password`); required by method scram.',
      ),
      mechanisms: {
        type: 'array',
        items: { type: 'string', enum: [...SCRAM_MECHANISMS] },
        uniqueItems: true,
        minItems: 1,
        description: 'SASL mechanisms offered to clients; SCRAM-SHA-1 only for old clients.',
        default: [...SCRAM_MECHANISMS],
      },
    }),
    passthrough: section('Method scram-passthrough: SCRAM relayed to the upstream, user mapped to a tenant.', {
      rules: {
        type: 'array',
        items: passthroughRule,
        description:
          'Ordered rules mapping the upstream-authenticated user to a tenant; each has exactly one of ' +
          'user, userPattern or role. The first match wins; a user no rule matches is refused. Env: JSON list.',
        default: [],
      },
    }),
    jwt: section('Method plain-jwt: a signed JWT sent as the password with authMechanism=PLAIN.', {
      keyFile: optionalString(
        'PEM public key or certificate, or one JWK, that tokens are verified with (or set jwksFile).',
      ),
      jwksFile: optionalString('JWKS file (a JSON key set) that tokens are verified with (or set keyFile).'),
      audience: optionalString('The "aud" tokens must carry; required by method plain-jwt.'),
      issuer: optionalString('The "iss" tokens must carry; null accepts any issuer.'),
      tenantClaim: {
        type: 'string',
        minLength: 1,
        description:
          'Claim holding the tenant: a name, or a dotted path into nested claims; claim names may contain ' +
          'dots themselves ("kubernetes.io.namespace" reads {"kubernetes.io": {"namespace": …}}).',
        default: 'tenant',
      },
      algorithms: {
        type: 'array',
        items: { type: 'string', enum: [...JWT_ALGORITHMS] },
        uniqueItems: true,
        minItems: 1,
        description:
          'Signature algorithms accepted: asymmetric only (the proxy holds no secret that could mint tokens); ' +
          'none and HMAC are never accepted.',
        default: ['RS256', 'ES256', 'EdDSA'],
      },
      clockToleranceSeconds: integer('Seconds of clock skew allowed when checking exp, nbf and iat.', 30, 0, 3600),
    }),
    failureDelay: section(
      'Repeated authentication failures from one user or address wait before their answer, doubling from ' +
        'baseMS up to maxMS.',
      {
        baseMS: integer('Delay after the first failure, in milliseconds; 0 disables the delay.', 100, 0, 60_000),
        maxMS: integer('Longest delay, in milliseconds; at least baseMS.', 5_000, 0, 600_000),
      },
    ),
    reloadIntervalMS: integer(
      'Milliseconds between checks of certificate, key, CA, credentials and token key files for changes.',
      1_000,
      10,
      MAX_TIMER_MS,
    ),
    maxTenantLabels: integer(
      'Distinct tenants given their own metrics label; the rest count as "other".',
      100,
      0,
      100_000,
    ),
  }),
  isolation: section(
    'Tenant isolation: every command is checked against an allowlist and rewritten so it reaches only ' +
      "its tenant's data (see docs/isolation.md).",
    {
      mode: {
        type: 'string',
        enum: [...ISOLATION_MODES],
        description:
          '"enforce" refuses what the rules refuse. "audit-only" computes, logs and counts every decision but ' +
          'does NOT enforce it (tenants can reach each other\'s data): only for rolling out new rules. It must ' +
          'be spelled exactly "audit-only", logs a loud warning at start-up and sets a metric.',
        default: 'enforce',
      },
      tenantField: {
        type: 'string',
        minLength: 1,
        description:
          'Field holding the tenant in every document of shared collections; not "_id", without "$", "." or NUL.',
        default: 'tenantId',
      },
      tenantFieldInReplies: {
        type: 'string',
        enum: [...TENANT_FIELD_IN_REPLIES],
        description:
          'hide (the default): the tenant field is removed from every document a tenant reads from shared ' +
          'collections (find, getMore, aggregate incl. $lookup/$graphLookup/$facet results, findAndModify), so ' +
          'applications see exactly what they wrote; writes are stamped either way. show: documents carry it.',
        default: 'hide',
      },
      tenantValueType: {
        type: 'string',
        enum: [...TENANT_VALUE_TYPES],
        description:
          'BSON type of the tenant value in documents and filters: string, objectId (24 hex digits), uuid or ' +
          'int64. Non-string types are immune to collation (catalogue G8).',
        default: 'string',
      },
      defaultModel: {
        type: 'string',
        enum: [...ISOLATION_MODELS],
        description:
          'Isolation model of namespaces no rule in "namespaces" names: shared-collection (a tenant field in ' +
          "every document), database-per-tenant (the client's database mapped to the tenant's own) or " +
          "collection-prefix (the client's collection mapped to the tenant's own).",
        default: 'shared-collection',
      },
      databaseTemplate: {
        type: 'string',
        minLength: 1,
        description:
          'database-per-tenant: the physical database name, with {tenant} (the tenant, escaped to [a-z0-9-]) ' +
          'and {db} (the client database) each exactly once, separated by a character other than a letter, a ' +
          'digit or "-" (so the mapping is injective); at most 63 bytes once filled in.',
        default: '{tenant}_{db}',
      },
      collectionTemplate: {
        type: 'string',
        minLength: 1,
        description:
          'collection-prefix: the physical collection name, with {tenant} (escaped to [a-z0-9-]) and ' +
          '{collection} each exactly once, separated by a character other than a letter, a digit or "-".',
        default: '{tenant}.{collection}',
      },
      namespaces: {
        type: 'array',
        items: item(['match'], {
          match: {
            type: 'string',
            minLength: 1,
            description:
              '"db.collection" glob matched against the namespace the client names: "*" matches any run of ' +
              'characters (except "." in the database part), e.g. "app.*", "ref.countries", "*.audit_*".',
          },
          model: {
            type: 'string',
            enum: [...ISOLATION_MODELS],
            description: 'Isolation model of matching namespaces; defaultModel when unset.',
          },
          access: {
            type: 'string',
            enum: [...NAMESPACE_ACCESS],
            description:
              'scoped (the default: the tenant sees only its own data), shared-readonly (reference data every ' +
              'tenant may read unfiltered, never write) or denied.',
          },
        }),
        description:
          'Ordered rules; the first whose match fits the client namespace decides its model and access. ' +
          'admin, local, config and system.* collections are never reachable, whatever the rules say. Env: JSON list.',
        default: [],
      },
      maxTimeMS: integer(
        'Upper bound for maxTimeMS on every command that takes one, and its value when the client sends none.',
        60_000,
        1,
        MAX_TIMER_MS,
      ),
      sessionKey: optionalString(
        'Secret key (at least 32 characters) deriving upstream session ids per tenant, so retries and restarts ' +
          'map alike; null: a random key per process (sessions do not survive a restart). Never shown.',
        { writeOnly: true },
      ),
      tenancy: section(
        'A private database for each tenant in shared collections: indexes, drop, listings and stats are ' +
          'virtualised per tenant through an ownership catalogue kept in the upstream (see docs/isolation.md).',
        {
          virtualDdl: {
            type: 'boolean',
            description:
              'true: createIndexes, dropIndexes, drop, dropDatabase, listIndexes, listCollections, listDatabases ' +
              "and stats on shared collections act on and show the tenant's own indexes, documents and names. " +
              'false: they are refused as before (catalogue 23-25).',
            default: true,
          },
          catalogueDatabase: {
            type: 'string',
            minLength: 1,
            description:
              'The proxy-owned upstream database holding which tenant owns which collection and index. Never ' +
              'reachable by tenants; every proxy replica of a deployment must name the same one.',
            default: 'mongo_tenant_proxy',
          },
          indexesPerTenant: integer(
            'Indexes one tenant may own on one shared collection (declared shared indexes not counted); one more ' +
              'is refused with CannotCreateIndex (67).',
            16,
            0,
            1_000,
          ),
          indexReserve: integer(
            'Physical index slots of each shared collection no tenant may take (kept for declared indexes and the ' +
              'operator); a tenant index that would need one is refused with CannotCreateIndex (67).',
            8,
            0,
            1_000,
          ),
          maxIndexesPerCollection: integer(
            "The upstream's index limit per collection, the _id index included (MongoDB: 64).",
            64,
            1,
            10_000,
          ),
          deleteBatchSize: integer(
            'Documents deleted per batch by a virtual drop or dropDatabase.',
            1_000,
            1,
            100_000,
          ),
          statsMaxDocuments: integer(
            "collStats, dbStats and validate read at most this many of the tenant's documents to compute its " +
              'figures; more are refused (the cost bound).',
            100_000,
            1,
            100_000_000,
          ),
          sharedIndexes: {
            type: 'array',
            items: item(['namespace', 'name', 'key'], {
              namespace: {
                type: 'string',
                minLength: 3,
                description: 'The shared namespace "db.collection" (exact).',
              },
              name: { type: 'string', minLength: 1, description: 'Index name, shown to every tenant.' },
              key: {
                type: 'array',
                minItems: 1,
                items: { type: 'string', minLength: 1 },
                description:
                  'The key as tenants see it, in order: "field" (ascending), "-field" (descending) or "field:type" ' +
                  '(e.g. "location:2dsphere"); the proxy prefixes the tenant field, so a unique index is unique ' +
                  'within each tenant.',
              },
              unique: { type: 'boolean', description: 'Unique within each tenant.', default: false },
            }),
            description:
              'Operator-declared shared indexes, created at start and by the ensure-indexes subcommand. A tenant ' +
              'createIndexes with the same key and options succeeds as a no-op; every tenant lists them.',
            default: [],
          },
        },
      ),
    },
  ),
  upstream: section('The MongoDB deployment the proxy forwards to.', {
    uri: {
      type: 'string',
      format: Formats.mongodbUri,
      description:
        'Standard mongodb:// or mongodb+srv:// connection string: hosts, TLS options and the ' +
        "proxy's own credentials. The password is masked wherever the proxy shows the URI.",
      default: 'mongodb://127.0.0.1:27017/',
    },
    connectTimeoutMS: integer(
      'Milliseconds to wait for a new upstream connection (TCP, TLS, hello and authentication); ' +
        "0 waits forever. A connectTimeoutMS option in the URI takes precedence.",
      10_000,
      0,
      MAX_TIMER_MS,
    ),
    maxIdleConnections: integer(
      'Idle authenticated upstream connections kept for reuse; 0 closes each one after use.',
      16,
      0,
      100_000,
    ),
    idleTimeoutMS: integer(
      'Milliseconds an idle upstream connection is kept before it is closed.',
      60_000,
      1,
      MAX_TIMER_MS,
    ),
    maxPoolSize: integer(
      'Upstream connections per server at most (in use, idle and being opened). Client commands ' +
        'share them one request at a time, so many clients need few connections; when all are busy ' +
        'a command waits (tenants served in turn) up to waitQueueTimeoutMS.',
      100,
      1,
      100_000,
    ),
    minPoolSize: integer('Upstream connections per server kept open even when idle (opened in the background).', 0, 0, 100_000),
    maxLifetimeMS: integer(
      'Milliseconds after which an upstream connection is retired (closed when next returned or found idle); 0 never.',
      0,
      0,
      MAX_TIMER_MS,
    ),
    waitQueueTimeoutMS: integer(
      'Milliseconds a command waits for a free upstream connection when maxPoolSize are busy; it then gets a ' +
        'retryable ExceededTimeLimit error instead of waiting forever.',
      10_000,
      1,
      MAX_TIMER_MS,
    ),
    maxPoolConnectionsPerTenant: integer(
      "Upstream connections of one server's pool a single tenant may hold at once: in use, pinned to its open " +
        'transactions, streaming its exhaust cursors, or being opened for it. A tenant at this share waits (other ' +
        "tenants are served first) until one of its own connections comes back, up to waitQueueTimeoutMS. Commands " +
        'before authentication are not counted. 0 is no cap; -1 (the default) is half of maxPoolSize, rounded up.',
      -1,
      -1,
      100_000,
    ),
    serverSelectionTimeoutMS: integer(
      'Milliseconds a command waits for a suitable server (a primary during an election, a secondary matching ' +
        'its read preference) before it gets a retryable HostUnreachable error.',
      10_000,
      1,
      MAX_TIMER_MS,
    ),
    heartbeatFrequencyMS: integer(
      'Milliseconds between monitoring hellos to each replica-set member or mongos (only with several servers); ' +
        'a server that reports a step-down or fails is re-checked at once.',
      10_000,
      500,
      MAX_TIMER_MS,
    ),
    localThresholdMS: integer(
      'Latency window of server selection: among eligible servers, those within this many milliseconds of the ' +
        'fastest are candidates, and the one with the fewest commands in flight is used.',
      15,
      0,
      MAX_TIMER_MS,
    ),
    socketTimeoutMS: integer(
      'Milliseconds an upstream request may wait for a reply (each reply of an exhaust stream restarts it) before ' +
        'its connection is closed and the command fails with NetworkTimeout (retried only where safe); 0 waits ' +
        'without limit. Commands with maxTimeMS are always bounded by maxTimeMS + 5 s (an awaitData getMore by the ' +
        'longer of the two), and on monitored topologies ' +
        'a heartbeat timeout interrupts the connections in use.',
      0,
      0,
      MAX_TIMER_MS,
    ),
    retry: section('Retries by the proxy of commands that failed upstream, only where that is safe (see README).', {
      maxAttempts: integer('Attempts per command including the first; 1 never retries.', 3, 1, 10),
      initialBackoffMS: integer('Upper bound of the first (random) backoff delay; it doubles on every retry.', 50, 0, 60_000),
      maxBackoffMS: integer('No backoff delay is longer than this.', 1_000, 0, 600_000),
    }),
    circuitBreaker: section('A circuit breaker per upstream server: fail fast while a server is down.', {
      failureThreshold: integer('Consecutive connection failures that open the circuit.', 5, 1, 10_000),
      openMS: integer('Longest time the circuit stays open (commands fail at once) before letting a command probe.', 10_000, 1, MAX_TIMER_MS),
      halfOpenProbes: integer('Commands let through at once while half-open; one success closes the circuit.', 1, 1, 1_000),
      initialOpenMS: integer(
        'Milliseconds the circuit stays open the first time; doubles on each re-open (no success in between) up to openMS.',
        250,
        1,
        MAX_TIMER_MS,
      ),
      probeIntervalMS: integer(
        'While open, a hello on a fresh connection runs this often; its success closes the circuit. 0: no probes.',
        250,
        0,
        MAX_TIMER_MS,
      ),
    }),
  }),
  metrics: section('Prometheus metrics endpoint (HTTP: /metrics and /healthz only).', {
    listen: {
      type: ['string', 'null'],
      format: Formats.hostPortOrOff,
      description:
        'Address of the metrics HTTP listener as "host:port"; "off", an empty string or null disables it.',
      default: '127.0.0.1:9216',
      examples: ['0.0.0.0:9216', 'off'],
    },
    maxDatabaseLabels: integer(
      'Distinct database names given their own label on operation metrics (names are chosen by clients); ' +
        'the rest count as "other".',
      20,
      0,
      10_000,
    ),
    readinessFollowsUpstream: {
      type: 'boolean',
      description:
        '/readyz answers 503 while no server that takes writes is reachable: no primary known, or its circuit ' +
        'breaker open. false: ready whenever the proxy is up and not draining.',
      default: true,
    },
  }),
  log: section('Structured JSON logs on standard output.', {
    level: {
      type: 'string',
      enum: [...LOG_LEVELS],
      description: 'Lowest level written; "silent" writes nothing.',
      default: 'info',
    },
  }),
  audit: section(
    'The audit stream, separate from the log: every refusal and authentication outcome (and rewrites if asked) as a JSON ' +
      'line with names only (tenant, user, command, namespace, rule), never values or secrets.',
    {
      destination: {
        type: 'string',
        minLength: 1,
        description: '"stdout", "stderr", or the path of a file the events are appended to (created if missing).',
        default: 'stdout',
        examples: ['stderr', '/var/log/mongo-tenant-proxy/audit.jsonl'],
      },
      // At least 512: below it, the envelope and field names alone could exceed the bound.
      maxEventBytes: integer('Largest audit event in bytes (at least 512); longer fields are truncated to fit.', 8192, 512, 1_048_576),
      rewrites: {
        type: 'boolean',
        description:
          'Also audit every isolation rewrite (one event per rewritten command, i.e. nearly every command). ' +
          'Refusals and authentication outcomes are always audited; rewrites are counted in policy_decisions_total either way.',
        default: false,
      },
    },
  ),
  reload: section(
    'Hot reload of this configuration: on SIGHUP, and when the configuration file changes if watchConfigFile ' +
      'is on. An invalid new configuration is rejected and the running one stays; see README "Hot reload".',
    {
      watchConfigFile: {
        type: 'boolean',
        description:
          'Reload when the configuration file (--config or MTP_CONFIG) changes on disk; it is polled, so a ' +
          'Kubernetes ConfigMap update (a symlink swap) is seen too. SIGHUP reloads either way.',
        default: true,
      },
      intervalMS: integer('Milliseconds between checks of the configuration file for changes.', 2_000, 10, MAX_TIMER_MS),
    },
  ),
  compression: section('Wire-protocol compression (OP_COMPRESSED) negotiated with clients.', {
    compressors: {
      type: 'array',
      items: { type: 'string', enum: [...COMPRESSORS] },
      uniqueItems: true,
      description:
        'Compressors offered to clients in hello, most preferred first; an empty list disables compression.',
      default: [...COMPRESSORS],
    },
    zlibLevel: integer('zlib compression level: -1 is zlib\'s default, 0 none, 9 the smallest output.', 6, -1, 9),
  }),
  handshake: section('How the proxy describes itself in hello replies.', {
    presentAs: {
      type: 'string',
      enum: [...PRESENT_AS],
      description:
        '"auto" presents a standalone upstream as a standalone and a replica set or mongos as a mongos ' +
        '(so drivers use retryable writes and transactions); "standalone" or "sharded" force one.',
      default: 'auto',
    },
  }),
  limits: section('Resource limits applied to clients.', {
    maxMessageSizeBytes: integer(
      "Largest message accepted from a client; the upstream's own maxMessageSizeBytes applies when smaller.",
      48_000_000,
      1024,
      2_147_483_647,
    ),
    maxBsonDepth: integer('Deepest BSON nesting accepted from clients.', 200, 1, 1000),
    maxConnections: integer('Simultaneous client connections; more are refused.', 10_000, 1, 1_000_000),
    clientIdleTimeoutMS: integer(
      'Milliseconds a client connection may stay idle (no request in progress and no part of one received) ' +
        'before the proxy closes it; 0 never closes idle connections. A client that reads nothing of its replies ' +
        'for this long is closed too.',
      600_000,
      0,
      MAX_TIMER_MS,
    ),
    frameTimeoutMS: integer(
      'Milliseconds within which a whole message must arrive once its first byte has, so a client trickling ' +
        'bytes cannot hold a connection and its buffer forever; the connection is closed otherwise.',
      30_000,
      1,
      MAX_TIMER_MS,
    ),
    tlsHandshakeTimeoutMS: integer(
      'Milliseconds a client may take to complete the TLS handshake on a TLS listener.',
      10_000,
      1,
      MAX_TIMER_MS,
    ),
    drainTimeoutMS: integer(
      'On SIGTERM/SIGINT: milliseconds in-flight requests get to finish (idle connections close at once); ' +
        'connections still busy then are closed. 0 closes every connection at once.',
      30_000,
      0,
      MAX_TIMER_MS,
    ),
    maxConnectionsPerTenant: integer(
      'Client connections per tenant (across listeners); when a connection establishes a tenant that already has ' +
        'this many, the command doing so (or, for a tenant known at connect, the first command) gets an ' +
        'OperationFailed error and the connection is closed. 0 is unlimited; -1 (the default) is a quarter of ' +
        'maxConnections, rounded up.',
      -1,
      -1,
      1_000_000,
    ),
    maxInFlightPerTenant: integer(
      "Commands a tenant may have forwarded upstream at once, across all of its connections; more get an " +
        'immediate OperationFailed error labelled SystemOverloadedError and RetryableError. 0 is unlimited; -1 ' +
        '(the default) is upstream.maxPoolSize.',
      -1,
      -1,
      1_000_000,
    ),
    maxUnauthenticatedConnections: integer(
      'Client connections without an established tenant (not yet authenticated; driver monitoring connections ' +
        'of password and token methods stay so), across listeners; more are refused before a byte is read. ' +
        '0 is unlimited; -1 (the default) is a quarter of maxConnections, rounded up.',
      -1,
      -1,
      1_000_000,
    ),
    authTimeoutMS: integer(
      'Milliseconds a connection without an established tenant may go without a hello before it authenticates: ' +
        'it is closed then. Each hello restarts the clock (driver monitoring connections, which never ' +
        'authenticate, send one at least every heartbeat); other commands do not. 0 never closes them.',
      30_000,
      0,
      MAX_TIMER_MS,
    ),
    maxBufferedBytes: integer(
      'Bytes of client requests (received, decompressed, rewritten) and of replies (being read off the upstream ' +
        'from 64 KiB on, or not read by the client yet) that the proxy holds in memory, over all connections. When a charge takes the total over it, ' +
        "connections of tenants holding more than their fair share (the larger of this / the tenants holding " +
        'bytes, and this / 16) are closed, largest first; when no tenant is over its share, the connection that ' +
        'charged is closed. Connections without a tenant share one account.',
      268_435_456,
      65_536,
      Number.MAX_SAFE_INTEGER,
    ),
    bytesPerSecondPerTenant: integer(
      "Request bytes per second a tenant's connections may have the proxy read, decode and check (charged as " +
        'read, before any parsing, a bucket of the larger of this and maxMessageSizeBytes). Over it, its ' +
        'connections stop reading until paid for; a whole message read meanwhile waits up to 2 s, beyond that ' +
        'it is refused unparsed with OperationFailed labelled SystemOverloadedError and RetryableError. 0 is unlimited.',
      67_108_864,
      0,
      Number.MAX_SAFE_INTEGER,
    ),
    cpuMillisPerSecondPerTenant: integer(
      "Milliseconds per second of the proxy's own CPU a tenant's requests may use: validating, decoding, routing " +
        'and rewriting them and copying large rewrites, measured per request and per slice of a large message ' +
        '(connections without a tenant share one account). A tenant may run ahead by one second of this; beyond ' +
        'that its requests wait (up to 2 s) and the slices of its large messages wait behind those of tenants ' +
        'under their budget; a request that would wait longer is refused unparsed with OperationFailed labelled ' +
        'SystemOverloadedError and RetryableError (a hello only waits). The event loop is one core: 1000 is all ' +
        'of it. 0 is unlimited.',
      500,
      0,
      1_000_000,
    ),
    operationsPerSecondPerTenant: integer(
      'Commands per second a tenant may send (a token bucket refilled at this rate), counted before any parsing: ' +
        'forwarded, answered by the proxy and refused alike, except hello; more get an immediate ' +
        'OperationFailed error labelled SystemOverloadedError and RetryableError. 0 is unlimited.',
      0,
      0,
      1_000_000,
    ),
    operationsBurstPerTenant: integer(
      'Size of the operationsPerSecondPerTenant token bucket: how many commands a tenant idle long enough may ' +
        'send at once. 0 means the same as operationsPerSecondPerTenant.',
      0,
      0,
      1_000_000,
    ),
    maxOpenCursorsPerTenant: integer(
      'Open upstream cursors a tenant may have; a find, aggregate, list or bulkWrite beyond it gets an immediate ' +
        'OperationFailed error (rule limit.cursors). Cursors of a client connection that closes are killed. 0 is unlimited.',
      100,
      0,
      1_000_000,
    ),
  }),
};

export const configSchema: RootSchema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  title: 'mongo-tenant-proxy configuration',
  description:
    'Precedence: defaults < YAML file (--config or MTP_CONFIG) < MTP_* environment variables < command-line flags.',
  type: 'object',
  additionalProperties: false,
  properties: sections,
};

/** A node is a section when it is an object with declared properties; anything else is a field. */
export function isSection(node: SchemaNode): node is SchemaNode & { properties: Record<string, SchemaNode> } {
  return node.type === 'object' && node.properties !== undefined;
}

/** The properties of any object node, sections and list items alike (also `object`-or-null ones). */
export function objectProperties(node: SchemaNode): Record<string, SchemaNode> | undefined {
  const types = Array.isArray(node.type) ? node.type : [node.type];
  return types.includes('object') ? node.properties : undefined;
}

/**
 * The schema node at a path of property names and list indices, or undefined when there is
 * none. Below an index, the node's `default` is the value at that place in the list's default
 * (`['listeners', 0, 'listen']` → `127.0.0.1:27018`), when there is one.
 */
export function schemaAt(path: readonly (string | number)[], root: SchemaNode = configSchema): SchemaNode | undefined {
  let node: SchemaNode | undefined = root;
  let inherited: { value: unknown } | undefined;
  for (const segment of path) {
    if (node === undefined) return undefined;
    if (typeof segment === 'number') {
      if (node.items === undefined) return undefined;
      inherited = { value: Array.isArray(node.default) ? (node.default as unknown[])[segment] : undefined };
      node = node.items;
      continue;
    }
    const properties = objectProperties(node);
    if (properties === undefined || !Object.hasOwn(properties, segment)) return undefined;
    node = properties[segment];
    if (inherited !== undefined) {
      const parent = inherited.value;
      inherited = {
        value:
          typeof parent === 'object' && parent !== null && Object.hasOwn(parent, segment)
            ? (parent as Record<string, unknown>)[segment]
            : undefined,
      };
    }
  }
  if (node !== undefined && inherited !== undefined && inherited.value !== undefined) {
    return { ...node, default: inherited.value };
  }
  return node;
}

export interface SchemaField {
  path: readonly string[];
  node: SchemaNode;
}

/** Every field (leaf) of the schema, in declaration order. */
export function schemaFields(root: SchemaNode = configSchema): SchemaField[] {
  const fields: SchemaField[] = [];
  const walk = (node: SchemaNode, path: string[]): void => {
    if (isSection(node)) {
      for (const [name, child] of Object.entries(node.properties)) walk(child, [...path, name]);
    } else {
      fields.push({ path, node });
    }
  };
  walk(root, []);
  return fields;
}
