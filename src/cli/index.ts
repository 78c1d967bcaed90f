/**
 * The `mongo-tenant-proxy` command line: `serve`, `validate-config`, `print-config`,
 * `hash-password`.
 *
 * Exit codes: 0 success, 1 runtime failure (e.g. the upstream cannot be reached), 2 bad usage
 * or bad configuration. Usage and configuration errors are one line on stderr naming the flag
 * or field: `error: limits.maxConnections: must be >= 1 (got 0, from MTP_LIMITS__MAX_CONNECTIONS)`.
 *
 * `runCli` takes its input and output as arguments so tests can drive it in-process.
 */

import { PROXY_VERSION } from '../version.js';
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import {
  CONFIG_FILE_ENV,
  ConfigValidationError,
  FLAG_FIELDS,
  formatConfigYaml,
  formatHostPort,
  loadConfig,
  maskUrisInText,
  preferredEnvNameOf,
  schemaAt,
  schemaFields,
  envNameOf,
  type ConfigFlags,
  type HostPort,
  type ProxyConfig,
} from '../config/index.js';
import { ConfigError, CredentialsFileError } from '../errors.js';
import { DEFAULT_ITERATIONS, SCRAM_MECHANISMS, formatCredentialEntry, hashPassword } from '../identity/credentials.js';
import type { DestinationStream } from 'pino';
import { createIdentityServices } from '../identity/services.js';
import { createListenerTls } from '../identity/tls-context.js';
import { createLogger, type Logger } from '../observability/logger.js';
import { configFileSource, type ConfigSource } from '../reload.js';

const PROGRAM = 'mongo-tenant-proxy';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** What `serve` needs from a started proxy (`RunningProxy` from `../main.js` provides it). */
export interface ServedProxy {
  address: HostPort;
  metricsAddress: HostPort | null;
  close(): Promise<void>;
  /** Hot reload from the configuration source (logs and counts its own outcome). */
  reload(options: { trigger: 'signal' }): Promise<unknown>;
}

/** `source` re-reads the file, environment and flags `serve` started with (hot reload). */
export type StartProxy = (
  config: ProxyConfig,
  options: {
    logger: Logger;
    source: ConfigSource;
    auditStream: (destination: string) => DestinationStream | undefined;
  },
) => Promise<ServedProxy>;

type ServeSignal = 'SIGINT' | 'SIGTERM' | 'SIGHUP';

export interface SignalSource {
  on(signal: ServeSignal, listener: (signal: NodeJS.Signals) => void): unknown;
  off(signal: ServeSignal, listener: (signal: NodeJS.Signals) => void): unknown;
}

export interface CliIo {
  /** Normal output: help, `ok`, print-config's YAML, and `serve`'s JSON log lines. */
  stdout(text: string): void;
  /** One-line error messages. */
  stderr(text: string): void;
  exit(code: number): void;
  /** Environment for `MTP_*` variables; `process.env` by default. */
  env?: NodeJS.ProcessEnv;
  /** Where `serve` listens for SIGINT/SIGTERM (stop) and SIGHUP (reload); `process` by default. */
  signals?: SignalSource;
  /** Replaces `startProxy` from `../main.js` (tests). */
  startProxy?: StartProxy;
  /** Reads the password for `hash-password`; standard input by default (echo off on a terminal). */
  stdin?: () => Promise<string>;
}

class UsageError extends Error {}

export const VERSION = PROXY_VERSION;

function defaultIo(): CliIo {
  return {
    stdout: (text) => void process.stdout.write(text),
    stderr: (text) => void process.stderr.write(text),
    // Exit once both streams have flushed what was written to them (pipes may be asynchronous).
    exit: (code) => {
      process.exitCode = code;
      process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
    },
    env: process.env,
    signals: process,
  };
}

/**
 * Loads what a configuration names (listener TLS material, the credentials file, JWT keys), as
 * `serve` does at start and a reload does before switching, then releases it: a file that would
 * fail them fails `validate-config` too. Throws a ConfigError naming the field.
 */
