/**
 * Hot reload of certificates, keys, CA bundles, credential and key files: a file set is polled
 * (stat, following symlinks) and `onChange` runs when any member's size, mtime or inode changes.
 * Polling rather than inotify because Kubernetes replaces mounted secrets by swapping a symlink,
 * which inotify on the old target never reports.
 */
import { statSync, type Stats } from 'node:fs';

export interface FileWatch {
  close(): void;
}

function signature(path: string): string {
  let stats: Stats;
  try {
    stats = statSync(path);
  } catch {
    return 'missing';
  }
  return `${stats.ino}:${stats.size}:${stats.mtimeMs}`;
}

/** What the watch compares: it changes when any file's inode, size or mtime does (or it appears or goes). */
export function filesSignature(paths: readonly string[]): string {
  return paths.map(signature).join('|');
}

/**
 * Calls `onChange` (at most once per interval) after any of `paths` changes since `since`
 * (default: now). The callback decides what to do with a half-written file: it should keep the
 * old state when loading fails.
 */
export function watchFiles(
  paths: readonly string[],
  intervalMS: number,
  onChange: () => void,
  since: string = filesSignature(paths),
): FileWatch {
  let last = since;
  const timer = setInterval(() => {
    const now = filesSignature(paths);
    if (now === last) return;
    last = now;
    onChange();
  }, intervalMS);
  timer.unref();
  return { close: () => clearInterval(timer) };
}
