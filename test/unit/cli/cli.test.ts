import { EventEmitter } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { runCli, VERSION, type CliIo, type ServedProxy, type StartProxy } from '../../../src/cli/index.js';
import type { ProxyConfig } from '../../../src/config/index.js';
import type { ConfigSource } from '../../../src/reload.js';
import { makeTestPki } from '../../helpers/certs.js';
import { tempDir } from '../../helpers/config.js';

const files = tempDir('mtp-cli-');
afterAll(() => files.remove());

interface Run {
  stdout: string;
  stderr: string;
  /** Exit codes requested, in order. */
  exits: number[];
  io: CliIo;
}

function makeIo(overrides: Partial<CliIo> = {}): Run {
  const run: Run = {
    stdout: '',
    stderr: '',
    exits: [],
    io: {
      stdout: (text) => void (run.stdout += text),
      stderr: (text) => void (run.stderr += text),
      exit: (code) => void run.exits.push(code),
      env: {},
      ...overrides,
    },
  };
  return run;
}

async function cli(args: string[], overrides: Partial<CliIo> = {}): Promise<Run> {
  const run = makeIo(overrides);
  await runCli(args, run.io);
  return run;
}

/** Asserts a single `error: ...` line on stderr and exit code 2; returns the line. */
function usageFailure(run: Run): string {
  expect(run.exits).toEqual([2]);
  expect(run.stdout).toBe('');
  const lines = run.stderr.split('\n').filter((line) => line !== '');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^error: /);
  return lines[0] ?? '';
}

describe('help and version', () => {
  it.each([[['--help']], [['-h']], [['help']]])('%j shows the commands', async (args) => {
    const run = await cli(args);
    expect(run.exits).toEqual([0]);
    expect(run.stderr).toBe('');
    for (const command of ['serve', 'validate-config <file>', 'print-config']) expect(run.stdout).toContain(command);
    expect(run.stdout).toContain('Exit codes');
  });

  it('serve --help lists its options with their variables and defaults', async () => {
    const run = await cli(['serve', '--help']);
    expect(run.exits).toEqual([0]);
    for (const text of [
      '--config',
      '--listen',
      '--upstream',
      '--metrics-listen',
      '--log-level',
      'MTP_LISTEN',
      'MTP_UPSTREAM',
      'MTP_METRICS_LISTEN',
      'MTP_LOG_LEVEL',
      'MTP_CONFIG',
      '127.0.0.1:27018',
      'MTP_LIMITS__MAX_CONNECTIONS',
    ]) {
      expect(run.stdout).toContain(text);
    }
    // --listen sets only the first listener, as the README's table says.
    expect(run.stdout.replace(/\s+/g, ' ')).toContain("The first listener's address (listeners[0].listen;");
  });

  it('validate-config --help explains the argument', async () => {
    const run = await cli(['validate-config', '--help']);
    expect(run.exits).toEqual([0]);
    expect(run.stdout).toContain('validate-config <file>');
    expect(run.stdout).toContain('environment is not applied');
  });

  it('print-config --help lists the configuration options', async () => {
    const run = await cli(['print-config', '--help']);
    expect(run.exits).toEqual([0]);
    expect(run.stdout).toContain('--metrics-listen');
    // Every secret print-config masks, not only passwords.
    expect(run.stdout.replace(/\s+/g, ' ')).toContain(
      'secrets masked (URI passwords, keyPassphrase, isolation.sessionKey)',
    );
  });

  it('--version prints the package version', async () => {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
      version: string;
    };
    expect(VERSION).toBe(pkg.version);
    const run = await cli(['--version']);
    expect(run.stdout).toBe(`${pkg.version}\n`);
    expect(run.exits).toEqual([0]);
  });
});

