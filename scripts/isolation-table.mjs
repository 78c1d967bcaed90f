#!/usr/bin/env node
// Lists, for every isolation catalogue item 1-64, the tests whose title starts with
// `catalogue N` (also `catalogue N, M:` and `catalogue N-M:`), so docs/isolation.md can name the
// test that proves each item. Scans test/integration/{isolation,identity}-*.test.ts and test/unit/**/*.test.ts.
//
//   node scripts/isolation-table.mjs            # one line per item: N<TAB>file › title | …
//   node scripts/isolation-table.mjs --json     # { "1": [{ file, title, needsMongoDB, needs }], … }
//   node scripts/isolation-table.mjs --missing  # only the items without a test; exit 1 if any
//   node scripts/isolation-table.mjs --update-docs  # rewrites the "Proved by" cells of the table
//                                                    # in docs/isolation.md (rows `| N |`)
//
// A test counts as needing MongoDB when its declaration line contains `needsMongoDB(`, and as
// needing an upstream feature when it is gated with `lacks('<feature>'` (test/helpers/upstream.ts):
// it runs on every upstream that has the feature (DocumentDB has most; FerretDB v1 few).
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
export const ITEMS = 64;

function walk(dir) {
  let out = [];
  let entries;
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of entries) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out = out.concat(walk(path));
    else out.push(path);
  }
  return out;
}

export function testFiles(base = root) {
  const integration = walk(join(base, 'test/integration')).filter((path) =>
    /[\\/](isolation|identity)-[^\\/]*\.test\.ts$/.test(path),
  );
  const unit = walk(join(base, 'test/unit')).filter((path) => path.endsWith('.test.ts'));
  return [...integration, ...unit].sort();
}

