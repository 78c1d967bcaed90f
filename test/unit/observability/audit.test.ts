import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { auditFields, createAuditLog, truncateUtf8, type AuditEvent } from '../../../src/observability/audit.js';
import { createLogger } from '../../../src/observability/logger.js';

const dir = mkdtempSync(join(tmpdir(), 'mtp-audit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const event: AuditEvent = {
  tenant: 'acme',
  command: 'find',
  namespace: 'app.users',
  rule: 'filter.tenant',
  decision: 'rewritten',
  connectionId: 7,
  listener: 'main',
};

function captureLogger(): { logger: ReturnType<typeof createLogger>; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const logger = createLogger({ level: 'info', destination: { write: (line: string) => void chunks.push(line) } });
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

describe('audit log', () => {
  it('writes one line per decision to the main log with audit: true, the command name readable', async () => {
    const { logger, lines } = captureLogger();
    const audit = createAuditLog({ file: null, maxEventBytes: 4096, logger });
    audit.record(event);
    audit.record({ ...event, decision: 'would-refuse', rule: 'stage.denied' });
    await audit.close();
    const [first, second] = lines();
    expect(first).toMatchObject({
      audit: true,
      msg: 'audit',
      tenant: 'acme',
      commandName: 'find',
      namespace: 'app.users',
      rule: 'filter.tenant',
      decision: 'rewritten',
      connectionId: 7,
      listener: 'main',
    });
    expect(first).not.toHaveProperty('truncated');
    expect(second).toMatchObject({ decision: 'would-refuse', rule: 'stage.denied' });
  });

  it('appends JSON lines to a file, across reopenings', async () => {
    const file = join(dir, 'nested', 'audit.jsonl');
    const { logger } = captureLogger();
    for (const decision of ['refused', 'rewritten'] as const) {
      const audit = createAuditLog({ file, maxEventBytes: 4096, logger });
      audit.record({ ...event, decision });
      await audit.close();
      await audit.close(); // idempotent
    }
    const lines = readFileSync(file, 'utf8').trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines.map((line) => line['decision'])).toEqual(['refused', 'rewritten']);
    expect(lines[0]).toMatchObject({ audit: true, service: 'mongo-tenant-proxy', tenant: 'acme', commandName: 'find', level: 'info' });
    expect(String(lines[0]!['time'])).toMatch(/^\d{4}-\d\d-\d\dT/);
  });

  it('truncates long fields so every event fits maxEventBytes', async () => {
    const { logger, lines } = captureLogger();
    const audit = createAuditLog({ file: null, maxEventBytes: 512, logger });
    const huge = 'n'.repeat(100_000);
    audit.record({ ...event, namespace: `app.${huge}`, command: `x${huge}`, tenant: 'é'.repeat(5000) });
    const [line] = lines();
    expect(line?.['truncated']).toBe(true);
    const fields = auditFields({ ...event, namespace: `app.${huge}`, command: `x${huge}`, tenant: 'é'.repeat(5000) }, 512);
    expect(Buffer.byteLength(JSON.stringify(fields))).toBeLessThanOrEqual(512 - 128);
    expect(String(line?.['namespace'])).toMatch(/^app\.n+…$/);
    expect(String(line?.['tenant'])).not.toContain('\ufffd');
    expect(Buffer.byteLength(JSON.stringify(line))).toBeLessThan(1024);
  });

  it('copies only the known fields: nothing else an event carries is logged', () => {
    const sneaky = { ...event, filter: { ssn: '123-45-6789' }, document: { secret: 'x' } } as AuditEvent;
    const fields = auditFields(sneaky, 4096);
    expect(JSON.stringify(fields)).not.toContain('123-45-6789');
    expect(Object.keys(fields).sort()).toEqual(['commandName', 'connectionId', 'decision', 'listener', 'namespace', 'rule', 'tenant']);
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
