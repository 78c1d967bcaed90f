#!/usr/bin/env node
// Makes sure the FerretDB binary used as the test upstream exists (builds it on first use).
// Run by `npm test`, `npm run bench` and CI before anything else. Nothing to do when the tests
// are pointed at a real MongoDB with MONGODB_URI.
import { ensureFerretDB } from './ferretdb.mjs';

if (process.env.MONGODB_URI) {
  process.exit(0);
}
try {
  const binary = await ensureFerretDB();
  if (process.env.CI) process.stderr.write(`[ferretdb] using ${binary}\n`);
} catch (error) {
  process.stderr.write(`[ferretdb] ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
}
