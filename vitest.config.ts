import { defineConfig } from 'vitest/config';
import {
  EVERY_PROJECT_TEST_FILES,
  SEMANTIC_TEST_FILES,
  singleUpstream,
  type UpstreamKind,
} from './test/helpers/upstreams.js';

// One project per upstream, named after it; its globalSetup starts that upstream once per run
// (test/helpers/upstreams.ts says which files run where and how to choose another upstream).
const project = (name: UpstreamKind, include: string[], exclude: string[] = []) => ({
  extends: true as const,
  test: { name, include, exclude, globalSetup: ['test/helpers/global-setup.ts'] },
});
const single = singleUpstream();
// The noisy-neighbour suite (issue 15, test/neighbours) runs in `npm test` at its small sizes, the
// bystander's p99 ratios reported, not asserted (harness.ts, goalsMet); `npm run test:neighbours`
// runs it alone at full size and asserts them. FerretDB project only: it starts FerretDBs of its own.

export default defineConfig({
  test: {
    projects:
      single !== undefined
        ? [project(single, ['test/**/*.test.ts'])]
        : [
            project('ferretdb1', ['test/**/*.test.ts'], SEMANTIC_TEST_FILES),
            project('documentdb', [...SEMANTIC_TEST_FILES, ...EVERY_PROJECT_TEST_FILES]),
          ],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // Two files at a time (vitest's default on 2 cores is 1): a file spends most of its time waiting
    // on the upstream and on round trips. Files are independent (docs/testing.md, "Run time").
    maxWorkers: 2,
    // The noisy-neighbour suite's table and JSON (test/neighbours/reporter.ts); silent without it.
    reporters: ['default', './test/neighbours/reporter.ts'],
    coverage: {
      provider: 'v8',
      include: ['src/**/*.ts'],
      reporter: ['text-summary', 'json-summary'],
      thresholds: { lines: 80 },
    },
  },
});