function loadReferencedFiles(config: ProxyConfig): void {
  const identity = createIdentityServices(config, {
    logger: createLogger({ level: 'silent' }),
    observer: { authentication: () => undefined },
    openRelay: () => Promise.reject(new Error('validate-config opens no upstream connection')),
  });
  identity.close();
  config.listeners.forEach((listener, index) => {
    if (listener.tls === null) return;
    createListenerTls(listener.tls, {
      reloadIntervalMS: config.identity.reloadIntervalMS,
      path: `listeners[${index}].tls`,
    }).close();
  });
}

/** One line: no newlines, passwords in URIs masked. */
function oneLine(text: string): string {
  return maskUrisInText(text)
    .replace(/\s*\n\s*/g, ' ')
    .trim();
}

/** What a flag sets when the schema's description alone would not say (it describes every listener). */
const FLAG_LEADS: Partial<Record<keyof ConfigFlags, string>> = {
  listen:
    'The first listener\'s address (listeners[0].listen; creates the listener "default" when none is configured). ',
};

/** The help text of a configuration flag, taken from the schema. */
function flagHelp(name: keyof ConfigFlags): string {
  const { path } = FLAG_FIELDS[name];
  const node = schemaAt(path);
  const defaultValue = node?.default;
  const shownDefault = defaultValue === null ? 'off' : String(defaultValue);
  return `${FLAG_LEADS[name] ?? ''}${node?.description ?? ''} [env: ${preferredEnvNameOf(path)}] [default: ${shownDefault}]`;
}

function configOptions<T>(cli: Argv<T>) {
  return cli
    .option('config', {
      type: 'string',
      requiresArg: true,
      describe: `YAML configuration file [env: ${CONFIG_FILE_ENV}]`,
    })
    .option('listen', { type: 'string', requiresArg: true, describe: flagHelp('listen') })
    .option('upstream', { type: 'string', requiresArg: true, describe: flagHelp('upstream') })
    .option('metrics-listen', { type: 'string', requiresArg: true, describe: flagHelp('metricsListen') })
    .option('log-level', { type: 'string', requiresArg: true, describe: flagHelp('logLevel') });
}

interface ConfigArgs {
  config?: string | undefined;
  listen?: string | undefined;
  upstream?: string | undefined;
  'metrics-listen'?: string | undefined;
  'log-level'?: string | undefined;
}

function flagsFrom(args: ConfigArgs): ConfigFlags {
  return {
    listen: args.listen,
    upstream: args.upstream,
    metricsListen: args['metrics-listen'],
    logLevel: args['log-level'],
  };
}

function configFile(args: ConfigArgs): string | undefined {
  if (args.config === '') throw new ConfigError('--config', 'needs a file name');
  return args.config;
}

function environmentHelp(): string {
  const lines = schemaFields().map(({ path }) => {
    const generic = envNameOf(path);
    const preferred = preferredEnvNameOf(path);
    const names = preferred === generic ? generic : `${preferred} (or ${generic})`;
    return `  ${names.padEnd(44)} ${path.join('.')}`;
  });
  return [
    'Environment variables (values are coerced to the field type; lists of strings are',
    'comma-separated; lists of objects, such as MTP_LISTENERS, are one JSON value):',
    `  ${CONFIG_FILE_ENV.padEnd(44)} configuration file, like --config`,
    `  ${'MTP_LISTEN'.padEnd(44)} listeners[0].listen, like --listen`,
    ...lines,
  ].join('\n');
}

const PRECEDENCE =
  'Settings apply in this order, later ones winning: defaults, the YAML file (--config or ' +
  `${CONFIG_FILE_ENV}), MTP_* environment variables, command-line flags.`;

