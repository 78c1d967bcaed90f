// ESLint flat config. Two jobs: typescript-eslint's recommended rules (syntactic only, no type
// information, so `npm run lint` stays fast), and the layer table of docs/architecture.md as
// `no-restricted-imports` rules, so an import that goes up a layer fails the build.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// --- the layer table ------------------------------------------------------------------------
// What each part of src/ may import from the rest of src/. Paths are relative to src/ without
// `.js`; a trailing `/` means the whole folder. A folder may always import its own files. Rules
// are per folder (every file under it, at any depth), so new files are covered automatically.
const LAYERS = {
  wire: ['errors'],
  protocol: ['errors', 'wire/', 'config/types'],
  identity: ['errors', 'wire/', 'protocol/', 'config/types'],
  policy: ['errors', 'wire/', 'config/types'],
  rewrite: ['errors', 'wire/', 'policy/', 'config/types'],
  upstream: ['errors', 'secrets', 'version', 'wire/', 'protocol/', 'config/types'],
  observability: ['secrets', 'config/types'],
  tenancy: ['errors', 'wire/', 'protocol/', 'policy/', 'upstream/', 'config/types'],
  server: [
    'errors',
    'secrets',
    'version',
    'wire/',
    'protocol/',
    'identity/',
    'policy/',
    'rewrite/',
    'upstream/',
    'tenancy/',
    'observability/',
    'config/types',
  ],
  config: ['errors', 'secrets'],
  cli: [
    'errors',
    'version',
    'config/',
    'main',
    'reload',
    'observability/logger',
    'identity/credentials',
    'identity/services',
    'identity/tls-context',
  ],
};
/** Files directly in src/: `null` allows all of src/ except cli/ (composition level). */
const TOP_LEVEL = { errors: [], secrets: [], version: [], main: null, reload: null };
/** Deepest sub-folder depth inside a layer folder the rules are generated for. */
const MAX_DEPTH = 4;

const ARCHITECTURE = 'see the layer table in docs/architecture.md';
const escape = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const targetRegex = (target) => (target.endsWith('/') ? escape(target) : `${escape(target)}\\.js$`);

/** Patterns for a file whose specifiers reach src/ with `prefix` (`./` or `../` repeated). */
function srcPatterns(prefix, allowed, folder) {
  const up = escape(prefix);
  const leaving = prefix === './' ? '^\\.\\./' : `^${up}\\.\\./`;
  const patterns = [
    { regex: leaving, message: `src/ imports nothing outside src/ (no test/ helpers); ${ARCHITECTURE}.` },
  ];
  if (allowed === null) {
    patterns.push({ regex: `^${up}cli/`, message: `Nothing imports the CLI; ${ARCHITECTURE}.` });
    return patterns;
  }
  const ok = [...allowed, ...(folder === undefined ? [] : [`${folder}/`])].map(targetRegex);
  const where = folder === undefined ? 'this module' : `src/${folder}`;
  const lookahead = ok.length === 0 ? '' : `(?!(?:${ok.join('|')}))`;
  patterns.push({
    regex: `^${up}(?!\\.\\./)${lookahead}`,
    message: `${where} may import only ${allowed.length === 0 ? 'nothing' : allowed.join(', ')} from src/; ${ARCHITECTURE}.`,
  });
  return patterns;
}

// --- packages -------------------------------------------------------------------------------
const BSON = { regex: '^bson(?:/|$)', message: `Import BSON from src/wire/bson.ts, its one seam; ${ARCHITECTURE}.` };
const PROM_CLIENT = {
  regex: '^prom-client(?:/|$)',
  message: `prom-client belongs to src/observability (ProxyMetrics); ${ARCHITECTURE}.`,
};
const PINO = {
  regex: '^pino(?:/|$)',
  allowTypeImports: true,
  message: `Loggers are made in src/observability; elsewhere import pino's types only; ${ARCHITECTURE}.`,
};
const DEV_ONLY = {
  regex: '^(?:mongodb|mongodb6|mongosh|vitest|@vitest/.*|fast-check|testcontainers)(?:/|$)',
  message: 'A devDependency (tests, tools): the proxy must not need it at run time.',
};
/** wire is pure: node built-ins, bson and the compression / checksum libraries only. */
const WIRE_PACKAGES = {
  regex: '^(?!\\.|node:|bson$|snappy$|@mongodb-js/zstd$|@node-rs/crc32$)',
  message: `src/wire is pure: node built-ins, bson and codec libraries only; ${ARCHITECTURE}.`,
};