describe('usage errors: one line on stderr, exit 2', () => {
  it('an unknown flag', async () => {
    const line = usageFailure(await cli(['serve', '--bogus']));
    expect(line).toBe('error: unknown option --bogus (see: mongo-tenant-proxy serve --help)');
  });

  it('an unknown flag with a value', async () => {
    expect(usageFailure(await cli(['print-config', '--lissten=127.0.0.1:1']))).toContain('--lissten');
  });

  it('an unknown command', async () => {
    expect(usageFailure(await cli(['start']))).toContain('unknown argument start');
  });

  it('no command', async () => {
    expect(usageFailure(await cli([]))).toContain('a command is required');
  });

  it('a flag without its value', async () => {
    expect(usageFailure(await cli(['serve', '--listen']))).toContain('--listen needs a value');
  });

  it('validate-config without a file', async () => {
    expect(usageFailure(await cli(['validate-config']))).toContain('validate-config needs the <file>');
  });

  it('a bad flag value names the field and the flag', async () => {
    const line = usageFailure(await cli(['print-config', '--listen', 'localhost']));
    expect(line).toBe(
      'error: listeners[0].listen: must be "host:port" (IPv6 as "[::1]:27018"): missing ":port" (got "localhost", from --listen)',
    );
  });

  it('a bad environment value names the field', async () => {
    const line = usageFailure(await cli(['serve'], { env: { MTP_LIMITS__MAX_CONNECTIONS: '0' } }));
    expect(line).toBe('error: limits.maxConnections: must be >= 1 (got 0, from MTP_LIMITS__MAX_CONNECTIONS)');
  });

  it('a bad log level', async () => {
    expect(usageFailure(await cli(['serve', '--log-level', 'loud']))).toMatch(/^error: log\.level: must be one of/);
  });

  it('several problems still make one line', async () => {
    const file = files.yaml('limits:\n  maxConnections: 0\n  maxBsonDepth: 0\n');
    expect(usageFailure(await cli(['serve', '--config', file]))).toMatch(/\(and 1 more problem\)/);
  });

  it('an empty --config', async () => {
    expect(usageFailure(await cli(['serve', '--config', '']))).toBe('error: --config: needs a file name');
  });

  it('never echoes the upstream password', async () => {
    const line = usageFailure(await cli(['serve', '--upstream', 'mongodb://admin:hunter2@/']));
    expect(line).toMatch(/^error: upstream\.uri: /);
    expect(line).not.toContain('hunter2');
  });
});

describe('validate-config', () => {
  it('prints ok for a valid file', async () => {
    const run = await cli(['validate-config', files.yaml('listeners:\n  - name: main\n    listen: 0.0.0.0:27018\n')]);
    expect(run.stdout).toBe('ok\n');
    expect(run.stderr).toBe('');
    expect(run.exits).toEqual([0]);
  });

  it('accepts config/example.yaml', async () => {
    const example = new URL('../../../config/example.yaml', import.meta.url).pathname;
    expect((await cli(['validate-config', example])).stdout).toBe('ok\n');
  });

  it('prints every problem, one per line, and exits 2', async () => {
    const run = await cli([
      'validate-config',
      files.yaml('limits:\n  maxConnections: 0\n  maxBsonDepth: 0\nextra: 1\n'),
    ]);
    expect(run.exits).toEqual([2]);
    expect(run.stdout).toBe('');
    const lines = run.stderr.trim().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines.every((line) => line.startsWith('error: '))).toBe(true);
    expect(run.stderr).toContain('limits.maxConnections: must be >= 1 (got 0');
    expect(run.stderr).toContain('extra: unknown setting');
  });

  it('reports a duplicate key', async () => {
    const run = await cli(['validate-config', files.yaml('log:\n  level: info\n  level: debug\n')]);
    expect(run.exits).toEqual([2]);
    expect(run.stderr).toMatch(/^error: log\.level: duplicate key/);
  });

  it('reports a missing file', async () => {
    const run = await cli(['validate-config', join(files.path, 'nope.yaml')]);
    expect(run.exits).toEqual([2]);
    expect(run.stderr).toContain('no such file');
  });

  it('ignores the environment', async () => {
    const run = await cli(['validate-config', files.yaml('{}\n')], { env: { MTP_LISTEN: 'bad' } });
    expect(run.stdout).toBe('ok\n');
  });

  // A reload rejects files that do not load, so validate-config (the runbook's check before a
  // reload) loads them too, naming the field.
  it.each([
    [
      'a missing credentials file',
      () => `identity:\n  scram:\n    credentialsFile: ${join(files.path, 'missing-credentials.yaml')}\n`,
      /^error: identity\.scram\.credentialsFile: .*cannot read credentials file/,
    ],
    [
      'an invalid credentials file',
      () => `identity:\n  scram:\n    credentialsFile: ${files.yaml('users:\n  - user: orders\n')}\n`,
      /^error: identity\.scram\.credentialsFile: .*users\[0\]\.tenant/,
    ],
    [
      'a missing JWT key file',
      () =>
        `identity:\n  jwt:\n    keyFile: ${join(files.path, 'missing-key.pem')}\n    audience: proxy\n    tenantClaim: tenant\n`,
      /^error: identity\.jwt\.keyFile: /,
    ],
    [
      'a missing TLS certificate',
      () =>
        `tls:\n      certFile: ${join(files.path, 'missing.crt')}\n      keyFile: ${join(files.path, 'missing.key')}\n`,
      /^error: listeners\[0\]\.tls\.certFile: /,
    ],
  ])('loads the files the configuration names: %s is an error naming the field', async (_name, section, expected) => {
    const text = section();
    const methods = text.startsWith('identity') ? (text.includes('jwt') ? '[plain-jwt]' : '[scram]') : '[]';
    const listener = `listeners:\n  - name: main\n    listen: 127.0.0.1:27018\n    methods: ${methods}\n`;
    const file = files.yaml(text.startsWith('tls') ? `${listener}    ${text}` : `${listener}${text}`);
    const run = await cli(['validate-config', file]);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(expected);
    expect(run.stderr.trim().split('\n')).toHaveLength(1);
    expect(run.exits).toEqual([2]);
    // A configuration written for a pod names files that exist only there.
    expect((await cli(['validate-config', '--no-check-files', file])).stdout).toBe('ok\n');
  });

  it('accepts TLS material that loads', async () => {
    const pki = await makeTestPki();
    try {
      const tls = pki.listenerTls('optional');
      const file = files.yaml(
        `listeners:\n  - name: main\n    listen: 127.0.0.1:27018\n    methods: [mtls]\n    tls: ${JSON.stringify(tls)}\n` +
          `identity:\n  certificateRules: ${JSON.stringify(pki.rules)}\n`,
      );
      const run = await cli(['validate-config', file]);
      expect(run.stderr).toBe('');
      expect(run.stdout).toBe('ok\n');
    } finally {
      await pki.remove();
    }
  });
});