/** Rewrites yargs' messages into one line naming the flag, with a pointer to the help. */
function usageMessage(message: string, args: readonly string[], command: string | undefined): string {
  const help = `(see: ${PROGRAM}${command === undefined ? '' : ` ${command}`} --help)`;
  const unknown = /^Unknown arguments?: (.*)$/s.exec(message);
  if (unknown !== null) {
    const names = (unknown[1] ?? '').split(', ').map((name) => {
      const dashed = name.length === 1 ? `-${name}` : `--${name}`;
      return args.some((arg) => arg === dashed || arg.startsWith(`${dashed}=`)) ? dashed : name;
    });
    const options = names.every((name) => name.startsWith('-'));
    return `unknown ${options ? 'option' : 'argument'}${names.length > 1 ? 's' : ''} ${names.join(', ')} ${help}`;
  }
  const missingValue = /^Not enough arguments following: (.*)$/s.exec(message);
  if (missingValue !== null) return `--${missingValue[1] ?? ''} needs a value ${help}`;
  if (/^Not enough non-option arguments/.test(message) && command === 'validate-config') {
    return `validate-config needs the <file> to check ${help}`;
  }
  return `${message.charAt(0).toLowerCase()}${message.slice(1)} ${help}`;
}

/** Runs one command line (without the `node` and script arguments). */
export async function runCli(argv: readonly string[], io: CliIo = defaultIo()): Promise<void> {
  const env = io.env ?? process.env;
  const args = [...argv];
  const commandNames = ['serve', 'validate-config', 'print-config', 'hash-password', 'ensure-indexes'];
  const command = args.find((arg) => commandNames.includes(arg));
  const fail = (code: number, message: string): void => {
    io.stderr(`error: ${oneLine(message)}\n`);
    io.exit(code);
  };
  const failConfig = (error: unknown): boolean => {
    if (!(error instanceof ConfigError)) return false;
    fail(EXIT_USAGE, error.message);
    return true;
  };

  const cli = yargs(args)
    .scriptName(PROGRAM)
    .locale('en')
    .usage(`$0 <command> [options]\n\nA MongoDB wire-protocol proxy that makes tenant isolation impossible to forget.`)
    .exitProcess(false)
    .strict()
    .parserConfiguration({ 'duplicate-arguments-array': false })
    .version(VERSION)
    .help()
    .alias('help', 'h')
    .command(
      'serve',
      'Run the proxy until SIGINT or SIGTERM; SIGHUP reloads the configuration',
      (sub) =>
        configOptions(sub)
          .usage(
            `$0 serve [options]\n\nRun the proxy until SIGINT or SIGTERM. SIGHUP (and, with reload.watchConfigFile, a ` +
              'change to the configuration file) reloads the configuration from the same file, environment and flags ' +
              'without dropping connections; an invalid one is logged and the running one stays.',
          )
          .epilog(`${PRECEDENCE}\n\n${environmentHelp()}`),
      async (parsed) => {
        let config: ProxyConfig;
        let source: ConfigSource;
        try {
          source = configFileSource({ file: configFile(parsed), env, flags: flagsFrom(parsed) });
          config = source.load();
        } catch (error) {
          if (failConfig(error)) return;
          throw error;
        }
        await serve(config, source, io);
      },
    )
    .command(
      'validate-config <file>',
      'Check a configuration file; prints "ok" or every problem found',
      (sub) =>
        sub
          .positional('file', { type: 'string', describe: 'YAML configuration file', demandOption: true })
          .option('check-files', {
            type: 'boolean',
            default: true,
            describe:
              'Load the files the configuration names; --no-check-files checks the configuration alone (e.g. one written for a pod)',
          })
          .usage(
            `$0 validate-config <file>\n\nCheck a configuration file on its own (the environment is not applied), and load ` +
              'the files it names (listener TLS material, the SCRAM credentials file, JWT keys) as serve and a reload do.',
          )
          .epilog('Exit code 0 when the file is valid, 2 otherwise.'),
      (parsed) => {
        try {
          const config = loadConfig({ file: parsed.file, env: {} });
          if (parsed.checkFiles) loadReferencedFiles(config);
        } catch (error) {
          if (error instanceof ConfigValidationError) {
            for (const issue of error.issues) io.stderr(`error: ${oneLine(`${issue.path}: ${issue.message}`)}\n`);
            io.exit(EXIT_USAGE);
            return;
          }
          if (failConfig(error)) return;
          throw error;
        }
        io.stdout('ok\n');
        io.exit(EXIT_OK);
      },
    )
    .command(
      'print-config',
      'Print the effective configuration as YAML, secrets masked',
      (sub) =>
        configOptions(sub)
          .usage(
            `$0 print-config [options]\n\nPrint the effective configuration as YAML, secrets masked (URI passwords, keyPassphrase, isolation.sessionKey).`,
          )
          .epilog(`${PRECEDENCE} Takes the same options as serve.`),
      (parsed) => {
        let config: ProxyConfig;
        try {
          config = loadConfig({ file: configFile(parsed), env, flags: flagsFrom(parsed) });
        } catch (error) {
          if (failConfig(error)) return;
          throw error;
        }
        io.stdout(`# ${PROGRAM} ${VERSION} effective configuration (secrets masked)\n${formatConfigYaml(config)}`);
        io.exit(EXIT_OK);
      },
    )
    .command(
      'ensure-indexes',
      'Create the shared indexes declared in isolation.tenancy.sharedIndexes upstream, then exit',
      (sub) =>
        configOptions(sub)
          .usage(
            `$0 ensure-indexes [options]\n\nCreate the operator-declared shared indexes (isolation.tenancy.sharedIndexes, ` +
              'always prefixed with the tenant field) in the upstream, as serve does when it starts. Existing ones are left ' +
              'as they are.',
          )
          .epilog(`${PRECEDENCE} Takes the same options as serve. Exit code 0 when every index exists, 1 otherwise.`),
      async (parsed) => {
        let config: ProxyConfig;
        try {
          config = loadConfig({ file: configFile(parsed), env, flags: flagsFrom(parsed) });
        } catch (error) {
          if (failConfig(error)) return;
          throw error;
        }
        const { ensureIndexes } = await import('../main.js');
        const results = await ensureIndexes(config, { logger: createLogger({ level: 'silent' }) });
        for (const result of results) {
          if (result.error === undefined) io.stdout(`ok ${result.namespace} ${result.name}\n`);
          else io.stderr(`error: ${result.namespace} ${result.name}: ${oneLine(result.error)}\n`);
        }
        io.exit(results.every((result) => result.error === undefined) ? EXIT_OK : 1);
      },
    )
    .command(
      'hash-password',
      'Print a credentials-file entry for a SCRAM user; the password is read from stdin',
      (sub) =>
        sub
          // Repeated --mechanism flags accumulate here (the other commands keep the last value).
          .parserConfiguration({ 'duplicate-arguments-array': true })
          .option('user', {
            type: 'string',
            requiresArg: true,
            demandOption: true,
            describe: 'User name, as clients give it',
          })
          .option('tenant', {
            type: 'string',
            requiresArg: true,
            demandOption: true,
            describe: 'Tenant the user belongs to',
          })
          .option('db', {
            type: 'string',
            requiresArg: true,
            default: 'admin',
            describe: "Authentication database (the clients' authSource)",
          })
          .option('mechanism', {
            type: 'string',
            array: true,
            requiresArg: true,
            choices: [...SCRAM_MECHANISMS],
            default: ['SCRAM-SHA-256'],
            describe: 'Mechanism to store keys for; repeat for both',
          })
          .option('iterations', {
            type: 'number',
            requiresArg: true,
            describe: `PBKDF2 iteration count [default: ${DEFAULT_ITERATIONS['SCRAM-SHA-256']} for SCRAM-SHA-256, ${DEFAULT_ITERATIONS['SCRAM-SHA-1']} for SCRAM-SHA-1]`,
          })
          .usage(
            `$0 hash-password --user <name> --tenant <tenant> [options] < password-file\n\n` +
              'Reads one line (the password) from standard input and prints the entry to add under ' +
              '"users:" in the credentials file (identity.scram.credentialsFile). The file stores salts, ' +
              'iteration counts and derived keys, never the password.',
          )
          .example(`printf '%s\\n' "$PASSWORD" | $0 hash-password --user orders --tenant acme >> credentials.yaml`, '')
          .epilog('The password is never a flag: command lines show up in process lists and shell history.'),
      async (parsed) => {
        await hashPasswordCommand(parsed, io, fail);
      },
    )
    .demandCommand(1, 'a command is required: serve, validate-config, print-config, ensure-indexes or hash-password')
    .epilog(`${PRECEDENCE}\n\nExit codes: 0 success, 1 runtime failure, 2 bad usage or configuration.`)
    .fail((message: string | null, error: Error | undefined) => {
      // yargs reports its own validation failures as YError (or with no error at all).
      if (error !== undefined && error.name !== 'YError') throw error;
      throw new UsageError(message ?? error?.message ?? 'invalid usage');
    });
  const columns = (cli.terminalWidth() as number | null | undefined) ?? 0;
  cli.wrap(columns > 0 ? Math.min(100, columns) : 100);

  if (command === 'hash-password' && args.some((arg) => /^--?(password|pwd|p)(=|$)/.test(arg))) {
    fail(
      EXIT_USAGE,
      `hash-password reads the password from standard input, never from a flag (see: ${PROGRAM} hash-password --help)`,
    );
    return;
  }

  try {
    let output = '';
    await cli.parseAsync(args, {}, (_error, _parsed, text) => {
      output = text;
    });
    if (output !== '') {
      io.stdout(output.endsWith('\n') ? output : `${output}\n`);
      io.exit(EXIT_OK);
    }
  } catch (error) {
    if (error instanceof UsageError) fail(EXIT_USAGE, usageMessage(error.message, args, command));
    else if (!failConfig(error)) fail(EXIT_FAILURE, error instanceof Error ? error.message : String(error));
  }
}

