import { defineConfig } from 'vitest/config';
import { singleUpstream } from './test/helpers/upstreams.js';

// `npm run test:spec`: the drivers' unified CRUD spec tests, direct and through the proxy
// (test/spec/). Not part of `npm test`: it needs a clone of mongodb/specifications (MTP_SPEC_DIR).
// The project's name is the upstream the global setup starts: FerretDB v1 unless MTP_TEST_UPSTREAM
// (or MONGODB_URI) names another, as in vitest.config.ts.
export default defineConfig({
  test: {
    name: singleUpstream() ?? 'ferretdb1',
    include: ['test/spec/**/*.spec.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    testTimeout: 1_200_000,
    hookTimeout: 120_000,
    pool: 'forks',
  },
});