// it('…') / it.skipIf(…)('…') / test.each…: the first string literal after the call opens the title.
// A skipIf / runIf condition may span lines (Prettier wraps long ones), never into the next test.
const TITLE =
  /\b(?:it|test)(?:\.(?:skipIf|runIf)\((?<cond>(?:[^\n]|\n(?!\s*(?:it|test|describe)\b))*?)\)|\.(?:only|skip|todo|fails|concurrent))*\(\s*(?<q>['"`])(?<title>catalogue\s(?:\\.|(?!\k<q>)[^\n\\])*)\k<q>/g;

/** Item numbers a title names: `catalogue 7:`, `catalogue 7, 41:`, `catalogue 44-46:`. */
export function itemsOf(title) {
  const head = /^catalogue\s+([0-9][0-9,\s\-–]*)/.exec(title);
  if (head === null) return [];
  const items = new Set();
  for (const part of head[1].split(/[,\s]+/).filter(Boolean)) {
    const range = /^(\d+)[-–](\d+)$/.exec(part);
    if (range) for (let n = Number(range[1]); n <= Number(range[2]); n++) items.add(n);
    else if (/^\d+$/.test(part)) items.add(Number(part));
  }
  return [...items].filter((n) => n >= 1 && n <= ITEMS);
}

/**
 * The property test (test/integration/isolation-property.test.ts) is not titled per item; these
 * are the items its random operations attack (30 and 32 only where the upstream has $lookup,
 * $unionWith and $facet).
 */
export const PROPERTY_TEST = {
  file: 'test/integration/isolation-property.test.ts',
  title: 'isolation property (random operations of three tenants)',
  items: [6, 8, 10, 16, 17, 18, 20, 30, 32, 37, 38, 39, 42, 58, 61],
  subPipelinesOnly: [30, 32],
};

/** What a test's skipIf condition needs: 'MongoDB', an upstream feature, or nothing. */
function needsOf(text) {
  if (/needsMongoDB\(/.test(text)) return 'MongoDB';
  const features = [...text.matchAll(/lacks\(\s*'(\w+)'/g)].map((match) => match[1]);
  return features.length === 0 ? undefined : features.join(', ');
}

export function scan(base = root) {
  const table = new Map();
  for (let n = 1; n <= ITEMS; n++) table.set(n, []);
  for (const path of testFiles(base)) {
    const text = readFileSync(path, 'utf8');
    const file = relative(base, path).split('\\').join('/');
    for (const match of text.matchAll(TITLE)) {
      const title = match.groups.title.replace(/\\(.)/g, '$1');
      const line = text.slice(text.lastIndexOf('\n', match.index) + 1, text.indexOf('\n', match.index));
      const needs = needsOf(match[0]) ?? needsOf(line);
      const needsMongoDB = needs === 'MongoDB';
      for (const n of itemsOf(title)) table.get(n).push({ file, title, needsMongoDB, needs });
    }
  }
  for (const n of PROPERTY_TEST.items) {
    table.get(n).push({
      file: PROPERTY_TEST.file,
      title: PROPERTY_TEST.title,
      needsMongoDB: false,
      needs: PROPERTY_TEST.subPipelinesOnly.includes(n) ? 'lookup, unionWith, facet' : undefined,
      property: true,
    });
  }
  return table;
}

/** The Markdown cell naming an item's tests: end-to-end first, then bytes-level unit tests. */
export function cell(tests) {
  if (tests.length === 0) return '**no test yet**';
  const shorten = (title) => {
    const text = title.replace(/\|/g, '\\|');
    return text.length > 110 ? `${text.slice(0, 107)}…` : text;
  };
  const byFile = new Map();
  for (const test of tests) {
    const list = byFile.get(test.file) ?? [];
    list.push(test);
    byFile.set(test.file, list);
  }
  const parts = [];
  for (const [file, list] of byFile) {
    const unit = file.startsWith('test/unit/');
    const name = file.replace(/^test\//, '');
    const titles = list.map((test) => `“${shorten(test.title)}”${test.needs ? ` (needs ${test.needs})` : ''}`);
    parts.push(`\`${name}\`${unit ? ' (bytes-level unit)' : ''}: ${titles.join('; ')}`);
  }
  const e2e = tests.filter((test) => !test.file.startsWith('test/unit/'));
  let note = '';
  if (e2e.length === 0) note = ' — **bytes-level only**';
  else if (e2e.every((test) => test.needsMongoDB)) note = ' — **end to end only with MongoDB**';
  else if (e2e.every((test) => test.needs)) note = ' — **end to end only where the upstream has the feature**';
  return parts.join('<br>') + note;
}

/** Replaces the last cell of every `| N | … |` row (N = 1..64) in `markdown`. */
export function updateDocs(markdown, table) {
  return markdown.replace(/^\| (\d{1,2}) \|(.*?)\|((?:\\\||[^|\n])*)\|\s*$/gm, (row, n, middle) => {
    const tests = table.get(Number(n));
    if (tests === undefined) return row;
    return `| ${n} |${middle}| ${cell(tests)} |`;
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const table = scan();
  const args = new Set(process.argv.slice(2));
  if (args.has('--update-docs')) {
    const path = join(root, 'docs/isolation.md');
    writeFileSync(path, updateDocs(readFileSync(path, 'utf8'), table));
    process.stdout.write(`updated ${relative(root, path)}\n`);
  } else if (args.has('--json')) {
    process.stdout.write(`${JSON.stringify(Object.fromEntries(table), null, 2)}\n`);
  } else {
    const missing = [];
    for (const [n, tests] of table) {
      if (tests.length === 0) missing.push(n);
      if (args.has('--missing')) continue;
      const shown = tests.map((test) => `${test.file} › ${test.title}${test.needs ? ` [needs ${test.needs}]` : ''}`);
      process.stdout.write(`${n}\t${shown.length === 0 ? '(no test)' : shown.join(' | ')}\n`);
    }
    if (args.has('--missing')) {
      process.stdout.write(
        missing.length === 0 ? 'every item has a test\n' : `items without a test: ${missing.join(', ')}\n`,
      );
      if (missing.length > 0) process.exitCode = 1;
    }
  }
}
