import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { parse } from 'yaml';
import { runCli, type CliIo } from '../../../src/cli/index.js';
import { ConfigError, CredentialsFileError } from '../../../src/errors.js';
import {
  createCredentialStore,
  credentialLookup,
  formatCredentialEntry,
  formatCredentialsFile,
  hashPassword,
  loadCredentialsFile,
  parseCredentials,
  type CredentialEntry,
} from '../../../src/identity/credentials.js';
import { scramServiceFor } from '../../../src/identity/scram-server.js';
import type { AuthAttemptContext, SaslStepResult } from '../../../src/identity/types.js';
import { deriveKeys, h, hi, hmac, mongoPasswordDigest } from '../../../src/protocol/scram-crypto.js';
import { ScramClient } from '../../../src/upstream/scram.js';
import { tempDir } from '../../helpers/config.js';

const files = tempDir('mtp-credentials-');
afterAll(() => files.remove());
function replaceFile(file: string, text: string): void {
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
}

const b64 = (s: string): Buffer => Buffer.from(s, 'base64');
const KEY32 = Buffer.alloc(32, 7).toString('base64');
const KEY20 = Buffer.alloc(20, 7).toString('base64');
const SALT = Buffer.alloc(28, 1).toString('base64');

/** A valid one-user file, with `patch` lines appended to the SCRAM-SHA-256 block or the entry. */
function validEntryYaml(options: { user?: string; db?: string | null; extra?: string } = {}): string {
  return [
    `  - user: ${options.user ?? 'alice'}`,
    ...(options.db === null ? [] : [`    db: ${options.db ?? 'admin'}`]),
    '    tenant: acme',
    '    mechanisms:',
    '      SCRAM-SHA-256:',
    '        iterationCount: 15000',
    `        salt: ${SALT}`,
    `        storedKey: ${KEY32}`,
    `        serverKey: ${KEY32}`,
    ...(options.extra === undefined ? [] : [options.extra]),
  ].join('\n');
}

const context: AuthAttemptContext = {
  listener: { name: 'test', listen: { host: '127.0.0.1', port: 0 }, tls: null, methods: ['scram'], staticTenant: null },
  remoteAddress: '127.0.0.1',
  logger: pino({ level: 'silent' }),
};

/** Authenticates with the proxy's SCRAM client against entries; returns the final step. */
async function authenticate(
  entries: CredentialEntry[],
  mechanism: 'SCRAM-SHA-256' | 'SCRAM-SHA-1',
  user: string,
  password: string,
  db = 'admin',
): Promise<SaslStepResult> {
  const service = scramServiceFor(credentialLookup(entries), [mechanism]);
  const client = new ScramClient({ mechanism, username: user, password });
  const first = await service.mechanisms[0]!.start(
    { db, payload: client.clientFirst(), options: { skipEmptyExchange: true } },
    context,
  );
  if (first.done) throw new Error('done too early');
  const final = await first.conversation.step(await client.clientFinal(first.payload));
  client.verifyServerFinal(final.payload);
  return final;
}