describe('print-config', () => {
  it('prints the effective configuration as YAML with the password masked', async () => {
    const file = files.yaml(
      'upstream:\n  uri: mongodb://proxy:hunter2@db:27017/?authSource=admin\nlimits:\n  maxConnections: 5\n',
    );
    const run = await cli(['print-config', '--config', file, '--metrics-listen', 'off'], {
      env: { MTP_LOG_LEVEL: 'debug' },
    });
    expect(run.exits).toEqual([0]);
    expect(run.stderr).toBe('');
    expect(run.stdout).not.toContain('hunter2');
    const printed = parse(run.stdout) as Record<string, any>;
    expect(printed).toMatchObject({
      listeners: [{ name: 'default', listen: '127.0.0.1:27018' }],
      upstream: { uri: 'mongodb://proxy:****@db:27017/?authSource=admin', connectTimeoutMS: 10000 },
      metrics: { listen: 'off' },
      log: { level: 'debug' },
      limits: { maxConnections: 5 },
    });
  });

  it('prints something validate-config accepts', async () => {
    const printed = await cli(['print-config', '--listen', '[::1]:27019']);
    const check = await cli(['validate-config', files.yaml(printed.stdout)]);
    expect(check.stdout).toBe('ok\n');
  });

  it('reads MTP_CONFIG', async () => {
    const file = files.yaml('limits:\n  maxBsonDepth: 7\n');
    const run = await cli(['print-config'], { env: { MTP_CONFIG: file } });
    expect(run.stdout).toContain('maxBsonDepth: 7');
  });
});

