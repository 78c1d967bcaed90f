import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PROXY_VERSION, readCommit } from '../../src/version.js';

const SHA = 'a'.repeat(8) + '0123456789abcdef0123456789abcdef';
const root = mkdtempSync(join(tmpdir(), 'mtp-version-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function checkout(name: string, files: Record<string, string>): string {
  const dir = join(root, name);
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(join(dir, path, '..'), { recursive: true });
    writeFileSync(join(dir, path), content);
  }
  return dir;
}

describe('build identity', () => {
  it('reads the version from package.json', () => {
    expect(PROXY_VERSION).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('finds the commit of a detached HEAD, a loose ref, a packed ref and a worktree, without git', () => {
    expect(readCommit(checkout('detached', { '.git/HEAD': `${SHA}\n` }))).toBe(SHA.slice(0, 12));
    expect(
      readCommit(checkout('loose', { '.git/HEAD': 'ref: refs/heads/main\n', '.git/refs/heads/main': `${SHA}\n` })),
    ).toBe(SHA.slice(0, 12));
    expect(
      readCommit(
        checkout('packed', {
          '.git/HEAD': 'ref: refs/heads/main\n',
          '.git/packed-refs': `# pack-refs\n${SHA} refs/heads/main\n`,
        }),
      ),
    ).toBe(SHA.slice(0, 12));
    const main = checkout('main', {
      '.git/worktrees/wt/HEAD': 'ref: refs/heads/wt\n',
      '.git/worktrees/wt/commondir': '../..\n',
      '.git/refs/heads/wt': `${SHA}\n`,
    });
    expect(readCommit(checkout('wt', { '.git': `gitdir: ${join(main, '.git/worktrees/wt')}\n` }))).toBe(
      SHA.slice(0, 12),
    );
  });

  it('is "unknown" without a checkout (an image built without .git)', () => {
    expect(readCommit(checkout('none', { 'package.json': '{}' }))).toBe('unknown');
    expect(readCommit(checkout('garbage', { '.git/HEAD': 'nonsense' }))).toBe('unknown');
  });
});