describe('parseCredentials', () => {
  it('reads users, defaulting db to admin', () => {
    const entries = parseCredentials(
      `users:\n${validEntryYaml({ db: null })}\n${validEntryYaml({ user: 'bob', db: 'shop' })}\n`,
      'f.yaml',
    );
    expect(entries).toHaveLength(2);
    expect(entries[0]).toMatchObject({ user: 'alice', db: 'admin', tenant: 'acme' });
    expect(entries[1]).toMatchObject({ user: 'bob', db: 'shop', tenant: 'acme' });
    expect(entries[0]!.mechanisms['SCRAM-SHA-256']).toEqual({
      iterationCount: 15000,
      salt: b64(SALT),
      storedKey: b64(KEY32),
      serverKey: b64(KEY32),
    });
    expect(entries[0]!.mechanisms['SCRAM-SHA-1']).toBeUndefined();
  });

  it('allows the same user name in two databases, and an empty list on purpose', () => {
    expect(parseCredentials(`users:\n${validEntryYaml()}\n${validEntryYaml({ db: 'other' })}\n`, 'f')).toHaveLength(2);
    expect(parseCredentials('users: []\n', 'f')).toEqual([]);
  });

  it('round-trips what formatCredentialsFile writes', () => {
    const entries = [
      hashPassword({
        user: 'a',
        tenant: 't1',
        password: 'p',
        mechanisms: ['SCRAM-SHA-256', 'SCRAM-SHA-1'],
        iterations: 4096,
      }),
      hashPassword({ user: 'we,ird: "name"', db: 'shop', tenant: 't: 2', password: 'p', iterations: 4096 }),
    ];
    expect(parseCredentials(formatCredentialsFile(entries), 'f')).toEqual(entries);
  });

  const SHA1_BLOCK = [
    '      SCRAM-SHA-1:',
    '        iterationCount: 10000',
    `        salt: ${SALT}`,
    `        storedKey: ${KEY20}`,
    `        serverKey: ${KEY20}`,
  ].join('\n');

  it.each([
    ['an empty file', '', /an empty file/],
    ['a list at the top', '- a\n', /must be a mapping with a "users" list/],
    ['no users key', 'people: []\n', /top level: unknown field "people"/],
    ['users not a list', 'users: {}\n', /users: must be a list/],
    ['a YAML syntax error', 'users: [\n', /f\.yaml:\d+:\d+: invalid YAML/],
    ['a duplicate YAML key', `users:\n${validEntryYaml()}\n    tenant: other\n`, /f\.yaml:11:\d+: duplicate key/],
    ['an entry that is not a mapping', 'users:\n  - alice\n', /users\[0\]: must be a mapping/],
    [
      'an unknown entry field',
      `users:\n${validEntryYaml()}\n    password: secret\n`,
      /users\[0\]: unknown field "password"/,
    ],
    [
      'a missing user',
      `users:\n${validEntryYaml().replace('  - user: alice\n    db', '  - db')}\n`,
      /users\[0\]\.user: must be a string \(got undefined\)/,
    ],
    ['an empty user', `users:\n${validEntryYaml({ user: '""' })}\n`, /users\[0\]\.user: must not be empty/],
    [
      'a numeric user',
      `users:\n${validEntryYaml({ user: '12' })}\n`,
      /users\[0\]\.user: must be a string \(got number\)/,
    ],
    ['a bad db', `users:\n${validEntryYaml({ db: 'a.b' })}\n`, /users\[0\]\.db: "a\.b" is not a valid database name/],
    [
      'a missing tenant',
      `users:\n${validEntryYaml().replace('    tenant: acme\n', '')}\n`,
      /users\[0\]\.tenant: must be a string/,
    ],
    [
      'no mechanisms',
      'users:\n  - user: a\n    tenant: t\n    mechanisms: {}\n',
      /users\[0\]\.mechanisms: needs at least one mechanism/,
    ],
    [
      'an unknown mechanism',
      `users:\n${validEntryYaml()}\n      PLAIN: {}\n`,
      /users\[0\]\.mechanisms: unknown field "PLAIN"/,
    ],
    [
      'too few iterations',
      `users:\n${validEntryYaml().replace('15000', '4095')}\n`,
      /users\[0\]\.mechanisms\.SCRAM-SHA-256\.iterationCount: must be between 4096/,
    ],
    [
      'a fractional iteration count',
      `users:\n${validEntryYaml().replace('15000', '5000.5')}\n`,
      /iterationCount: must be an integer/,
    ],
    [
      'a string iteration count',
      `users:\n${validEntryYaml().replace('15000', '"5000"')}\n`,
      /iterationCount: must be an integer \(got string\)/,
    ],
    [
      'a salt that is not base64',
      `users:\n${validEntryYaml().replace(SALT, 'not*base64')}\n`,
      /SCRAM-SHA-256\.salt: is not valid base64/,
    ],
    [
      'a storedKey of the wrong length',
      `users:\n${validEntryYaml().replace(`storedKey: ${KEY32}`, `storedKey: ${KEY20}`)}\n`,
      /SCRAM-SHA-256\.storedKey: must be 32 bytes \(got 20\)/,
    ],
    [
      'a SHA-1 serverKey of the SHA-256 length',
      `users:\n${validEntryYaml()}\n${SHA1_BLOCK.replace(`serverKey: ${KEY20}`, `serverKey: ${KEY32}`)}\n`,
      /SCRAM-SHA-1\.serverKey: must be 20 bytes/,
    ],
    [
      'a missing serverKey',
      `users:\n${validEntryYaml().replace(`        serverKey: ${KEY32}`, '')}\n`,
      /SCRAM-SHA-256\.serverKey: is required/,
    ],
    [
      'an unknown key field',
      `users:\n${validEntryYaml()}\n        password: x\n`,
      /SCRAM-SHA-256: unknown field "password"/,
    ],
    ['a non-string key', 'users:\n  - user: a\n    1: x\n', /f\.yaml:3: keys must be plain names/],
  ])('refuses %s', (_title, text, message) => {
    expect(() => parseCredentials(text, 'f.yaml')).toThrow(CredentialsFileError);
    expect(() => parseCredentials(text, 'f.yaml')).toThrow(message);
  });

  it('refuses a duplicate user in one database, naming both entries', () => {
    const text = `users:\n${validEntryYaml()}\n${validEntryYaml({ user: 'bob' })}\n${validEntryYaml()}\n`;
    expect(() => parseCredentials(text, 'f.yaml')).toThrow(
      'f.yaml: users[2]: duplicate user "alice" in db "admin" (first in users[0])',
    );
  });

  it('never quotes key material in its messages', () => {
    const secret = Buffer.alloc(31, 9).toString('base64');
    const text = `users:\n${validEntryYaml().replace(`storedKey: ${KEY32}`, `storedKey: ${secret}`)}\n`;
    const message = (() => {
      try {
        parseCredentials(text, 'f.yaml');
      } catch (error) {
        return (error as Error).message;
      }
      return '';
    })();
    expect(message).toContain('storedKey');
    expect(message).not.toContain(secret);
  });

  it('loadCredentialsFile reports unreadable files plainly', () => {
    expect(() => loadCredentialsFile(join(files.path, 'nope.yaml'))).toThrow(
      /nope\.yaml: cannot read credentials file: no such file/,
    );
    expect(() => loadCredentialsFile(files.path)).toThrow(/it is a directory/);
  });
});

