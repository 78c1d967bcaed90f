/**
 * Builds the shared identity services the listeners' methods need, once per proxy: certificate
 * rules, the SCRAM credential store, the passthrough relay, the JWT verifier, the throttle.
 * Only the services some listener enables are created, so a missing file for an unused method
 * is not an error.
 */
import type { Logger } from 'pino';
import type { IdentityMethod, ProxyConfig } from '../config/types.js';
import { ConfigError } from '../errors.js';
import { createCertificateMapper } from './certificates.js';
import { createJwtMechanism } from './plain-jwt.js';
import { createPassthroughService } from './passthrough.js';
import { createScramService } from './scram-server.js';
import { createFailureThrottle } from './throttle.js';
import type { AuthObserver, IdentityServices, RelayConnection } from './types.js';

export interface IdentityRuntime {
  services: IdentityServices;
  /** Stops watching files. */
  close(): void;
}

export interface IdentityDependencies {
  logger: Logger;
  observer: AuthObserver;
  /** A fresh, unauthenticated upstream connection reserved for one client (scram-passthrough). */
  openRelay: () => Promise<RelayConnection>;
  /** The failure throttle to keep using (hot reload with unchanged `failureDelay`); a new one otherwise. */
  throttle?: IdentityServices['throttle'];
}

export function createIdentityServices(config: ProxyConfig, deps: IdentityDependencies): IdentityRuntime {
  const { identity } = config;
  const enabled = new Set<IdentityMethod>();
  config.listeners.forEach((listener, index) => {
    if (listener.methods.includes('scram') && listener.methods.includes('scram-passthrough')) {
      // Both answer the same SCRAM mechanism names; a client could not choose between them.
      throw new ConfigError(`listeners[${index}].methods`, 'scram and scram-passthrough cannot share a listener');
    }
    for (const method of listener.methods) enabled.add(method);
  });

  const closers: Array<() => void> = [];
  const services: IdentityServices = {
    throttle: deps.throttle ?? createFailureThrottle(identity.failureDelay),
    observer: deps.observer,
  };
  const logger = deps.logger.child({ component: 'identity' });
  const reload = { reloadIntervalMS: identity.reloadIntervalMS, logger };

  if (enabled.has('mtls')) services.certificates = createCertificateMapper(identity.certificateRules);
  if (enabled.has('scram')) {
    const scram = createScramService(identity.scram, reload);
    closers.push(() => scram.close());
    services.scram = scram;
  }
  if (enabled.has('scram-passthrough')) {
    services.passthrough = createPassthroughService({ rules: identity.passthrough.rules, openRelay: deps.openRelay });
  }
  if (enabled.has('plain-jwt')) {
    const jwt = createJwtMechanism(identity.jwt, reload);
    closers.push(() => jwt.close());
    services.jwt = jwt;
  }
  return {
    services,
    close() {
      for (const close of closers) close();
    },
  };
}
