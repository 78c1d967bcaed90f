/**
 * Modules loaded on first use rather than at import (issue 16): the native codecs, CRC-32C,
 * SASLprep, jose and x509 are megabytes of RSS that a proxy whose configuration never needs them
 * should not hold. Their owners still load the configured ones at start and reload, so a broken
 * install fails there, not at a client's request. At the bottom of the layers (wire imports only
 * errors) so that every layer can use it.
 */
import { createRequire } from 'node:module';

const requireHere = createRequire(import.meta.url);

/** A function returning `specifier`'s exports, required on its first call and kept. */
export function onFirstUse<T>(specifier: string, before?: string): () => T {
  let loaded: T | undefined;
  return () => {
    if (loaded === undefined) {
      if (before !== undefined) requireHere(before);
      loaded = requireHere(specifier) as T;
    }
    return loaded;
  };
}
