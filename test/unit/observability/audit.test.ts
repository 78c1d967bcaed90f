import { existsSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  authenticationFields,
  createAuditLog,
  decisionFields,
  truncateUtf8,
  type AuthenticationAuditEvent,
  type DecisionAuditEvent,
} from '../../../src/observability/audit.js';
import { configSchema } from '../../../src/config/index.js';
import { tempDir } from '../../helpers/config.js';
import { until } from '../../helpers/wait.js';

const files = tempDir('mtp-audit-');
afterAll(() => files.remove());

const decision: DecisionAuditEvent = {
  tenant: 'acme',
  command: 'find',
  namespace: 'app.users',
  rule: 'filter.tenant',
  decision: 'rewritten',
  connectionId: 7,
  listener: 'main',
  remoteAddress: '10.0.0.1',
};

const authentication: AuthenticationAuditEvent = {
  outcome: 'failure',
  method: 'scram',
  mechanism: 'SCRAM-SHA-256',
  user: 'ada',
  reason: 'AuthenticationFailed',
  listener: 'main',
  remoteAddress: '10.0.0.1',
  connectionId: 8,
};

function capture(): { stream: { write: (line: string) => void }; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  return {
    stream: { write: (line: string) => void chunks.push(line) },
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => JSON.parse(line) as Record<string, unknown>),
  };
}

