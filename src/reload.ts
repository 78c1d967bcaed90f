/**
 * Hot reload of the whole configuration (SIGHUP, a changed configuration file, or
 * `RunningProxy.reload`), without dropping a connection.
 *
 * A reload loads the configuration again from the sources the proxy started with (file, `MTP_*`
 * environment, flags), then works in two steps. *Prepare* builds everything the new settings
 * need next to the running ones (identity services reading their files, listener TLS material,
 * the audit file) and fails without touching the running proxy. *Commit* swaps them in and cannot
 * fail. A configuration that does not load, validate or prepare is rejected: the running one stays,
 * and the failure is logged (naming the setting) and counted.
 *
 * What each part sees after a commit:
 * - isolation policy: every connection, from its next command (TenantEngine follows its parent);
 * - per-tenant limits: every tenant at once (counts carry over);
 * - identity settings, listener methods and static tenants: connections opened after the reload,
 *   and open ones that have no tenant yet, from their next message (a removed method or credential
 *   is not usable later on a connection opened before; a SASL conversation begun before is
 *   abandoned). An established connection keeps its tenant: a live connection's tenant never
 *   changes, and a removed credential does not end the sessions already authenticated with it;
 * - timeouts, message limits, compression and handshake settings: connections opened after the
 *   reload;
 * - listener certificates: new TLS handshakes; log level and audit settings: at once.
 * Settings bound at start (see config/reload.ts) keep their running values and are reported in a
 * warning as needing a restart; the rest still applies.
 */
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import type { ProxyConfig } from './config/types.js';
import { configFileOf, loadConfig, type LoadConfigOptions } from './config/load.js';
import { planReload } from './config/reload.js';
import { isolationWarnings } from './config/checks.js';
import { ConfigError, ConfigValidationError } from './errors.js';
import { filesSignature, watchFiles, type FileWatch } from './identity/file-watch.js';
import type { IdentityRuntime } from './identity/services.js';
import type { IdentityServices } from './identity/types.js';
import type { AuditLog, AuthenticationAuditEvent, DecisionAuditEvent } from './observability/audit.js';
import type { ProxyMetrics } from './observability/metrics.js';
import type { IsolationEngine } from './rewrite/engine.js';
import type { Listener, PreparedListenerUpdate, SharedConnectionDeps } from './server/listener.js';
import type { TenantLimits } from './server/tenant-limits.js';
import { loadCodecs } from './wire/compression.js';

/** What asked for the reload: SIGHUP, the watched file, or a caller of `RunningProxy.reload`. */
export type ReloadTrigger = 'signal' | 'file' | 'api';

export type ReloadResult =
  | {
      ok: true;
      trigger: ReloadTrigger;
      /** Settings whose new value is in effect, e.g. `isolation.namespaces`. */
      applied: string[];
      /** Settings that changed but need a restart; they keep their running values. */
      requiresRestart: string[];
    }
  | {
      ok: false;
      trigger: ReloadTrigger;
      /** The problem, naming the setting or file: `limits.maxConnections: must be >= 1 (got 0, …)`. */
      error: string;
    };

/** Where a reload reads the configuration from: the same sources as at start. */
export interface ConfigSource {
  /** Loads and validates the configuration (throws ConfigError). */
  load(): ProxyConfig;
  /** The configuration file, watched when `reload.watchConfigFile` is on; none: SIGHUP only. */
  file?: string | undefined;
  /**
   * The file's `filesSignature` when `load` last read it: the watch starts from there, so a change
   * made meanwhile (while the proxy was still reaching its upstream) is not missed.
   */
  loadedSignature?(): string | undefined;
}

/** The file (`file`, else `$MTP_CONFIG`), `MTP_*` environment and flags `serve` starts from, re-read on every load. */
export function configFileSource(options: LoadConfigOptions): ConfigSource {
  const file = configFileOf(options);
  let signature: string | undefined;
  return {
    file,
    load() {
      // Taken before reading: a change made while reading shows up as a change afterwards.
      if (file !== undefined) signature = filesSignature([file]);
      return loadConfig(options);
    },
    loadedSignature: () => signature,
  };
}

/** An audit log whose destination a reload can replace; connections keep holding this one. */
export class ReloadableAuditLog implements AuditLog {
  constructor(private current: AuditLog) {}

  decision(event: DecisionAuditEvent): void {
    this.current.decision(event);
  }