describe('serve', () => {
  class FakeProcess extends EventEmitter {}

  function fakeProxy(closeImpl: () => Promise<void> = () => Promise.resolve()) {
    const calls: { config: ProxyConfig; closed: number; reloads: string[]; source: ConfigSource | undefined } = {
      config: undefined as unknown as ProxyConfig,
      closed: 0,
      reloads: [],
      source: undefined,
    };
    const startProxy: StartProxy = (config, { logger, source }) => {
      calls.config = config;
      calls.source = source;
      expect(typeof logger.info).toBe('function');
      const proxy: ServedProxy = {
        address: { host: config.listeners[0]!.listen.host, port: 40000 },
        metricsAddress: config.metrics.listen === null ? null : { host: '::1', port: 40001 },
        close: () => {
          calls.closed += 1;
          return closeImpl();
        },
        reload: ({ trigger }) => {
          calls.reloads.push(trigger);
          return Promise.resolve();
        },
      };
      return Promise.resolve(proxy);
    };
    return { calls, startProxy };
  }

  const logLines = (run: Run): Record<string, unknown>[] =>
    run.stdout
      .trim()
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line) as Record<string, unknown>);

  it('starts the proxy with the loaded configuration and logs the addresses', async () => {
    const signals = new FakeProcess();
    const { calls, startProxy } = fakeProxy();
    const run = await cli(['serve', '--listen', '127.0.0.1:0', '--log-level', 'debug'], {
      startProxy,
      signals,
      env: { MTP_UPSTREAM: 'mongodb://u:hunter2@db/' },
    });
    expect(run.exits).toEqual([]);
    expect(calls.config.listeners[0]!.listen).toEqual({ host: '127.0.0.1', port: 0 });
    expect(calls.config.upstream.uri).toBe('mongodb://u:hunter2@db/');
    expect(calls.config.log.level).toBe('debug');
    expect(logLines(run)).toContainEqual(
      expect.objectContaining({
        msg: 'listening',
        address: '127.0.0.1:40000',
        metricsAddress: '[::1]:40001',
        level: 'info',
      }),
    );
    expect(run.stdout).not.toContain('hunter2');
    signals.emit('SIGTERM', 'SIGTERM');
  });

  it('closes the proxy on SIGTERM and exits 0', async () => {
    const signals = new FakeProcess();
    const { calls, startProxy } = fakeProxy();
    const run = await cli(['serve', '--metrics-listen', 'off'], { startProxy, signals });
    expect(logLines(run)).toContainEqual(expect.objectContaining({ msg: 'listening', metricsAddress: null }));
    signals.emit('SIGTERM', 'SIGTERM');
    await new Promise((resolve) => setImmediate(resolve));
    expect(calls.closed).toBe(1);
    expect(run.exits).toEqual([0]);
    expect(signals.listenerCount('SIGTERM')).toBe(0);
    expect(signals.listenerCount('SIGINT')).toBe(0);
    expect(signals.listenerCount('SIGHUP')).toBe(0);
    expect(logLines(run).map((line) => line['msg'])).toEqual(['listening', 'shutting down', 'stopped']);
  });

  it('reloads on SIGHUP from the same file, environment and flags, and not once stopping', async () => {
    const signals = new FakeProcess();
    const { calls, startProxy } = fakeProxy(() => new Promise(() => {}));
    const file = files.yaml('limits:\n  maxConnections: 5\n');
    const run = await cli(['serve', '--config', file, '--log-level', 'warn'], {
      startProxy,
      signals,
      env: { MTP_LIMITS__MAX_BSON_DEPTH: '7' },
    });
    expect(calls.source?.file).toBe(file);
    writeFileSync(file, 'limits:\n  maxConnections: 6\nlog:\n  level: debug\n');
    const reloaded = calls.source!.load();
    expect(reloaded.limits).toMatchObject({ maxConnections: 6, maxBsonDepth: 7 });
    expect(reloaded.log.level).toBe('warn');

    signals.emit('SIGHUP', 'SIGHUP');
    expect(calls.reloads).toEqual(['signal']);
    expect(run.exits).toEqual([]);
    signals.emit('SIGTERM', 'SIGTERM');
    signals.emit('SIGHUP', 'SIGHUP');
    expect(calls.reloads).toEqual(['signal']);
  });

  it('watches MTP_CONFIG when no --config is given', async () => {
    const { calls, startProxy } = fakeProxy();
    const file = files.yaml('limits:\n  maxConnections: 5\n');
    await cli(['serve'], { startProxy, signals: new FakeProcess(), env: { MTP_CONFIG: file } });
    expect(calls.source?.file).toBe(file);
  });

  it('exits 1 at once on a second signal while closing', async () => {
    const signals = new FakeProcess();
    const { calls, startProxy } = fakeProxy(() => new Promise(() => {}));
    const run = await cli(['serve'], { startProxy, signals });
    signals.emit('SIGINT', 'SIGINT');
    expect(run.exits).toEqual([]);
    signals.emit('SIGINT', 'SIGINT');
    expect(run.exits).toEqual([1]);
    expect(calls.closed).toBe(1);
  });

  it('exits 1 when closing fails', async () => {
    const signals = new FakeProcess();
    const { startProxy } = fakeProxy(() => Promise.reject(new Error('stuck')));
    const run = await cli(['serve'], { startProxy, signals });
    signals.emit('SIGINT', 'SIGINT');
    await new Promise((resolve) => setImmediate(resolve));
    expect(run.exits).toEqual([1]);
  });

  it('exits 1 with one line when the proxy cannot start, without the password', async () => {
    const startProxy: StartProxy = () =>
      Promise.reject(new Error('cannot reach mongodb://u:hunter2@db/: ECONNREFUSED'));
    const run = await cli(['serve'], { startProxy, signals: new FakeProcess() });
    expect(run.exits).toEqual([1]);
    expect(run.stderr).toBe('error: failed to start: cannot reach mongodb://u:****@db/: ECONNREFUSED\n');
  });

  it('does not start on a configuration error', async () => {
    const { calls, startProxy } = fakeProxy();
    const run = await cli(['serve', '--metrics-listen', 'everywhere'], { startProxy });
    expect(usageFailure(run)).toMatch(/^error: metrics\.listen: /);
    expect(calls.closed).toBe(0);
    expect(calls.config).toBeUndefined();
  });
});
