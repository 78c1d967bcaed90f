// Configuration in unit tests: the product's defaults with a test's changes, the files a
// configuration names, and the ConfigError that configuration code throws.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { defaultConfig } from '../../src/config/index.js';
import type { IsolationConfig } from '../../src/config/types.js';
import { ConfigError } from '../../src/errors.js';

/** The product's isolation defaults (one owner: src/config/schema.ts), then what the test changes. */
export function isolationConfig(overrides: Partial<IsolationConfig> = {}): IsolationConfig {
  return { ...defaultConfig().isolation, ...overrides };
}

/** The ConfigError `fn` throws (fails the test when it throws nothing or something else). */
export function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

export interface TempDir {
  readonly path: string;
  /** Writes `text` to a new file of the directory, named `<n>-<name>`; returns its path. */
  file(name: string, text: string): string;
  /** A new YAML file (a configuration, a credentials file) holding `text`; returns its path. */
  yaml(text: string): string;
  remove(): void;
}

/** A fresh temporary directory for the files a test configures; remove() it in afterAll. */
export function tempDir(prefix: string): TempDir {
  const path = mkdtempSync(join(tmpdir(), prefix));
  let files = 0;
  const file = (name: string, text: string): string => {
    const written = join(path, `${++files}-${name}`);
    writeFileSync(written, text);
    return written;
  };
  return {
    path,
    file,
    yaml: (text) => file('config.yaml', text),
    remove: () => rmSync(path, { recursive: true, force: true }),
  };
}