  authentication(event: AuthenticationAuditEvent): void {
    this.current.authentication(event);
  }

  reopen(): void {
    this.current.reopen();
  }

  /** Sends later events to `next`; returns the previous log for the caller to close. */
  replace(next: AuditLog): AuditLog {
    const previous = this.current;
    this.current = next;
    return previous;
  }

  close(): Promise<void> {
    return this.current.close();
  }
}

export interface ConfigReloaderOptions {
  /** The configuration running now. */
  config: ProxyConfig;
  source: ConfigSource | undefined;
  /** The root logger: its level follows `log.level` (child loggers inherit it). */
  logger: Logger;
  metrics: ProxyMetrics;
  /** What listeners hand to new connections; its `config` and `identity` are replaced. */
  shared: SharedConnectionDeps;
  isolation: IsolationEngine;
  tenantLimits: TenantLimits;
  listeners: readonly Listener[];
  audit: ReloadableAuditLog;
  /** Opens the audit stream a configuration names. */
  createAudit(config: ProxyConfig): AuditLog;
  identity: IdentityRuntime;
  /** Builds identity services for a configuration; `throttle` keeps the failure history. */
  createIdentity(config: ProxyConfig, throttle: IdentityServices['throttle'] | undefined): IdentityRuntime;
}

export class ConfigReloader {
  private running: ProxyConfig;
  private identity: IdentityRuntime;
  private watcher: FileWatch | undefined;
  private watching: { file: string; intervalMS: number } | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  private readonly logger: Logger;

  constructor(private readonly options: ConfigReloaderOptions) {
    this.running = options.config;
    this.identity = options.identity;
    this.logger = options.logger.child({ component: 'reload' });
    this.updateWatcher();
  }

  /** The configuration in effect (restart-only settings at the values the proxy started with). */
  get config(): ProxyConfig {
    return this.running;
  }

  /**
   * Reloads from the source, or applies `next` (already loaded and validated). Reloads run one at
   * a time, in order. Never rejects: a failure is in the result (and logged and counted).
   */
  reload(trigger: ReloadTrigger, next?: ProxyConfig): Promise<ReloadResult> {
    const result = this.queue.then(() => this.reloadNow(trigger, next));
    this.queue = result.catch(() => undefined);
    return result;
  }

  /** Stops watching the file and closes the identity services in use; later reloads are refused. */
  close(): void {
    if (this.closed) return; // called when the drain begins, and again among the cleanups
    this.closed = true;
    this.watcher?.close();
    this.identity.close();
  }

  private async reloadNow(trigger: ReloadTrigger, supplied: ProxyConfig | undefined): Promise<ReloadResult> {
    if (this.closed) return this.fail(trigger, new Error('the proxy is shutting down'));
    let next: ProxyConfig;
    try {
      if (supplied !== undefined) next = supplied;
      else if (this.options.source !== undefined) next = this.options.source.load();
      else
        throw new Error('no configuration source to reload from (the proxy was started from a configuration object)');
      // Compressors switch live: one whose native codec cannot load fails the reload, not a client later.
      loadCodecs(next.compression.compressors);
    } catch (error) {
      return this.fail(trigger, error);
    }
    const plan = planReload(this.running, next);
    let commit: () => Promise<void>;
    try {
      commit = this.prepare(plan.config, plan.applied);
    } catch (error) {
      return this.fail(trigger, error);
    }
    try {
      await commit();
    } catch (error) {
      // Not expected (commit steps do not fail); the settings switched before it are in effect.
      this.logger.error({ err: error }, 'applying the reloaded configuration failed part way');
      return this.fail(trigger, error);
    }
    this.options.metrics.configReloaded('success');
    const { applied, requiresRestart } = plan;
    this.logger.info(
      { trigger, applied },
      applied.length === 0 ? 'configuration reloaded: nothing changed' : 'configuration reloaded',
    );
    if (requiresRestart.length > 0) {
      this.logger.warn(
        { trigger, requiresRestart },
        'configuration reloaded, but some changed settings require a restart; they keep their running values until then',
      );
    }
    return { ok: true, trigger, applied, requiresRestart };
  }