describe('audit log', () => {
  it('writes one JSON line per decision and per authentication outcome, audit: true', async () => {
    const { stream, lines } = capture();
    const audit = createAuditLog({ destination: 'stdout', maxEventBytes: 4096, rewrites: true, stream });
    audit.decision(decision);
    audit.decision({ ...decision, decision: 'would-refuse', rule: 'stage.denied' });
    audit.authentication(authentication);
    audit.authentication({ ...authentication, outcome: 'success', tenant: 'acme', reason: undefined });
    await audit.close();
    audit.decision(decision); // after close: dropped, no throw
    const [first, second, failure, success] = lines();
    expect(first).toEqual({
      level: 'info',
      time: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      service: 'mongo-tenant-proxy',
      audit: true,
      msg: 'audit',
      event: 'decision',
      decision: 'rewritten',
      rule: 'filter.tenant',
      tenant: 'acme',
      commandName: 'find',
      namespace: 'app.users',
      listener: 'main',
      remoteAddress: '10.0.0.1',
      connectionId: 7,
    });
    expect(second).toMatchObject({ decision: 'would-refuse', rule: 'stage.denied' });
    expect(failure).toMatchObject({
      audit: true,
      event: 'authentication',
      outcome: 'failure',
      method: 'scram',
      mechanism: 'SCRAM-SHA-256',
      user: 'ada',
      reason: 'AuthenticationFailed',
      listener: 'main',
      remoteAddress: '10.0.0.1',
      connectionId: 8,
    });
    expect(failure).not.toHaveProperty('tenant');
    expect(success).toMatchObject({ event: 'authentication', outcome: 'success', tenant: 'acme' });
    expect(success).not.toHaveProperty('reason');
    expect(lines()).toHaveLength(4);
  });

  it('is not the main log: no log level hides it', () => {
    const { stream, lines } = capture();
    const audit = createAuditLog({ destination: 'stdout', maxEventBytes: 4096, rewrites: true, stream });
    audit.decision(decision);
    expect(lines()).toHaveLength(1);
  });

  it('leaves rewrites out unless audit.rewrites is on; refusals always go in', () => {
    const { stream, lines } = capture();
    const audit = createAuditLog({ destination: 'stdout', maxEventBytes: 4096, stream });
    audit.decision(decision);
    audit.decision({ ...decision, decision: 'would-rewrite' });
    expect(lines()).toEqual([]);
    audit.decision({ ...decision, decision: 'refused' });
    audit.decision({ ...decision, decision: 'would-refuse' });
    expect(lines().map((line) => line['decision'])).toEqual(['refused', 'would-refuse']);
  });

  it('appends JSON lines to a file, across reopenings', async () => {
    const file = join(files.path, 'nested', 'audit.jsonl');
    for (const kind of ['refused', 'rewritten'] as const) {
      const audit = createAuditLog({ destination: file, maxEventBytes: 4096, rewrites: true });
      audit.decision({ ...decision, decision: kind });
      await audit.close();
      await audit.close(); // idempotent
    }
    const lines = readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines.map((line) => line['decision'])).toEqual(['refused', 'rewritten']);
    expect(lines[0]).toMatchObject({
      audit: true,
      service: 'mongo-tenant-proxy',
      tenant: 'acme',
      commandName: 'find',
      level: 'info',
    });
  });

  it('reopens its file on request, so a rotation by move (logrotate, then SIGHUP) continues in a new file', async () => {
    const file = join(files.path, 'rotated', 'audit.jsonl');
    const audit = createAuditLog({ destination: file, maxEventBytes: 4096 });
    audit.decision({ ...decision, decision: 'refused' });
    await until(() => existsSync(file) && readFileSync(file, 'utf8').includes('refused'));
    renameSync(file, `${file}.1`);
    audit.reopen();
    audit.decision({ ...decision, decision: 'refused', rule: 'after.rotation' });
    await audit.close();
    expect(readFileSync(file, 'utf8')).toContain('after.rotation');
    expect(readFileSync(`${file}.1`, 'utf8')).not.toContain('after.rotation');
  });

  it('reports a failing file (disk full) to onError instead of crashing the process', async () => {
    const errors: Error[] = [];
    const audit = createAuditLog({
      destination: '/dev/full',
      maxEventBytes: 4096,
      onError: (error) => errors.push(error),
    });
    audit.decision({ ...decision, decision: 'refused' });
    await until(() => errors.length > 0);
    expect(errors[0]).toMatchObject({ code: 'ENOSPC' });
    audit.decision({ ...decision, decision: 'refused' });
    await audit.close().catch(() => undefined);
  });

  it('truncates long fields so every event fits maxEventBytes', () => {
    const { stream, lines } = capture();
    const audit = createAuditLog({ destination: 'stdout', maxEventBytes: 512, rewrites: true, stream });
    const huge = 'n'.repeat(100_000);
    const oversize = { ...decision, namespace: `app.${huge}`, command: `x${huge}`, tenant: 'é'.repeat(5000) };
    audit.decision(oversize);
    audit.authentication({ ...authentication, user: `u${huge}`, listener: huge });
    const [line, auth] = lines();
    expect(line?.['truncated']).toBe(true);
    const fields = decisionFields(oversize, 512);
    expect(Buffer.byteLength(JSON.stringify(fields))).toBeLessThanOrEqual(512 - 128);
    expect(String(line?.['namespace'])).toMatch(/^app\.n+…$/);
    expect(String(line?.['tenant'])).not.toContain('\ufffd');
    expect(Buffer.byteLength(JSON.stringify(line))).toBeLessThanOrEqual(512);
    expect(auth).toMatchObject({ truncated: true, event: 'authentication', outcome: 'failure', connectionId: 8 });
    expect(Buffer.byteLength(JSON.stringify(auth))).toBeLessThanOrEqual(512);
  });

  it('keeps every event within the smallest maxEventBytes the configuration accepts, however long each field', () => {
    const smallest = configSchema.properties!['audit']!.properties!['maxEventBytes']!.minimum!;
    const { stream, lines } = capture();
    const audit = createAuditLog({ destination: 'stdout', maxEventBytes: smallest, stream });
    const long = (prefix: string): string => `${prefix}${'é'.repeat(10_000)}`;
    audit.decision({
      tenant: long('t'),
      command: long('c'),
      namespace: long('n'),
      rule: long('r'),
      decision: 'would-refuse',
      connectionId: 2 ** 31,
      listener: long('l'),
      remoteAddress: long('a'),
    });
    audit.authentication({
      outcome: 'failure',
      method: 'scram-passthrough',
      mechanism: long('m'),
      user: long('u'),
      tenant: long('t'),
      reason: long('r'),
      listener: long('l'),
      remoteAddress: long('a'),
      connectionId: 2 ** 31,
    });
    for (const line of lines()) {
      expect(line['truncated']).toBe(true);
      expect(Buffer.byteLength(JSON.stringify(line))).toBeLessThanOrEqual(smallest);
    }
    expect(lines()).toHaveLength(2);
  });

  it('copies only the known fields: nothing else an event carries is logged', () => {
    const sneaky = { ...decision, filter: { ssn: '123-45-6789' }, document: { secret: 'x' } } as DecisionAuditEvent;
    const fields = decisionFields(sneaky, 4096);
    expect(JSON.stringify(fields)).not.toContain('123-45-6789');
    expect(Object.keys(fields).sort()).toEqual([
      'commandName',
      'connectionId',
      'decision',
      'event',
      'listener',
      'namespace',
      'remoteAddress',
      'rule',
      'tenant',
    ]);
    const withSecrets = {
      ...authentication,
      password: 'hunter2',
      payload: Buffer.from('n,,n=ada,r=abc'),
      token: 'eyJ',
    } as AuthenticationAuditEvent;
    const auth = authenticationFields(withSecrets, 4096);
    expect(JSON.stringify(auth)).not.toMatch(/hunter2|eyJ|r=abc/);
  });
});

describe('truncateUtf8', () => {
  it('cuts at a character boundary and marks the cut', () => {
    expect(truncateUtf8('short', 10)).toBe('short');
    expect(truncateUtf8('abcdefghij', 6)).toBe('abc…');
    const cut = truncateUtf8('ééééé', 6);
    expect(Buffer.byteLength(cut)).toBeLessThanOrEqual(6);
    expect(cut).toBe('é…');
  });
});