describe('hashPassword', () => {
  it("stores SCRAM-SHA-256 keys over the SASLprep'd password with 15000 iterations and a 28-byte salt", () => {
    const entry = hashPassword({ user: 'alice', tenant: 'acme', password: 'pen\u00ADcil' });
    expect(entry).toMatchObject({ user: 'alice', db: 'admin', tenant: 'acme' });
    expect(Object.keys(entry.mechanisms)).toEqual(['SCRAM-SHA-256']);
    const stored = entry.mechanisms['SCRAM-SHA-256']!;
    expect(stored.iterationCount).toBe(15_000);
    expect(stored.salt).toHaveLength(28);
    // Computed independently from the definitions (RFC 5802 §3): SaltedPassword over "pencil".
    const salted = hi('sha256', 'pencil', stored.salt, 15_000);
    expect(stored.storedKey).toEqual(h('sha256', hmac('sha256', salted, 'Client Key')));
    expect(stored.serverKey).toEqual(hmac('sha256', salted, 'Server Key'));
  });

  it('stores SCRAM-SHA-1 keys over HEX(MD5(user:mongo:password)) with 10000 iterations and a 16-byte salt', () => {
    const entry = hashPassword({ user: 'alice', tenant: 'acme', password: 'pencil', mechanisms: ['SCRAM-SHA-1'] });
    const stored = entry.mechanisms['SCRAM-SHA-1']!;
    expect(stored.iterationCount).toBe(10_000);
    expect(stored.salt).toHaveLength(16);
    const keys = deriveKeys('sha1', hi('sha1', mongoPasswordDigest('alice', 'pencil'), stored.salt, 10_000));
    expect(stored.storedKey).toEqual(keys.storedKey);
    expect(stored.serverKey).toEqual(keys.serverKey);
  });

  it('uses one --iterations count for every mechanism, and fresh salts every time', () => {
    const a = hashPassword({
      user: 'u',
      tenant: 't',
      password: 'p',
      mechanisms: ['SCRAM-SHA-1', 'SCRAM-SHA-256'],
      iterations: 5000,
    });
    const b = hashPassword({ user: 'u', tenant: 't', password: 'p', mechanisms: ['SCRAM-SHA-256'], iterations: 5000 });
    expect(a.mechanisms['SCRAM-SHA-1']!.iterationCount).toBe(5000);
    expect(a.mechanisms['SCRAM-SHA-256']!.iterationCount).toBe(5000);
    expect(a.mechanisms['SCRAM-SHA-256']!.salt).not.toEqual(b.mechanisms['SCRAM-SHA-256']!.salt);
    expect(a.mechanisms['SCRAM-SHA-256']!.storedKey).not.toEqual(b.mechanisms['SCRAM-SHA-256']!.storedKey);
  });

  it('produces entries a SCRAM client authenticates against', async () => {
    const entry = hashPassword({
      user: 'al,i=ce',
      db: 'shop',
      tenant: 'acme',
      password: 'sécret',
      mechanisms: ['SCRAM-SHA-256', 'SCRAM-SHA-1'],
      iterations: 4096,
    });
    for (const mechanism of ['SCRAM-SHA-256', 'SCRAM-SHA-1'] as const) {
      const result = await authenticate([entry], mechanism, 'al,i=ce', 'sécret', 'shop');
      expect(result.done && result.principal).toEqual({ user: 'al,i=ce', db: 'shop', tenant: 'acme' });
    }
  });

  it.each([
    [{ password: '' }, /password: must not be empty/],
    [{ password: 'bell\u0007' }, /password: contains characters SASLprep prohibits/],
    [{ password: '\u00AD' }, /^password: /],
    [{ user: '' }, /user: must not be empty/],
    [{ tenant: '' }, /tenant: must not be empty/],
    [{ db: 'a b' }, /db: "a b" is not a valid database name/],
    [{ iterations: 100 }, /iterations: must be an integer between 4096/],
    [{ iterations: 5000.5 }, /iterations: must be an integer/],
    [{ mechanisms: [] }, /mechanisms: needs at least one/],
    [{ mechanisms: ['PLAIN'] }, /mechanisms: unknown mechanism "PLAIN"/],
  ])('refuses %j', (patch, message) => {
    const input = { user: 'u', tenant: 't', password: 'pw', ...patch } as Parameters<typeof hashPassword>[0];
    expect(() => hashPassword(input)).toThrow(message);
  });

  it('never quotes the password in an error', () => {
    try {
      hashPassword({ user: 'u', tenant: 't', password: 'hunter2\u0007' });
    } catch (error) {
      expect((error as Error).message).not.toContain('hunter2');
    }
    expect.assertions(1);
  });

  it('formatCredentialEntry prints a list item that goes under "users:"', () => {
    const entry = hashPassword({ user: 'u', tenant: 't', password: 'pw', iterations: 4096 });
    const text = formatCredentialEntry(entry);
    expect(text.startsWith('  - user: u\n')).toBe(true);
    expect(parseCredentials(`users:\n${text}`, 'f')).toEqual([entry]);
    const other = hashPassword({ user: 'v', tenant: 't', password: 'pw', iterations: 4096 });
    // Appending to a file written by formatCredentialsFile (as `>>` does) adds the user.
    expect(parseCredentials(formatCredentialsFile([entry]) + formatCredentialEntry(other), 'f')).toEqual([
      entry,
      other,
    ]);
  });
});