interface HashPasswordArgs {
  user: string | string[];
  tenant: string | string[];
  db: string | string[];
  mechanism: string[];
  iterations?: number | number[] | undefined;
}

/** `hash-password`: one line from stdin in, one YAML credentials entry out. */
async function hashPasswordCommand(
  args: HashPasswordArgs,
  io: CliIo,
  fail: (code: number, message: string) => void,
): Promise<void> {
  for (const name of ['user', 'tenant', 'db', 'iterations'] as const) {
    if (Array.isArray(args[name])) {
      fail(EXIT_USAGE, `--${name} may be given only once (see: ${PROGRAM} hash-password --help)`);
      return;
    }
  }
  const iterations = args.iterations as number | undefined;
  if (iterations !== undefined && !Number.isInteger(iterations)) {
    fail(EXIT_USAGE, `--iterations must be a whole number (see: ${PROGRAM} hash-password --help)`);
    return;
  }
  const input = await (io.stdin ?? readPasswordFromStdin)();
  // One line: a final newline (as echo and printf add) is not part of the password.
  const password = input.replace(/\r?\n$/, '');
  if (/[\r\n]/.test(password)) {
    fail(EXIT_USAGE, 'standard input must hold exactly one line: the password');
    return;
  }
  if (password === '') {
    fail(EXIT_USAGE, 'no password on standard input (pipe it in, or type it when asked)');
    return;
  }
  let text: string;
  try {
    const entry = hashPassword({
      user: args.user as string,
      tenant: args.tenant as string,
      db: args.db as string,
      password,
      mechanisms: args.mechanism as (typeof SCRAM_MECHANISMS)[number][],
      ...(iterations === undefined ? {} : { iterations }),
    });
    text = formatCredentialEntry(entry);
  } catch (error) {
    if (error instanceof CredentialsFileError) {
      fail(EXIT_USAGE, error.message);
      return;
    }
    throw error;
  }
  io.stdout(text);
  io.exit(EXIT_OK);
}

