/**
 * The one seam for `@peculiar/x509`: it resolves its algorithm providers through tsyringe, which
 * needs the `reflect-metadata` polyfill loaded first (as the library documents). Importing the
 * library through this module guarantees that order; nothing imports it directly.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';

export type * as X509 from '@peculiar/x509';
export { x509 };