function packagePatterns(file) {
  const patterns = [DEV_ONLY];
  if (file !== 'wire/bson.ts') patterns.push(BSON);
  if (!file.startsWith('observability/')) patterns.push(PROM_CLIENT, PINO);
  if (file.startsWith('wire/')) patterns.push(WIRE_PACKAGES);
  if (file === 'errors.ts') patterns.push({ regex: '', message: `errors.ts imports nothing; ${ARCHITECTURE}.` });
  if (file === 'secrets.ts' || file === 'version.ts') {
    patterns.push({ regex: '^(?!node:)', message: `${file} imports nothing but node built-ins; ${ARCHITECTURE}.` });
  }
  return patterns;
}

function restrict(files, patterns) {
  const exact = patterns.map((pattern) => ({ ...pattern, caseSensitive: true }));
  return { files, rules: { 'no-restricted-imports': ['error', { patterns: exact }] } };
}

const UNLISTED = `is not in the layer table: add its row to eslint.config.js and docs/architecture.md`;
// First, anything under src/ the table does not name yet may import nothing of src/ outside its
// own folder; the entries after it replace this for the folders and files the table lists.
const layerConfigs = [
  restrict(['src/*.ts'], [{ regex: '^\\.\\.?/', message: `This file ${UNLISTED}.` }, ...packagePatterns('')]),
];
for (let depth = 0; depth <= MAX_DEPTH; depth++) {
  const files = `src/*/${'*/'.repeat(depth)}*.ts`;
  const message = `This folder ${UNLISTED}.`;
  layerConfigs.push(
    restrict([files], [{ regex: `^${escape('../'.repeat(depth + 1))}`, message }, ...packagePatterns('')]),
  );
}
for (const [folder, allowed] of Object.entries(LAYERS)) {
  for (let depth = 0; depth <= MAX_DEPTH; depth++) {
    const files = `src/${folder}/${'*/'.repeat(depth)}*.ts`;
    const prefix = '../'.repeat(depth + 1);
    layerConfigs.push(restrict([files], [...srcPatterns(prefix, allowed, folder), ...packagePatterns(`${folder}/`)]));
  }
}
for (const [name, allowed] of Object.entries(TOP_LEVEL)) {
  layerConfigs.push(restrict([`src/${name}.ts`], [...srcPatterns('./', allowed), ...packagePatterns(`${name}.ts`)]));
}
// The one bson importer (a later entry replaces the rule's options for this file).
layerConfigs.push(
  restrict(['src/wire/bson.ts'], [...srcPatterns('../', LAYERS.wire, 'wire'), ...packagePatterns('wire/bson.ts')]),
);

// --- everything together --------------------------------------------------------------------
const NODE_GLOBALS = Object.fromEntries(
  [
    'AbortController',
    'AbortSignal',
    'Buffer',
    'clearInterval',
    'clearTimeout',
    'console',
    'fetch',
    'performance',
    'process',
    'queueMicrotask',
    'setImmediate',
    'setInterval',
    'setTimeout',
    'structuredClone',
    'TextDecoder',
    'TextEncoder',
    'URL',
    'URLSearchParams',
  ].map((name) => [name, 'readonly']),
);

export default tseslint.config(
  { ignores: ['dist/', 'coverage/', 'bench/results/', 'helm/', 'config/', 'test/data/', '.tmp/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.js', '**/*.mjs'],
    languageOptions: { globals: NODE_GLOBALS },
  },
  {
    rules: {
      // `_`-prefixed names are deliberately unused (placeholders in signatures and destructuring).
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true },
      ],
    },
  },
  {
    rules: {
      // The proxy matches control characters on purpose: to refuse them in names and strip them from labels.
      'no-control-regex': 'off',
    },
  },
  {
    // Tests probe untyped YAML / JSON documents (Helm output, CLI JSON); `any` keeps those probes short.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  {
    files: ['src/**/*.ts'],
    rules: {
      // These escape no-restricted-imports; the one lazy import (cli → main.ts) is allowed below.
      'no-restricted-syntax': [
        'error',
        { selector: 'ImportExpression', message: 'Import statically so the layer rules see it.' },
        { selector: 'TSImportType', message: 'Use `import type` so the layer rules see it.' },
      ],
    },
  },
  { files: ['src/cli/**/*.ts'], rules: { 'no-restricted-syntax': 'off' } },
  // mongosh runs this file as a CommonJS script with its own globals (db, EJSON, print).
  {
    files: ['test/compat/clients/mongosh-client.js'],
    rules: { 'no-redeclare': 'off', '@typescript-eslint/no-require-imports': 'off' },
  },
  ...layerConfigs,
);