/**
 * The password from standard input: everything up to the end of a pipe, or, on a terminal, one
 * line typed with echo off (prompt on stderr).
 */
function readPasswordFromStdin(): Promise<string> {
  const input = process.stdin;
  if (input.isTTY === true && typeof input.setRawMode === 'function') {
    return new Promise((resolve, reject) => {
      process.stderr.write('Password: ');
      let typed = '';
      input.setRawMode(true);
      input.setEncoding('utf8');
      const finish = (error?: Error): void => {
        input.off('data', onData);
        input.setRawMode(false);
        input.pause();
        process.stderr.write('\n');
        if (error === undefined) resolve(typed);
        else reject(error);
      };
      const onData = (chunk: string): void => {
        for (const char of chunk) {
          if (char === '\r' || char === '\n' || char === '\u0004') return finish();
          if (char === '\u0003') return finish(new Error('interrupted'));
          if (char === '\u007f' || char === '\b') typed = typed.slice(0, -1);
          else typed += char;
        }
      };
      input.on('data', onData);
      input.resume();
    });
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    input.on('data', (chunk: Buffer | string) => chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk)));
    input.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    input.once('error', reject);
  });
}

async function loadStartProxy(): Promise<StartProxy> {
  const main = await import('../main.js');
  return main.startProxy;
}

