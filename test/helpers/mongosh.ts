import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The repository's mongosh, run directly: `npx --no-install mongosh` first starts npm, about a
 * second of CPU per shell (a third of the shell's own start) that a loaded machine makes long.
 */
export const MONGOSH = path.join(fileURLToPath(new URL('../..', import.meta.url)), 'node_modules', '.bin', 'mongosh');