describe('createCredentialStore', () => {
  const quick = { reloadIntervalMS: 20, logger: pino({ level: 'silent' }) };
  const alice = hashPassword({ user: 'alice', tenant: 'acme', password: 'a', iterations: 4096 });
  const bob = hashPassword({ user: 'bob', db: 'shop', tenant: 'globex', password: 'b', iterations: 4096 });

  it('looks users up by (db, user)', () => {
    const store = createCredentialStore(files.yaml(formatCredentialsFile([alice, bob])), quick);
    try {
      expect(store.lookup('admin', 'alice')).toEqual(alice);
      expect(store.lookup('shop', 'bob')).toEqual(bob);
      expect(store.lookup('admin', 'bob')).toBeUndefined();
      expect(store.lookup('shop', 'alice')).toBeUndefined();
      expect(store.lookup('admin', 'ALICE')).toBeUndefined();
    } finally {
      store.close();
    }
  });

  it.each([
    ['a missing file', () => join(files.path, 'missing.yaml'), /no such file/],
    ['a broken file', () => files.yaml('users: [\n'), /invalid YAML/],
    ['an invalid entry', () => files.yaml('users:\n  - user: a\n'), /users\[0\]\.tenant/],
  ])('fails at start on %s with a ConfigError naming identity.scram.credentialsFile', (_title, file, message) => {
    const path = file();
    let error: unknown;
    try {
      createCredentialStore(path, quick).close();
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).path).toBe('identity.scram.credentialsFile');
    expect((error as ConfigError).message).toMatch(message);
    expect((error as ConfigError).message).toMatch(/^identity\.scram\.credentialsFile: /);
  });

  it('hot-reloads a replaced file; a broken one keeps the previous users and is reported', async () => {
    const file = files.yaml(formatCredentialsFile([alice]));
    const reports: Array<[boolean, string | undefined]> = [];
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    const store = createCredentialStore(file, {
      reloadIntervalMS: 20,
      logger,
      onReload: (ok, error) => reports.push([ok, error?.message]),
    });
    try {
      replaceFile(file, formatCredentialsFile([alice, bob]));
      await vi.waitFor(() => expect(reports).toHaveLength(1), { timeout: 2000, interval: 10 });
      expect(reports[0]).toEqual([true, undefined]);
      expect(store.lookup('shop', 'bob')).toEqual(bob);

      replaceFile(file, `${formatCredentialsFile([bob])}  - user: half\n`);
      await vi.waitFor(() => expect(reports).toHaveLength(2), { timeout: 2000, interval: 10 });
      expect(reports[1]![0]).toBe(false);
      expect(reports[1]![1]).toMatch(/users\[1\]\.tenant/);
      expect(store.lookup('admin', 'alice')).toEqual(alice);
      expect(store.lookup('shop', 'bob')).toEqual(bob);

      rmSync(file);
      await vi.waitFor(() => expect(reports).toHaveLength(3), { timeout: 2000, interval: 10 });
      expect(reports[2]![0]).toBe(false);
      expect(store.lookup('admin', 'alice')).toEqual(alice);

      replaceFile(file, formatCredentialsFile([bob]));
      await vi.waitFor(() => expect(reports).toHaveLength(4), { timeout: 2000, interval: 10 });
      expect(reports[3]).toEqual([true, undefined]);
      expect(store.lookup('admin', 'alice')).toBeUndefined();

      const logged = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
      expect(logged.filter((l) => l.msg === 'credentials file reloaded')).toHaveLength(2);
      expect(logged.filter((l) => String(l.msg).startsWith('credentials file not reloaded'))).toHaveLength(2);
      // Never the keys.
      for (const key of [alice, bob].flatMap((e) =>
        Object.values(e.mechanisms).map((m) => m.storedKey.toString('base64')),
      )) {
        expect(lines.join('\n')).not.toContain(key);
      }
    } finally {
      store.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// `mongo-tenant-proxy hash-password`

interface Run {
  stdout: string;
  stderr: string;
  exits: number[];
}

async function hashCli(args: string[], stdin: string | (() => Promise<string>)): Promise<Run> {
  const run: Run = { stdout: '', stderr: '', exits: [] };
  let reads = 0;
  const io: CliIo = {
    stdout: (text) => void (run.stdout += text),
    stderr: (text) => void (run.stderr += text),
    exit: (code) => void run.exits.push(code),
    env: {},
    stdin: typeof stdin === 'string' ? () => Promise.resolve((reads++, stdin)) : stdin,
  };
  await runCli(['hash-password', ...args], io);
  if (typeof stdin === 'string') expect(reads).toBeLessThanOrEqual(1);
  return run;
}

function usageError(run: Run): string {
  expect(run.exits).toEqual([2]);
  expect(run.stdout).toBe('');
  const lines = run.stderr.split('\n').filter((line) => line !== '');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^error: /);
  return lines[0]!;
}

describe('hash-password command', () => {
  it('prints an entry that authenticates, for SCRAM-SHA-256 by default', async () => {
    const run = await hashCli(['--user', 'orders', '--tenant', 'acme', '--iterations', '4096'], 's3cret pass\n');
    expect(run.exits).toEqual([0]);
    expect(run.stderr).toBe('');
    expect(run.stdout).not.toContain('s3cret');
    const entries = parseCredentials(`users:\n${run.stdout}`, 'out');
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ user: 'orders', db: 'admin', tenant: 'acme' });
    expect(Object.keys(entries[0]!.mechanisms)).toEqual(['SCRAM-SHA-256']);
    const result = await authenticate(entries, 'SCRAM-SHA-256', 'orders', 's3cret pass');
    expect(result.done).toBe(true);
  });

  it('takes --db, repeated --mechanism and the default iteration counts', async () => {
    const run = await hashCli(
      [
        '--user',
        'old-app',
        '--tenant',
        'globex',
        '--db',
        'shop',
        '--mechanism',
        'SCRAM-SHA-256',
        '--mechanism',
        'SCRAM-SHA-1',
      ],
      'pw\r\n',
    );
    expect(run.exits).toEqual([0]);
    const [entry] = parseCredentials(`users:\n${run.stdout}`, 'out');
    expect(entry).toMatchObject({ user: 'old-app', db: 'shop', tenant: 'globex' });
    expect(entry!.mechanisms['SCRAM-SHA-256']!.iterationCount).toBe(15_000);
    expect(entry!.mechanisms['SCRAM-SHA-1']!.iterationCount).toBe(10_000);
    expect((await authenticate([entry!], 'SCRAM-SHA-1', 'old-app', 'pw', 'shop')).done).toBe(true);
    expect((await authenticate([entry!], 'SCRAM-SHA-256', 'old-app', 'pw', 'shop')).done).toBe(true);
  });

  it('appends cleanly to a credentials file (>>)', async () => {
    const first = await hashCli(['--user', 'a', '--tenant', 't', '--iterations', '4096'], 'x\n');
    const second = await hashCli(
      ['--user', 'b', '--tenant', 't', '--iterations', '4096', '--mechanism', 'SCRAM-SHA-1'],
      'y',
    );
    const parsed = parse(`users:\n${first.stdout}${second.stdout}`) as { users: unknown[] };
    expect(parsed.users).toHaveLength(2);
    expect(parseCredentials(`users:\n${first.stdout}${second.stdout}`, 'f').map((e) => e.user)).toEqual(['a', 'b']);
  });

  it.each([
    ['an empty stdin', [], '', /no password on standard input/],
    ['an empty line', [], '\n', /no password on standard input/],
    ['two lines', [], 'a\nb\n', /exactly one line/],
    ['a --password flag', ['--password', 'x'], 'pw\n', /never from a flag/],
    ['a --password= flag', ['--password=x'], 'pw\n', /never from a flag/],
    ['a missing --tenant', ['--tenant'], 'pw\n', /tenant/],
    ['an unknown mechanism', ['--mechanism', 'PLAIN'], 'pw\n', /mechanism/i],
    ['too few iterations', ['--iterations', '10'], 'pw\n', /iterations: must be an integer between 4096/],
    ['a fractional iteration count', ['--iterations', '5000.5'], 'pw\n', /--iterations must be a whole number/],
    ['a repeated --user', ['--user', 'other'], 'pw\n', /--user may be given only once/],
    ['a SASLprep-prohibited password', [], 'bell\u0007\n', /SASLprep prohibits/],
  ])('refuses %s with one line and exit 2', async (_title, extra, stdin, message) => {
    const base = ['--user', 'u', '--tenant', 't'];
    const args = extra[0] === '--tenant' ? ['--user', 'u'] : [...base, ...extra];
    const line = usageError(await hashCli(args, stdin));
    expect(line).toMatch(message);
    expect(line).not.toContain('bell');
  });

  it('needs --user and --tenant', async () => {
    expect(usageError(await hashCli(['--tenant', 't'], 'pw'))).toMatch(/user/);
  });

  it('--help explains every option and where the password comes from', async () => {
    const run = await hashCli(['--help'], () => Promise.reject(new Error('stdin must not be read for --help')));
    expect(run.exits).toEqual([0]);
    for (const text of [
      '--user',
      '--tenant',
      '--db',
      '--mechanism',
      '--iterations',
      'standard input',
      'SCRAM-SHA-1',
      '15000',
    ]) {
      expect(run.stdout).toContain(text);
    }
  });

  it('is listed in the top-level help', async () => {
    const run: Run = { stdout: '', stderr: '', exits: [] };
    await runCli(['--help'], {
      stdout: (text) => void (run.stdout += text),
      stderr: (text) => void (run.stderr += text),
      exit: (code) => void run.exits.push(code),
      env: {},
    });
    expect(run.stdout).toContain('hash-password');
  });
});
