/**
 * `npm run test:spec`: the drivers' unified CRUD spec tests (mongodb/specifications,
 * source/crud/tests/unified) run direct against the test upstream and through the proxy (one
 * static tenant), with this repository's runner (unified-runner.ts). The JSON files are not part
 * of this repository: `git clone https://github.com/mongodb/specifications` and set
 * MTP_SPEC_DIR to the clone (or to its source/crud/tests/unified folder).
 *
 * Prints both pass counts and writes a table (file, test, direct, proxy, reason) to
 * .tmp/spec-report.md (MTP_SPEC_REPORT=<file> to choose). Fails on a test that passes direct but
 * fails through the proxy unless known-failures.ts lists it, and on a listed test that passes.
 */
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startTestProxy } from '../helpers/proxy.js';
import { directClient, upstreamKind, upstreamUri } from '../helpers/upstream.js';
import { KNOWN_SPEC_FAILURES } from './known-failures.js';
import { SPEC_RELATIVE_DIR, runSpecFile, serverInfo, type TestResult } from './unified-runner.js';

const TENANT = 'spec-tenant';

function specDirectory(): string | undefined {
  const configured = process.env.MTP_SPEC_DIR;
  if (!configured) return undefined;
  const nested = resolve(configured, SPEC_RELATIVE_DIR);
  return existsSync(nested) ? nested : resolve(configured);
}

interface Row {
  file: string;
  test: string;
  direct: TestResult;
  proxy: TestResult;
}

function table(rows: Row[]): string {
  const cell = (text: string | undefined) => (text ?? '').replace(/\|/g, '\\|');
  const lines = ['| file | test | direct | proxy | reason |', '|---|---|---|---|---|'];
  for (const { file, test, direct, proxy } of rows) {
    const reasons: string[] = [];
    if (direct.verdict !== 'pass') reasons.push(`direct: ${direct.reason ?? ''}`);
    if (proxy.verdict !== 'pass' && proxy.reason !== direct.reason) reasons.push(`proxy: ${proxy.reason ?? ''}`);
    const reason = reasons.join(' / ');
    lines.push(`| ${cell(file)} | ${cell(test)} | ${direct.verdict} | ${proxy.verdict} | ${cell(reason)} |`);
  }
  return lines.join('\n');
}

describe('unified CRUD spec tests', () => {
  it('pass through the proxy wherever they pass direct (except the listed known failures)', async () => {
    const dir = specDirectory();
    expect(
      dir,
      'MTP_SPEC_DIR: clone https://github.com/mongodb/specifications and point MTP_SPEC_DIR at it',
    ).toBeDefined();
    const files = readdirSync(dir!)
      .filter((name) => name.endsWith('.json'))
      .sort()
      .map((name) => join(dir!, name));
    const proxy = await startTestProxy({
      listeners: [
        { name: 'spec', listen: { host: '127.0.0.1', port: 0 }, tls: null, methods: ['static'], staticTenant: TENANT },
      ],
    });
    const direct = directClient();
    const rows: Row[] = [];
    try {
      const server = await serverInfo(direct);
      const tenant = { field: proxy.config.isolation.tenantField, value: TENANT };
      for (const file of files) {
        const viaDirect = await runSpecFile(file, { name: 'direct', uri: upstreamUri() }, direct, server);
        const viaProxy = await runSpecFile(file, { name: 'proxy', uri: proxy.uri, tenant }, direct, server);
        viaDirect.forEach((result, index) =>
          rows.push({ file: result.file, test: result.test, direct: result, proxy: viaProxy[index]! }),
        );
      }
    } finally {
      await direct.close();
      await proxy.stop();
    }

    const count = (side: 'direct' | 'proxy', verdict: string) =>
      rows.filter((row) => row[side].verdict === verdict).length;
    const proxyOnly = rows.filter((row) => row.direct.verdict === 'pass' && row.proxy.verdict !== 'pass');
    const totals =
      `unified CRUD spec tests (${files.length} files, ${rows.length} tests, upstream ${upstreamKind()}): ` +
      `direct ${count('direct', 'pass')} passed, ${count('direct', 'fail')} failed, ${count('direct', 'skip')} skipped; ` +
      `proxy ${count('proxy', 'pass')} passed, ${count('proxy', 'fail')} failed, ${count('proxy', 'skip')} skipped; ` +
      `${proxyOnly.length} pass direct but not through the proxy`;
    const report = process.env.MTP_SPEC_REPORT ?? resolve('.tmp', 'spec-report.md');
    mkdirSync(dirname(report), { recursive: true });
    writeFileSync(report, `# Unified CRUD spec tests\n\n${totals}\n\n${table(rows)}\n`);
    process.stdout.write(`\n${totals}\nreport: ${report}\n`);

    const known = KNOWN_SPEC_FAILURES.filter((entry) => entry.upstream === 'any' || entry.upstream === upstreamKind());
    const knownTests = new Set(known.flatMap((entry) => entry.tests));
    const key = (row: Row) => `${row.file}: ${row.test}`;
    const unexpected = proxyOnly
      .filter((row) => !knownTests.has(key(row)))
      .map((row) => `${key(row)} (${row.proxy.reason ?? ''})`);
    const proxyOnlyKeys = new Set(proxyOnly.map(key));
    const stale = [...knownTests]
      .filter((test) => !proxyOnlyKeys.has(test))
      .map((test) => `${test}: passes now (or no longer runs); remove it from known-failures.ts`);
    expect({ unexpected, stale }).toEqual({ unexpected: [], stale: [] });
  });
});
