import { defineConfig } from 'vitest/config';

// `npm run test:spec`: the drivers' unified CRUD spec tests, direct and through the proxy
// (test/spec/). Not part of `npm test`: it needs a clone of mongodb/specifications (MTP_SPEC_DIR).
export default defineConfig({
  test: {
    include: ['test/spec/**/*.spec.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    testTimeout: 1_200_000,
    hookTimeout: 120_000,
    pool: 'forks',
  },
});
