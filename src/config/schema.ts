/**
 * The configuration's JSON Schema: the single source of truth for the shape, the types, the
 * defaults and the descriptions of every setting. `config/schema.json` is this object written
 * out (a unit test keeps the two equal), so editors can validate YAML files against it.
 *
 * Conventions the loader relies on (see `load.ts`):
 * - every object is a *section*: `additionalProperties: false` and `default: {}`, so unknown
 *   keys are errors and the defaults of its fields apply when the section is left out;
 * - everything else is a *field* (a leaf), addressable as `MTP_<SECTION>__<FIELD>`;
 * - `format: "host-port"` fields are written `host:port` and become `{ host, port }`;
 *   `format: "host-port-or-off"` may also be `off`, empty or `null`, which becomes `null`;
 * - `format: "mongodb-uri"` fields have their password masked wherever they are shown;
 *   `writeOnly: true` fields are secrets and are never shown at all.
 *
 * To add a section (TLS listeners, identity, policy…): add it to `sections` below, extend
 * `ProxyConfig` in `types.ts`, document it in `config/example.yaml` and regenerate
 * `config/schema.json` (`UPDATE_CONFIG_SCHEMA=1 npx vitest run test/unit/config/schema.test.ts`).
 */

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

function section(description: string, properties: Record<string, SchemaNode>): SchemaNode {
  return { type: 'object', description, additionalProperties: false, default: {}, properties };
}

function integer(description: string, defaultValue: number, minimum: number, maximum: number): SchemaNode {
  return { type: 'integer', description, default: defaultValue, minimum, maximum };
}

const sections: Record<string, SchemaNode> = {
  listen: {
    type: 'string',
    format: Formats.hostPort,
    description:
      'Address of the client-facing listener (MongoDB wire protocol only, never HTTP), as "host:port"; ' +
      'IPv6 addresses in brackets, e.g. "[::1]:27018". Port 0 picks a free port.',
    default: '127.0.0.1:27018',
    examples: ['0.0.0.0:27018', '[::1]:27018'],
  },
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
  }),
  log: section('Structured JSON logs on standard output.', {
    level: {
      type: 'string',
      enum: [...LOG_LEVELS],
      description: 'Lowest level written; "silent" writes nothing.',
      default: 'info',
    },
  }),
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

/** The schema node at a path of property names, or undefined when there is none. */
export function schemaAt(path: readonly string[], root: SchemaNode = configSchema): SchemaNode | undefined {
  let node: SchemaNode | undefined = root;
  for (const segment of path) {
    if (node === undefined || !isSection(node) || !Object.hasOwn(node.properties, segment)) return undefined;
    node = node.properties[segment];
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