  /**
   * Builds what `config` needs without changing the running proxy (throws on a problem, having
   * released what it built) and returns the step that switches to it.
   */
  private prepare(config: ProxyConfig, applied: readonly string[]): () => Promise<void> {
    const changed = (pattern: RegExp): boolean => applied.some((path) => pattern.test(path));
    const opened: Array<{ discard(): void }> = [];
    let identity: IdentityRuntime | undefined;
    let audit: AuditLog | undefined;
    const listenerUpdates: PreparedListenerUpdate[] = [];
    try {
      if (changed(/^identity\.|^listeners\[\d+\]\.methods/)) {
        const sameDelays = !changed(/^identity\.failureDelay\./);
        identity = this.options.createIdentity(config, sameDelays ? this.options.shared.identity.throttle : undefined);
        opened.push({ discard: () => identity?.close() });
      }
      for (const [index, listener] of this.options.listeners.entries()) {
        const update = listener.prepareUpdate(config.listeners[index]!, config.identity.reloadIntervalMS);
        listenerUpdates.push(update);
        opened.push(update);
      }
      if (changed(/^audit\./)) {
        const { destination } = config.audit;
        if (destination !== 'stdout' && destination !== 'stderr') checkAppendable(destination, 'audit.destination');
        audit = this.options.createAudit(config);
      }
    } catch (error) {
      for (const resource of opened) resource.discard();
      throw error;
    }

    return async () => {
      const { shared, logger: root } = this.options;
      // Child loggers have no level of their own: they follow the root's.
      root.level = config.log.level;
      this.running = config;
      shared.config = config;
      this.options.isolation.reconfigure(config.isolation);
      this.options.metrics.setAuditOnly(config.isolation.mode === 'audit-only');
      if (changed(/^isolation\.mode$/)) for (const warning of isolationWarnings(config.isolation)) root.warn(warning);
      const ownership = applied.filter((path) => /^isolation\.(tenantField|tenantValueType)$/.test(path));
      if (ownership.length > 0) {
        // Stored documents keep the old field or type: each tenant now sees only documents of the new shape.
        this.logger.warn(
          { changed: ownership },
          'the tenant field or its type changed: tenants now own only documents with the new field and type; documents written before must be migrated',
        );
      }
      this.options.tenantLimits.reconfigure(config.limits);
      shared.bufferBudget?.reconfigure(config.limits.maxBufferedBytes);
      for (const update of listenerUpdates) update.commit();
      if (identity !== undefined) {
        const replaced = this.identity;
        this.identity = identity;
        shared.identity = identity.services;
        // Connections still authenticating hold the old services; they keep working without their file watchers.
        replaced.close();
      }
      this.updateWatcher();
      // Every reload reopens an unchanged audit file: `kill -HUP` after logrotate moved it starts a new one.
      if (audit === undefined) this.options.audit.reopen();
      if (audit !== undefined) {
        await this.options.audit
          .replace(audit)
          .close()
          .catch((error: unknown) => this.logger.warn({ err: error }, 'closing the previous audit log failed'));
      }
    };
  }

  private fail(trigger: ReloadTrigger, error: unknown): ReloadResult {
    const message = error instanceof Error ? error.message : String(error);
    const fields: Record<string, unknown> = { trigger, err: message };
    if (error instanceof ConfigError) fields['path'] = error.path;
    if (error instanceof ConfigValidationError) fields['issues'] = error.issues;
    this.logger.error(fields, 'configuration reload failed; the previous configuration keeps running');
    this.options.metrics.configReloaded('failure');
    return { ok: false, trigger, error: message };
  }

  /** Watches the configuration file as `reload` says, restarting the poll when that changed. */
  private updateWatcher(): void {
    const file = this.options.source?.file;
    const wanted =
      file !== undefined && this.running.reload.watchConfigFile
        ? { file, intervalMS: this.running.reload.intervalMS }
        : undefined;
    if (wanted?.file === this.watching?.file && wanted?.intervalMS === this.watching?.intervalMS) return;
    this.watcher?.close();
    this.watcher = undefined;
    this.watching = wanted;
    if (wanted === undefined || this.closed) return;
    const onChange = (): void => {
      this.logger.info({ file: wanted.file }, 'configuration file changed; reloading');
      void this.reload('file');
    };
    this.watcher = watchFiles([wanted.file], wanted.intervalMS, onChange, this.options.source?.loadedSignature?.());
  }
}

/** An audit file must be appendable before a reload switches to it (pino would fail later, asynchronously). */
function checkAppendable(file: string, path: string): void {
  try {
    mkdirSync(dirname(file), { recursive: true });
    closeSync(openSync(file, 'a'));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    throw new ConfigError(path, `${file} cannot be opened for appending (${code})`);
  }
}
