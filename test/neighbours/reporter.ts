/**
 * Vitest reporter of the noisy-neighbour suite (issue 15): collects the row each abuse attaches to
 * its test (test/neighbours/harness.ts runAbuse), prints one table at the end of the run and writes
 * the rows to .tmp/neighbours/<profile>.json and .tmp/neighbours/latest.json (read by
 * `npm run bench`). Silent in runs without neighbour tests. Reports, never judges (goalsMet does):
 * the p99 ratio is the bystander's own under-abuse p99 over its baseline p99 in the same run.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Reporter, TestCase } from 'vitest/node';
import type { NeighbourRow } from './harness.js';

/** harness.ts's P99_RATIO_GOAL (not imported: the reporter runs in vitest's main process, without the harness's imports). */
const P99_RATIO_GOAL = 2;

const root = fileURLToPath(new URL('../..', import.meta.url));

interface ReportedRow extends NeighbourRow {
  file: string;
  test: string;
  result: string;
}

export default class NeighboursReporter implements Reporter {
  private readonly rows: ReportedRow[] = [];

  onTestCaseResult(testCase: TestCase): void {
    const row = testCase.meta().neighbours;
    if (row === undefined) return;
    this.rows.push({
      ...row,
      file: path.relative(root, testCase.module.moduleId),
      test: testCase.name,
      result: testCase.result().state,
    });
  }

  onTestRunEnd(): void {
    if (this.rows.length === 0) return;
    const rows = [...this.rows].sort((a, b) => a.abuse.localeCompare(b.abuse));
    const table = formatTable(rows);
    process.stdout.write(
      `\nNoisy neighbours (profile ${rows[0]!.profile}; p99 ratio goal <= 2, baseline before and after the abuse):\n${table}\n`,
    );
    const dir = path.join(root, '.tmp', 'neighbours');
    mkdirSync(dir, { recursive: true });
    const report = `${JSON.stringify({ at: new Date().toISOString(), rows }, null, 2)}\n`;
    writeFileSync(path.join(dir, `${rows[0]!.profile}.json`), report);
    writeFileSync(path.join(dir, 'latest.json'), report);
  }
}

function formatTable(rows: ReportedRow[]): string {
  const header = [
    'abuse',
    'result',
    'base p50/p99 ms',
    'abuse p50/p99 ms',
    'p99 ratio',
    'direct p99 ratio',
    'errors',
    'breaker opened',
    'readyz fails',
    'RSS base/peak/after/budget MiB',
  ];
  const body = rows.map((row) => [
    row.abuse,
    row.result,
    `${row.baseline.p50}/${row.baseline.p99}`,
    `${row.underAbuse.p50}/${row.underAbuse.p99}`,
    row.p99Ratio > P99_RATIO_GOAL ? `${row.p99Ratio} (over ${P99_RATIO_GOAL})` : String(row.p99Ratio),
    // The control bystander straight on the upstream (MTP_NEIGHBOURS_CONTROL=1), '-' without it.
    row.control === undefined
      ? '-'
      : `${row.control.p99Ratio} (${row.control.baseline.p99}/${row.control.underAbuse.p99})`,
    row.excusedErrors > 0 ? `${row.bystanderErrors} (+${row.excusedErrors} excused)` : String(row.bystanderErrors),
    String(row.breakerOpenings),
    String(row.readyzFailures),
    `${row.rssBaselineMiB}/${row.rssPeakMiB}/${row.rssAfterMiB}/${row.rssBudgetMiB}`,
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...body.map((cells) => cells[column]!.length)));
  const line = (cells: string[]): string => cells.map((cell, column) => cell.padEnd(widths[column]!)).join('  ');
  const notes = rows.map(
    (row) =>
      `  ${row.abuse}: ${Object.entries(row.notes)
        .map(([key, value]) => `${key}=${value}`)
        .join(', ')}`,
  );
  return [line(header), ...body.map(line), 'notes:', ...notes].join('\n');
}
