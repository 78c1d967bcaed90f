// The README shows what `npm run demo` prints: every line of that box is one scripts/demo.mjs
// prints, and the demo passes SIGHUP on to the proxy as the README says.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const readme = readFileSync(`${root}README.md`, 'utf8');
const demo = readFileSync(`${root}scripts/demo.mjs`, 'utf8');

describe('the README on npm run demo', () => {
  const start = readme.indexOf('`npm run demo` prints:');
  const box = readme.slice(start, readme.indexOf('\n## ', start));
  const labels = [...box.matchAll(/^│ ([A-Z][a-z]+:) +/gm)].map((match) => match[1]!);

  it('shows lines the demo prints, under their labels', () => {
    expect(labels).toEqual(expect.arrayContaining(['Connect:', 'Shell:', 'Metrics:', 'Reload:']));
    for (const label of labels) expect(demo, label).toMatch(new RegExp(`\`${label} +`));
  });

  it('says SIGHUP reloads the demo, which the demo passes on to the proxy', () => {
    expect(box).toContain('SIGHUP');
    expect(demo).toMatch(/process\.on\('SIGHUP', \(\) => \{\n\s+if \(!shuttingDown\) proxy\.kill\('SIGHUP'\);/);
  });
});
