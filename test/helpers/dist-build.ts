// The run's one build of src/ (./cli-process.ts builtDist), started by ./global-setup.ts as the
// run starts. No vitest import: the global set-up runs outside the test workers.
import { execFile } from 'node:child_process';
import { existsSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));

export const buildingMarker = (dist: string): string => `${dist}.building`;

/**
 * Started by the global set-up when the run starts: the build ./cli-process.ts builtDist makes,
 * into `<testRunDir>/dist`, with a marker beside it while it runs (builtDist waits for it).
 */
export function startDistBuild(runDir: string): { stop(): void } {
  const dist = path.join(runDir, 'dist');
  const staging = `${dist}.tmp-setup`;
  const marker = buildingMarker(dist);
  writeFileSync(marker, '');
  const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  const child = execFile(
    process.execPath,
    [tsc, '-p', 'tsconfig.build.json', '--outDir', staging],
    { cwd: root },
    (error) => {
      try {
        if (!error && !existsSync(dist)) renameSync(staging, dist);
      } catch {
        // A test file's own build won the race: its dist stands.
      } finally {
        rmSync(staging, { recursive: true, force: true });
        rmSync(marker, { force: true });
      }
    },
  );
  return {
    stop: () => {
      if (child.exitCode === null) child.kill();
    },
  };
}
