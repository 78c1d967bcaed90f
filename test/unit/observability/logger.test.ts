import { describe, expect, it } from 'vitest';
import { connectionLogger, createLogger, type Logger } from '../../../src/observability/logger.js';

function capture(level: Parameters<typeof createLogger>[0]['level'] = 'info'): {
  logger: Logger;
  lines: () => Record<string, unknown>[];
} {
  const chunks: string[] = [];
  const logger = createLogger({ level, destination: { write: (line: string) => void chunks.push(line) } });
  return {
    logger,
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => JSON.parse(line) as Record<string, unknown>),
  };
}

describe('createLogger', () => {
  it('writes JSON lines with the service, an ISO time and a textual level', () => {
    const { logger, lines } = capture();
    logger.info({ answer: 42 }, 'hello');
    const [line] = lines();
    expect(line).toMatchObject({ service: 'mongo-tenant-proxy', level: 'info', msg: 'hello', answer: 42 });
    expect(String(line?.['time'])).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(line).not.toHaveProperty('pid');
  });

  it('honours the level, including silent', () => {
    const warn = capture('warn');
    warn.logger.info('dropped');
    warn.logger.error('kept');
    expect(warn.lines().map((line) => line['msg'])).toEqual(['kept']);
    const silent = capture('silent');
    silent.logger.fatal('nothing');
    expect(silent.lines()).toEqual([]);
  });

  it('redacts secrets and user data at the top level and one level down', () => {
    const { logger, lines } = capture();
    logger.info(
      {
        password: 'hunter2',
        command: { find: 'users', filter: { ssn: 1 } },
        auth: { authorization: 'Bearer abc', key: 'k', payload: 'p' },
        request: { document: { a: 1 }, filter: { b: 2 }, pipeline: [], commandName: 'find' },
      },
      'redaction',
    );
    const [line] = lines();
    expect(line).toMatchObject({
      password: '[redacted]',
      command: '[redacted]',
      auth: { authorization: '[redacted]', key: '[redacted]', payload: '[redacted]' },
      request: { document: '[redacted]', filter: '[redacted]', pipeline: '[redacted]', commandName: 'find' },
    });
    expect(JSON.stringify(line)).not.toMatch(/hunter2|ssn|Bearer/);
  });

  it('redacts secrets two levels down, and what commands and replies carry', () => {
    const { logger, lines } = capture();
    logger.info(
      {
        upstream: {
          tls: { keyPassphrase: 'kp', clientSecret: 'cs' },
          auth: { 'set-cookie': 'sid=1', jwt: 'eyJhbGciOi' },
        },
        isolation: { sessionKey: 'sk-0123456789' },
        op: {
          q: { ssn: 1 },
          u: { $set: { ssn: 2 } },
          firstBatch: [{ ssn: 3 }],
          arrayFilters: [],
          let: { v: 1 },
          value: 'x',
        },
        speculativeAuthenticate: { saslStart: 1 },
        hello: { speculativeAuthenticate: { payload: 'p' } },
        commandName: 'update',
        namespace: 'app.users',
      },
      'deeper',
    );
    const [line] = lines();
    expect(line).toMatchObject({
      upstream: {
        tls: { keyPassphrase: '[redacted]', clientSecret: '[redacted]' },
        auth: { 'set-cookie': '[redacted]', jwt: '[redacted]' },
      },
      isolation: { sessionKey: '[redacted]' },
      op: {
        q: '[redacted]',
        u: '[redacted]',
        firstBatch: '[redacted]',
        arrayFilters: '[redacted]',
        let: '[redacted]',
        value: '[redacted]',
      },
      speculativeAuthenticate: '[redacted]',
      hello: { speculativeAuthenticate: '[redacted]' },
      commandName: 'update',
      namespace: 'app.users',
    });
    expect(JSON.stringify(line)).not.toMatch(/ssn|eyJ|sk-0|sid=|kp"|cs"/);
  });

  it('changes level at run time, and existing child loggers follow', () => {
    const { logger, lines } = capture('info');
    const child = connectionLogger(logger, { connectionId: 1, remote: 'r' }).child({ tenant: 'acme' });
    child.debug('hidden');
    logger.level = 'debug';
    child.debug('shown');
    logger.level = 'warn';
    child.info('hidden again');
    expect(lines().map((line) => line['msg'])).toEqual(['shown']);
  });

  it('masks only the credentials of URIs', () => {
    const { logger, lines } = capture();
    logger.info({ uri: 'mongodb://app:hunter2@db:27017/', upstream: { uri: 'mongodb://x:y@h/', url: 42 } }, 'uri');
    const [line] = lines();
    expect(line).toMatchObject({
      uri: 'mongodb://app:****@db:27017/',
      upstream: { uri: 'mongodb://x:****@h/', url: '[redacted]' },
    });
  });

  it('serializes errors under err', () => {
    const { logger, lines } = capture();
    logger.error({ err: new Error('boom') }, 'failed');
    expect(lines()[0]?.['err']).toMatchObject({ type: 'Error', message: 'boom' });
  });
});

describe('connectionLogger', () => {
  it('adds the connection id and remote address to every line', () => {
    const { logger, lines } = capture();
    const child = connectionLogger(logger, { connectionId: 7, remote: '10.0.0.1:50000' });
    child.info('client connected');
    child.warn({ password: 'x' }, 'still redacted');
    expect(lines()).toEqual([
      expect.objectContaining({ connectionId: 7, remote: '10.0.0.1:50000', msg: 'client connected' }),
      expect.objectContaining({ connectionId: 7, password: '[redacted]' }),
    ]);
  });
});