async function serve(config: ProxyConfig, source: ConfigSource, io: CliIo): Promise<void> {
  const logger = createLogger({ level: config.log.level, destination: { write: (line: string) => io.stdout(line) } });
  let running: ServedProxy;
  try {
    const startProxy = io.startProxy ?? (await loadStartProxy());
    // The audit stream's standard destinations go through the same writers as the log.
    const auditStream = (destination: string): DestinationStream | undefined =>
      destination === 'stdout'
        ? { write: (line: string) => io.stdout(line) }
        : destination === 'stderr'
          ? { write: (line: string) => io.stderr(line) }
          : undefined;
    running = await startProxy(config, { logger, source, auditStream });
  } catch (error) {
    const message = oneLine(error instanceof Error ? error.message : String(error));
    logger.fatal({ err: error }, 'failed to start');
    io.stderr(`error: failed to start: ${message}\n`);
    io.exit(EXIT_FAILURE);
    return;
  }

  logger.info(
    {
      address: formatHostPort(running.address),
      metricsAddress: running.metricsAddress === null ? null : formatHostPort(running.metricsAddress),
    },
    'listening',
  );

  const signals = io.signals ?? process;
  let stopping = false;
  // The reload logs its outcome and counts it in the metrics; a failure leaves the proxy running.
  const onReload = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    logger.info({ signal }, 'reloading the configuration');
    void running.reload({ trigger: 'signal' });
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      logger.warn({ signal }, 'second signal; exiting immediately');
      io.exit(EXIT_FAILURE);
      return;
    }
    stopping = true;
    logger.info({ signal }, 'shutting down');
    running.close().then(
      () => {
        signals.off('SIGINT', onSignal);
        signals.off('SIGTERM', onSignal);
        signals.off('SIGHUP', onReload);
        logger.info('stopped');
        io.exit(EXIT_OK);
      },
      (error: unknown) => {
        logger.error({ err: error }, 'error while shutting down');
        io.exit(EXIT_FAILURE);
      },
    );
  };
  signals.on('SIGINT', onSignal);
  signals.on('SIGTERM', onSignal);
  signals.on('SIGHUP', onReload);
}

/** Entry point of `bin/mongo-tenant-proxy`. */
export async function main(): Promise<void> {
  await runCli(hideBin(process.argv));
}
