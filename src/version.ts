/** The proxy's own version and, when cheap to find, its commit; read once at start-up. */
import { readFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root: src/ and dist/ both sit one level below it. */
const ROOT = fileURLToPath(new URL('..', import.meta.url));

function readVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : '0.0.0';
  } catch {
    return '0.0.0';
  }
}

const SHA = /^[0-9a-f]{40}$/;

/**
 * The checked-out commit when the proxy runs from a git checkout (a few small file reads, no git
 * binary): `.git` may be a directory or, in a worktree, a file naming it; refs may be loose or
 * packed. Anything else (an image built without `.git`) is `unknown`.
 */
export function readCommit(root: string = ROOT): string {
  try {
    let gitDir = join(root, '.git');
    try {
      const pointer = /^gitdir: (.+)$/m.exec(readFileSync(gitDir, 'utf8'))?.[1];
      if (pointer !== undefined) gitDir = isAbsolute(pointer) ? pointer : join(root, pointer);
    } catch {
      // a directory: readFileSync fails with EISDIR
    }
    const head = readFileSync(join(gitDir, 'HEAD'), 'utf8').trim();
    if (SHA.test(head)) return head.slice(0, 12);
    const ref = /^ref: (\S+)$/.exec(head)?.[1];
    if (ref === undefined) return 'unknown';
    let commonDir = gitDir;
    try {
      const common = readFileSync(join(gitDir, 'commondir'), 'utf8').trim();
      commonDir = isAbsolute(common) ? common : join(gitDir, common);
    } catch {
      // not a worktree
    }
    for (const dir of new Set([gitDir, commonDir])) {
      try {
        const sha = readFileSync(join(dir, ref), 'utf8').trim();
        if (SHA.test(sha)) return sha.slice(0, 12);
      } catch {
        // not a loose ref here
      }
    }
    const packed = readFileSync(join(commonDir, 'packed-refs'), 'utf8');
    for (const line of packed.split('\n')) {
      const [sha, name] = line.split(' ');
      if (name === ref && sha !== undefined && SHA.test(sha)) return sha.slice(0, 12);
    }
    return 'unknown';
  } catch {
    return 'unknown';
  }
}

export const PROXY_VERSION: string = readVersion();
export const PROXY_COMMIT: string = readCommit();
