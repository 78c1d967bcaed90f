/**
 * The one seam for `@peculiar/x509`: it resolves its algorithm providers through tsyringe, which
 * needs the `reflect-metadata` polyfill loaded first (as the library documents). Loading the
 * library through this module guarantees that order; nothing imports it directly.
 *
 * Loaded on first use, not at import (issue 16): the pair is the largest thing the proxy would
 * otherwise load (~8 MiB of RSS) and only `mtls` listeners read certificates (the certificate
 * mapper loads it when it is made, so a broken install still fails at start or reload).
 */
import type * as X509Module from '@peculiar/x509';
import { onFirstUse } from '../wire/lazy-module.js';

export type * as X509 from '@peculiar/x509';

/** The library, loaded (with `reflect-metadata` before it) on the first call. */
export const loadX509 = onFirstUse<typeof X509Module>('@peculiar/x509', 'reflect-metadata');
