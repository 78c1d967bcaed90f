// The Helm chart (helm/mongo-tenant-proxy): `helm lint` and `helm template` over every values
// file the chart ships, and checks of the rendered manifests: standalone objects, the native
// sidecar an application chart adds with the named templates, security context, probes,
// config checksum, monitoring objects only when enabled, and metric names the proxy exports.
//
// Helm comes from scripts/helm.mjs (built with Go into a cache outside the repository on first
// use, about 1.5 minutes cold); only a machine with neither that binary nor Go skips this file.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { loadConfig, planReload, type ProxyConfig } from '../../src/config/index.js';
import { ProxyMetrics } from '../../src/observability/metrics.js';

interface HelmScript {
  HELM_VERSION: string;
  ensureHelm(options?: { log?: (message: string) => void }): Promise<string>;
  helmPresent(): Promise<boolean>;
  goAvailable(): Promise<boolean>;
  helmEnv(home: string): NodeJS.ProcessEnv;
}

const root = fileURLToPath(new URL('../..', import.meta.url));
const chartDir = path.join(root, 'helm', 'mongo-tenant-proxy');
const script = (await import(new URL('../../scripts/helm.mjs', import.meta.url).href)) as HelmScript;
const runnable = (await script.helmPresent()) || (await script.goAvailable());
if (!runnable) {
  process.stderr.write(
    '[helm.test] SKIPPED: helm is not built yet and Go is not on PATH to build it (scripts/helm.mjs); ' +
      'install Go or set MTP_HELM_BIN=<helm binary>\n',
  );
}

type Manifest = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: any;
  data?: Record<string, string>;
  [key: string]: any;
};

const NAMESPACE = 'shop';
const VALUES_FILES = {
  standalone: 'ci/standalone-values.yaml',
  sidecar: 'values-sidecar-example.yaml',
  monitoring: 'ci/monitoring-values.yaml',
  networkPolicy: 'ci/networkpolicy-values.yaml',
};

let helm = '';
let home = '';

function runHelm(args: string[], cwd = chartDir): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(helm, args, { cwd, env: script.helmEnv(home), maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, stdout: `${stdout}`, stderr: `${stderr}` });
    });
  });
}

/** `helm template` → the parsed manifests; fails the test on a rendering error. */
async function render(
  options: { values?: string[]; set?: string[]; chart?: string; release?: string } = {},
): Promise<Manifest[]> {
  const args = ['template', options.release ?? 'demo', options.chart ?? chartDir, '--namespace', NAMESPACE];
  for (const file of options.values ?? []) args.push('-f', file);
  for (const value of options.set ?? []) args.push('--set', value);
  const result = await runHelm(args);
  if (result.code !== 0) throw new Error(`helm ${args.join(' ')} failed (${result.code}):\n${result.stderr}`);
  return parseAllDocuments(result.stdout)
    .map((doc) => {
      if (doc.errors.length > 0) throw new Error(`invalid YAML from helm template: ${doc.errors[0]?.message}`);
      return doc.toJS() as Manifest | null;
    })
    .filter((doc): doc is Manifest => doc !== null);
}

async function renderError(options: { values?: string[]; set?: string[] }): Promise<string> {
  const args = ['template', 'demo', chartDir, '--namespace', NAMESPACE];
  for (const file of options.values ?? []) args.push('-f', file);
  for (const value of options.set ?? []) args.push('--set', value);
  const result = await runHelm(args);
  expect(result.code, 'helm template should have failed').not.toBe(0);
  return result.stderr;
}

function only(manifests: Manifest[], kind: string): Manifest {
  const found = manifests.filter((m) => m.kind === kind);
  expect(
    found.map((m) => m.metadata.name),
    `exactly one ${kind}`,
  ).toHaveLength(1);
  return found[0]!;
}

const kinds = (manifests: Manifest[]): string[] => manifests.map((m) => m.kind).sort();

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

const FULL_CHECKSUM = 'checksum/mongo-tenant-proxy-config';
const RESTART_CHECKSUM = 'checksum/mongo-tenant-proxy-restart-config';

/** The Deployment's pod template annotations. */
function podAnnotations(manifests: Manifest[]): Record<string, string> {
  return only(manifests, 'Deployment').spec.template.metadata.annotations ?? {};
}

/** The proxy's configuration as it loads the mounted file (no environment). */
async function configOf(manifests: Manifest[]): Promise<ProxyConfig> {
  const text = only(manifests, 'ConfigMap').data!['config.yaml']!;
  const file = path.join(home, `config-${sha256(text).slice(0, 12)}.yaml`);
  await writeFile(file, text);
  return loadConfig({ file, env: {} });
}

/** The checksum the chart puts on pod templates: sha256 of the mounted config.yaml. */
function configChecksum(configMap: Manifest): string {
  return sha256(configMap.data!['config.yaml']!.replace(/\n$/, ''));
}

function expectHardenedContainer(container: any): void {
  expect(container.securityContext).toMatchObject({
    runAsNonRoot: true,
    readOnlyRootFilesystem: true,
    allowPrivilegeEscalation: false,
    privileged: false,
    capabilities: { drop: ['ALL'] },
    seccompProfile: { type: 'RuntimeDefault' },
  });
  expect(container.securityContext.runAsUser).toBeGreaterThan(0);
  expect(container.resources.requests).toMatchObject({ cpu: expect.anything(), memory: expect.anything() });
  expect(container.resources.limits).toMatchObject({ memory: expect.anything() });
}

function expectProbes(container: any, metricsPortName: string, metricsPort: number): void {
  const port = container.ports.find((p: any) => p.name === metricsPortName);
  expect(port, `container port ${metricsPortName}`).toMatchObject({ containerPort: metricsPort, protocol: 'TCP' });
  expect(container.livenessProbe.httpGet).toEqual({ path: '/healthz', port: metricsPortName });
  expect(container.readinessProbe.httpGet).toEqual({ path: '/readyz', port: metricsPortName });
  expect(container.startupProbe.httpGet).toEqual({ path: '/healthz', port: metricsPortName });
}

/** The proxy's configuration validator accepts what the chart mounts. */
async function expectValidProxyConfig(configMap: Manifest): Promise<void> {
  const file = path.join(home, `config-${sha256(configMap.data!['config.yaml']!).slice(0, 12)}.yaml`);
  await writeFile(file, configMap.data!['config.yaml']!);
  expect(() => loadConfig({ file, env: {} })).not.toThrow();
}

describe.skipIf(!runnable)('Helm chart helm/mongo-tenant-proxy', () => {
  beforeAll(async () => {
    const started = Date.now();
    helm = await script.ensureHelm({ log: (message) => process.stderr.write(`[helm.test] ${message}\n`) });
    home = await mkdtemp(path.join(os.tmpdir(), 'mtp-helm-test-'));
    const seconds = (Date.now() - started) / 1000;
    if (seconds > 5) process.stderr.write(`[helm.test] helm ready after ${seconds.toFixed(1)} s\n`);
  }, 900_000);

  afterAll(async () => {
    if (home) await rm(home, { recursive: true, force: true });
  });

  it('is helm v3.22.0', async () => {
    const result = await runHelm(['version', '--short']);
    expect(result.stdout).toMatch(new RegExp(`^${script.HELM_VERSION.replace(/\./g, '\\.')}`));
  });

  it('passes helm lint --strict with the defaults and every shipped values file', async () => {
    const ciFiles = (await readdir(path.join(chartDir, 'ci'))).filter((f) => f.endsWith('.yaml')).map((f) => `ci/${f}`);
    expect(ciFiles).toEqual(
      expect.arrayContaining([VALUES_FILES.standalone, VALUES_FILES.monitoring, VALUES_FILES.networkPolicy]),
    );
    for (const values of [null, VALUES_FILES.sidecar, ...ciFiles]) {
      const result = await runHelm(['lint', '--strict', '.', ...(values ? ['-f', values] : [])]);
      expect(result.code, `helm lint ${values ?? '(defaults)'}:\n${result.stdout}${result.stderr}`).toBe(0);
      expect(result.stdout).toContain('0 chart(s) failed');
    }
  });

  it('keeps image.tag equal to the chart appVersion (the sidecar templates read the tag from values)', async () => {
    const chart = parse(await readFile(path.join(chartDir, 'Chart.yaml'), 'utf8'));
    const values = parse(await readFile(path.join(chartDir, 'values.yaml'), 'utf8'));
    expect(values.image.tag).toBe(chart.appVersion);
  });

  describe('standalone (default values)', () => {
    let manifests: Manifest[];
    beforeAll(async () => {
      manifests = await render({ values: [VALUES_FILES.standalone] });
    });

    it('renders a Deployment, Service, ConfigMap, ServiceAccount and PodDisruptionBudget, no optional objects', () => {
      expect(kinds(manifests)).toEqual(['ConfigMap', 'Deployment', 'PodDisruptionBudget', 'Service', 'ServiceAccount']);
      for (const manifest of manifests) expect(manifest.metadata.namespace).toBe(NAMESPACE);
    });

    it('runs the proxy with the mounted ConfigMap, hardened, with probes on /healthz and /readyz', async () => {
      const deployment = only(manifests, 'Deployment');
      const configMap = only(manifests, 'ConfigMap');
      const pod = deployment.spec.template.spec;
      expect(pod.containers).toHaveLength(1);
      const [container] = pod.containers;
      expect(container.args).toEqual(['serve', '--config', '/etc/mongo-tenant-proxy/config/config.yaml']);
      expect(container.image).toBe('mongo-tenant-proxy:0.1.0');
      expectHardenedContainer(container);
      expectProbes(container, 'metrics', 9216);
      expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
      expect(pod.automountServiceAccountToken).toBe(false);
      expect(pod.enableServiceLinks).toBe(false);
      // Freed native memory goes back to the system after big messages (docs/deploy.md, "Memory").
      expect(container.env).toContainEqual({ name: 'MALLOC_ARENA_MAX', value: '2' });
      expect(container.env).toContainEqual({ name: 'MALLOC_MMAP_THRESHOLD_', value: '65536' });

      const configVolume = pod.volumes.find((v: any) => v.name === 'mtp-config');
      expect(configVolume.configMap.name).toBe(configMap.metadata.name);
      expect(container.volumeMounts).toContainEqual({
        name: 'mtp-config',
        mountPath: '/etc/mongo-tenant-proxy/config',
        readOnly: true,
      });
      // The only writable place: a small emptyDir on /tmp.
      expect(pod.volumes.find((v: any) => v.name === 'mtp-tmp')).toMatchObject({ emptyDir: { sizeLimit: '16Mi' } });

      const config = parse(configMap.data!['config.yaml']!);
      expect(config.metrics.listen).toBe('0.0.0.0:9216');
      expect(config.listeners[0].listen).toBe('0.0.0.0:27018');
      await expectValidProxyConfig(configMap);
    });

    it("selects its own pods from the Service and PodDisruptionBudget, on the listeners' ports", () => {
      const deployment = only(manifests, 'Deployment');
      const podLabels = deployment.spec.template.metadata.labels;
      const service = only(manifests, 'Service');
      const pdb = only(manifests, 'PodDisruptionBudget');
      expect(podLabels).toMatchObject(service.spec.selector);
      expect(podLabels).toMatchObject(deployment.spec.selector.matchLabels);
      expect(podLabels).toMatchObject(pdb.spec.selector.matchLabels);
      expect(pdb.spec.maxUnavailable).toBe(1);
      const containerPorts = deployment.spec.template.spec.containers[0].ports;
      expect(service.spec.ports).toEqual([
        { name: 'mongodb', port: 27018, targetPort: 'mongodb', protocol: 'TCP' },
        { name: 'metrics', port: 9216, targetPort: 'metrics', protocol: 'TCP' },
      ]);
      for (const port of service.spec.ports) expect(containerPorts.map((p: any) => p.name)).toContain(port.targetPort);
    });

    it('rollOnConfigChange true: a checksum of the whole config, so any config change rolls the pods', async () => {
      const always = ['rollOnConfigChange=true'];
      const first = await render({ values: [VALUES_FILES.standalone], set: always });
      expect(podAnnotations(first)).toEqual({ [FULL_CHECKSUM]: configChecksum(only(first, 'ConfigMap')) });
      expect(podAnnotations(await render({ values: [VALUES_FILES.standalone], set: always }))).toEqual(
        podAnnotations(first),
      );

      const changed = await render({ values: [VALUES_FILES.standalone], set: [...always, 'config.log.level=debug'] });
      expect(podAnnotations(changed)[FULL_CHECKSUM]).not.toBe(podAnnotations(first)[FULL_CHECKSUM]);
      expect(podAnnotations(changed)[FULL_CHECKSUM]).toBe(configChecksum(only(changed, 'ConfigMap')));

      // Not a config change: the checksum stays.
      expect(
        podAnnotations(await render({ values: [VALUES_FILES.standalone], set: [...always, 'replicaCount=5'] })),
      ).toEqual(podAnnotations(first));
      // false: no annotation at all; anything else is an error.
      expect(
        podAnnotations(await render({ values: [VALUES_FILES.standalone], set: ['rollOnConfigChange=false'] })),
      ).toEqual({});
      expect(await renderError({ set: ['rollOnConfigChange=sometimes'] })).toContain(
        'rollOnConfigChange: "sometimes" is not true, false or auto',
      );
    });

    it('rollOnConfigChange auto (default): with hot reload on, only settings the proxy cannot reload roll the pods, as the proxy decides', async () => {
      expect(Object.keys(podAnnotations(manifests))).toEqual([RESTART_CHECKSUM]);
      const base = await configOf(manifests);
      const listener = { name: 'default', listen: '0.0.0.0:27018', methods: [] };
      const cases: Array<[string, Record<string, unknown>, boolean]> = [
        // Reloaded live by the proxy (docs/hot-reload.md): no roll.
        ['log level', { log: { level: 'debug' } }, false],
        ['namespace policy', { isolation: { namespaces: [{ match: 'app.secrets', access: 'denied' }] } }, false],
        ['limits and timeouts', { limits: { maxConnectionsPerTenant: 5, clientIdleTimeoutMS: 1000 } }, false],
        [
          'identity and compression',
          { identity: { scram: { mechanisms: ['SCRAM-SHA-256'] } }, compression: { zlibLevel: 1 } },
          false,
        ],
        // Bound at start: the pods roll.
        ['upstream URI', { upstream: { uri: 'mongodb://other:27017/' } }, true],
        ['upstream timeout', { upstream: { connectTimeoutMS: 500 } }, true],
        ['listener address', { listeners: [{ ...listener, listen: '0.0.0.0:27019' }] }, true],
        ['listener name', { listeners: [{ ...listener, name: 'renamed' }] }, true],
        [
          'listener TLS turned on',
          { listeners: [{ ...listener, tls: { certFile: '/tls/tls.crt', keyFile: '/tls/tls.key' } }] },
          true,
        ],
        ['listener added', { listeners: [listener, { ...listener, name: 'second', listen: '0.0.0.0:27019' }] }, true],
        ['metrics address', { metrics: { listen: '0.0.0.0:9300' } }, true],
        ['tenant label budget', { identity: { maxTenantLabels: 5 } }, true],
        ['session key', { isolation: { sessionKey: 'k'.repeat(32) } }, true],
        ['TLS handshake timeout', { limits: { tlsHandshakeTimeoutMS: 1000 } }, true],
      ];
      for (const [name, config, rolls] of cases) {
        const valuesFile = path.join(home, `values-${sha256(name).slice(0, 12)}.yaml`);
        await writeFile(valuesFile, stringify({ config }));
        const rendered = await render({ values: [VALUES_FILES.standalone, valuesFile] });
        const { requiresRestart } = planReload(base, await configOf(rendered));
        expect(requiresRestart.length > 0, `the proxy's verdict on ${name}: ${requiresRestart.join(', ')}`).toBe(rolls);
        const checksum = podAnnotations(rendered)[RESTART_CHECKSUM];
        if (rolls) expect(checksum, `${name} rolls the pods`).not.toBe(podAnnotations(manifests)[RESTART_CHECKSUM]);
        else expect(checksum, `${name} is reloaded in place`).toBe(podAnnotations(manifests)[RESTART_CHECKSUM]);
      }

      // Hot reload turned off in the proxy: every change rolls the pods.
      const off = ['config.reload.watchConfigFile=false'];
      const withoutReload = await render({ values: [VALUES_FILES.standalone], set: off });
      expect(podAnnotations(withoutReload)).toEqual({
        [FULL_CHECKSUM]: configChecksum(only(withoutReload, 'ConfigMap')),
      });
      const levelChanged = await render({ values: [VALUES_FILES.standalone], set: [...off, 'config.log.level=debug'] });
      expect(podAnnotations(levelChanged)[FULL_CHECKSUM]).not.toBe(podAnnotations(withoutReload)[FULL_CHECKSUM]);
    });
  });

  describe('monitoring enabled', () => {
    let manifests: Manifest[];
    beforeAll(async () => {
      manifests = await render({ values: [VALUES_FILES.monitoring] });
    });

    it('renders the ServiceMonitor, PodMonitor, PrometheusRule and dashboard ConfigMap only when enabled', async () => {
      expect(kinds(manifests)).toEqual(
        expect.arrayContaining(['ServiceMonitor', 'PodMonitor', 'PrometheusRule', 'Deployment', 'Service']),
      );
      for (const kind of ['ServiceMonitor', 'PodMonitor', 'PrometheusRule']) {
        expect(only(manifests, kind).apiVersion).toBe('monitoring.coreos.com/v1');
      }
      const defaults = await render();
      for (const kind of ['ServiceMonitor', 'PodMonitor', 'PrometheusRule', 'NetworkPolicy']) {
        expect(kinds(defaults)).not.toContain(kind);
      }
      expect(defaults.filter((m) => m.metadata.labels?.grafana_dashboard !== undefined)).toEqual([]);
    });

    it("scrapes /metrics on the Service's and the pods' metrics port", () => {
      const service = only(manifests, 'Service');
      const serviceMonitor = only(manifests, 'ServiceMonitor');
      expect(serviceMonitor.metadata.labels).toMatchObject({ release: 'prometheus' });
      expect(service.metadata.labels).toMatchObject(serviceMonitor.spec.selector.matchLabels);
      expect(serviceMonitor.spec.namespaceSelector.matchNames).toEqual([NAMESPACE]);
      expect(serviceMonitor.spec.endpoints).toEqual([
        expect.objectContaining({ port: 'metrics', path: '/metrics', interval: '30s' }),
      ]);
      expect(service.spec.ports.map((p: any) => p.name)).toContain('metrics');

      const podMonitor = only(manifests, 'PodMonitor');
      const deployment = only(manifests, 'Deployment');
      expect(deployment.spec.template.metadata.labels).toMatchObject(podMonitor.spec.selector.matchLabels);
      expect(podMonitor.spec.podMetricsEndpoints).toEqual([
        expect.objectContaining({ port: 'metrics', path: '/metrics' }),
      ]);
    });

    it("ships the Grafana dashboard in a ConfigMap labelled for Grafana's sidecar, identical to dashboards/", async () => {
      const dashboards = manifests.filter((m) => m.metadata.labels?.grafana_dashboard === '1');
      expect(dashboards).toHaveLength(1);
      const shipped = await readFile(path.join(chartDir, 'dashboards', 'mongo-tenant-proxy.json'), 'utf8');
      const rendered = dashboards[0]!.data!['mongo-tenant-proxy.json']!;
      expect(JSON.parse(rendered)).toEqual(JSON.parse(shipped));
    });

    it('uses in the dashboard and the alerts only metrics the proxy exports', async () => {
      const exported = new Set<string>();
      // As a started proxy exports them (startProxy reports the loaded configuration).
      const proxyMetrics = new ProxyMetrics({ version: 'test' });
      proxyMetrics.configLoaded();
      const registry = proxyMetrics.registry;
      for (const metric of await registry.getMetricsAsJSON()) {
        exported.add(metric.name);
        if (`${metric.type}` === 'histogram')
          for (const suffix of ['_bucket', '_sum', '_count']) exported.add(metric.name + suffix);
      }
      const dashboard = JSON.parse(
        await readFile(path.join(chartDir, 'dashboards', 'mongo-tenant-proxy.json'), 'utf8'),
      );
      const exprs: string[] = [];
      const walk = (node: any): void => {
        if (Array.isArray(node)) node.forEach(walk);
        else if (node && typeof node === 'object') {
          for (const [key, value] of Object.entries(node)) {
            if ((key === 'expr' || key === 'definition') && typeof value === 'string') exprs.push(value);
            else walk(value);
          }
        }
      };
      walk(dashboard);
      const rule = only(manifests, 'PrometheusRule');
      const alerts = rule.spec.groups.flatMap((group: any) => group.rules);
      exprs.push(...alerts.map((alert: any) => String(alert.expr)));

      const used = new Set(exprs.flatMap((expr) => expr.match(/\bmongo_tenant_proxy_[a-z0-9_]+/g) ?? []));
      expect(used.size).toBeGreaterThan(15);
      expect([...used].filter((name) => !exported.has(name))).toEqual([]);
      for (const core of [
        'mongo_tenant_proxy_operations_total',
        'mongo_tenant_proxy_operation_duration_seconds_bucket',
        'mongo_tenant_proxy_client_connections',
        'mongo_tenant_proxy_tenant_operations_total',
        'mongo_tenant_proxy_authentications_total',
        'mongo_tenant_proxy_policy_decisions_total',
        'mongo_tenant_proxy_upstream_connections',
        'mongo_tenant_proxy_protocol_errors_total',
        'mongo_tenant_proxy_upstream_wait_seconds_bucket',
        'mongo_tenant_proxy_proxy_overhead_seconds_bucket',
        'mongo_tenant_proxy_tenant_operations_in_flight',
        'mongo_tenant_proxy_tls_handshakes_total',
        'mongo_tenant_proxy_open_cursors',
        'mongo_tenant_proxy_circuit_breaker_state',
        'mongo_tenant_proxy_upstream_pool_wait_queue',
        'mongo_tenant_proxy_upstream_retries_total',
        'mongo_tenant_proxy_config_reloads_total',
      ]) {
        expect(used, core).toContain(core);
      }
      expect(alerts.map((alert: any) => alert.alert)).toEqual(
        expect.arrayContaining([
          'MongoTenantProxyDown',
          'MongoTenantProxyAuthenticationFailures',
          'MongoTenantProxyDenialsSpike',
        ]),
      );
      // Every panel queries through the dashboard's data source variable.
      for (const panel of dashboard.panels.filter((p: any) => p.type !== 'row')) {
        expect(panel.datasource, panel.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
      }
      const ids = dashboard.panels.map((p: any) => p.id);
      expect(new Set(ids).size).toBe(ids.length);
    });

    it('renders the runbook alerts, each with thresholds from values, a runbook_url and a docs/runbook.md section', async () => {
      const rule = only(manifests, 'PrometheusRule');
      expect(rule.metadata.labels).toMatchObject({ release: 'prometheus' });
      const alerts: any[] = rule.spec.groups.flatMap((group: any) => group.rules);
      const byName = new Map(alerts.map((alert) => [alert.alert as string, alert]));
      const runbook = [
        'MongoTenantProxyDown',
        'MongoTenantProxyCircuitBreakerOpen',
        'MongoTenantProxyAuthenticationFailures',
        'MongoTenantProxyDenialsSpike',
        'MongoTenantProxyUpstreamErrors',
        'MongoTenantProxyPoolSaturated',
        'MongoTenantProxyConfigReloadFailed',
        'MongoTenantProxyAuditOnlyMode',
        'MongoTenantProxyHighLatency',
        'MongoTenantProxyConnectionsRefused',
      ];
      expect([...byName.keys()].sort()).toEqual([...runbook].sort());
      const runbookPage = await readFile(path.join(root, 'docs', 'runbook.md'), 'utf8');
      for (const name of runbook) {
        const alert = byName.get(name)!;
        expect(runbookPage, `docs/runbook.md section for ${name}`).toContain(`\n## ${name}\n`);
        expect(['critical', 'warning']).toContain(alert.labels.severity);
        expect(alert.annotations.summary, name).toBeTruthy();
        expect(alert.annotations.description, name).toBeTruthy();
        expect(alert.annotations.runbook_url).toBe(
          `https://git.example.com/platform/mongo-tenant-proxy/blob/main/docs/runbook.md#${name.toLowerCase()}`,
        );
        expect(String(alert.expr)).not.toMatch(/<no value>|\{\{/);
      }
      expect(byName.get('MongoTenantProxyCircuitBreakerOpen').expr).toContain(
        'mongo_tenant_proxy_circuit_breaker_state) == 2',
      );
      expect(byName.get('MongoTenantProxyPoolSaturated').expr).toMatch(
        /mongo_tenant_proxy_upstream_pool_wait_queue\) > 0$/,
      );
      expect(byName.get('MongoTenantProxyConfigReloadFailed').expr).toContain(
        'mongo_tenant_proxy_config_last_reload_successful) == 0',
      );
      expect(byName.get('MongoTenantProxyAuthenticationFailures').expr).toMatch(/outcome="failure".*> 1$/);

      const tuned = await render({
        values: [VALUES_FILES.monitoring],
        set: [
          'prometheusRule.thresholds.poolWaitQueueLength=5',
          'prometheusRule.thresholds.denialsPerSecond=0.5',
          'prometheusRule.runbookUrl=',
        ],
      });
      const tunedAlerts: any[] = only(tuned, 'PrometheusRule').spec.groups.flatMap((group: any) => group.rules);
      const tunedByName = new Map(tunedAlerts.map((alert) => [alert.alert as string, alert]));
      expect(tunedByName.get('MongoTenantProxyPoolSaturated').expr).toMatch(/> 5$/);
      expect(tunedByName.get('MongoTenantProxyDenialsSpike').expr).toMatch(/> 0\.5$/);
      for (const alert of tunedAlerts) expect(alert.annotations).not.toHaveProperty('runbook_url');
    });
  });

  describe('network policy, TLS and credentials from existing Secrets', () => {
    let manifests: Manifest[];
    beforeAll(async () => {
      manifests = await render({ values: [VALUES_FILES.networkPolicy] });
    });

    it('renders a NetworkPolicy for the listeners and the metrics port, egress limited to DNS and the upstream', () => {
      const policy = only(manifests, 'NetworkPolicy');
      const deployment = only(manifests, 'Deployment');
      const container = deployment.spec.template.spec.containers[0];
      expect(deployment.spec.template.metadata.labels).toMatchObject(policy.spec.podSelector.matchLabels);
      expect(policy.spec.policyTypes).toEqual(['Ingress', 'Egress']);
      const ingressPorts = policy.spec.ingress.flatMap((rule: any) => rule.ports.map((p: any) => p.port));
      expect(ingressPorts.sort()).toEqual(['metrics', 'mongodb']);
      for (const name of ingressPorts) expect(container.ports.map((p: any) => p.name)).toContain(name);
      expect(policy.spec.ingress[0].from).toEqual([{ namespaceSelector: { matchLabels: { 'tenant-apps': 'true' } } }]);
      expect(policy.spec.egress[0].ports).toEqual([
        { port: 53, protocol: 'UDP' },
        { port: 53, protocol: 'TCP' },
      ]);
      expect(policy.spec.egress[1]).toEqual({
        to: [{ ipBlock: { cidr: '10.20.0.0/16' } }],
        ports: [{ port: 27017, protocol: 'TCP' }],
      });
      // Off by default, and never without enabled.
      expect(container.ports.find((p: any) => p.name === 'mongodb').containerPort).toBe(27019);
    });

    it('mounts the TLS and credentials Secrets read-only and takes the upstream URI from a Secret', async () => {
      const deployment = only(manifests, 'Deployment');
      const pod = deployment.spec.template.spec;
      const container = pod.containers[0];
      expect(pod.volumes).toContainEqual({
        name: 'mtp-tls-0',
        secret: { secretName: 'proxy-tls', defaultMode: 0o444 },
      });
      expect(pod.volumes).toContainEqual({
        name: 'mtp-credentials',
        secret: { secretName: 'proxy-credentials', defaultMode: 0o444 },
      });
      expect(container.volumeMounts).toContainEqual({
        name: 'mtp-tls-0',
        mountPath: '/etc/mongo-tenant-proxy/tls/proxy-tls',
        readOnly: true,
      });
      expect(container.volumeMounts).toContainEqual({
        name: 'mtp-credentials',
        mountPath: '/etc/mongo-tenant-proxy/credentials',
        readOnly: true,
      });
      for (const mount of container.volumeMounts)
        if (mount.name !== 'mtp-tmp') expect(mount.readOnly, mount.name).toBe(true);
      expect(container.env).toContainEqual({
        name: 'MTP_UPSTREAM',
        valueFrom: { secretKeyRef: { name: 'proxy-upstream', key: 'uri' } },
      });
      // No secret value is in any rendered object.
      expect(manifests.filter((m) => m.kind === 'Secret')).toEqual([]);
      await expectValidProxyConfig(only(manifests, 'ConfigMap'));
    });
  });

  describe('sidecar mode', () => {
    it('renders only the ConfigMap on its own (the application chart adds the container)', async () => {
      const manifests = await render({ values: [VALUES_FILES.sidecar] });
      expect(kinds(manifests)).toEqual(['ConfigMap']);
      await expectValidProxyConfig(only(manifests, 'ConfigMap'));

      const withPodMonitor = await render({ values: [VALUES_FILES.sidecar], set: ['podMonitor.enabled=true'] });
      const podMonitor = only(withPodMonitor, 'PodMonitor');
      expect(podMonitor.spec.selector.matchLabels).toEqual({ 'app.kubernetes.io/name': 'acme-api' });
      expect(podMonitor.spec.podMetricsEndpoints[0].port).toBe('mtp-metrics');

      expect(await renderError({ values: [VALUES_FILES.sidecar], set: ['serviceMonitor.enabled=true'] })).toContain(
        'serviceMonitor needs mode standalone',
      );
    });

    it("adds the proxy to an application chart's pods as a native sidecar sharing the pod's loopback", async () => {
      const app = await writeApplicationChart();
      const lint = await runHelm(['lint', '--strict', app], app);
      expect(lint.code, `${lint.stdout}${lint.stderr}`).toBe(0);
      const manifests = await render({ chart: app, release: 'shop' });

      const deployment = only(manifests, 'Deployment');
      expect(deployment.metadata.name).toBe('acme-api');
      const pod = deployment.spec.template.spec;
      expect(pod.initContainers).toHaveLength(1);
      const [sidecar] = pod.initContainers;
      expect(sidecar.name).toBe('mongo-tenant-proxy');
      expect(sidecar.restartPolicy).toBe('Always');
      expect(sidecar.image).toBe('mongo-tenant-proxy:0.1.0');
      expect(sidecar.args).toEqual(['serve', '--config', '/etc/mongo-tenant-proxy/config/config.yaml']);
      expectHardenedContainer(sidecar);
      expectProbes(sidecar, 'mtp-metrics', 9216);
      expect(sidecar.env).toContainEqual({
        name: 'MTP_UPSTREAM',
        valueFrom: { secretKeyRef: { name: 'acme-mongo-tenant-proxy-upstream', key: 'uri' } },
      });
      // The application's own container is untouched and talks to the proxy over loopback.
      expect(pod.containers.map((c: any) => c.name)).toEqual(['api']);
      expect(pod.containers[0].env).toContainEqual({
        name: 'MONGODB_URI',
        value: 'mongodb://127.0.0.1:27018/?directConnection=true',
      });

      // The dependency renders the ConfigMap the sidecar mounts, and nothing standalone.
      const configMap = only(manifests, 'ConfigMap');
      expect(kinds(manifests)).toEqual(['ConfigMap', 'Deployment']);
      const configVolume = pod.volumes.find((v: any) => v.name === 'mtp-config');
      expect(configVolume.configMap.name).toBe(configMap.metadata.name);
      expect(pod.volumes.map((v: any) => v.name)).toEqual(
        expect.arrayContaining(['app-data', 'mtp-config', 'mtp-tmp']),
      );
      // rollOnConfigChange auto with hot reload on: only restart-only settings roll the application's pods.
      expect(Object.keys(deployment.spec.template.metadata.annotations)).toEqual([RESTART_CHECKSUM]);
      expect(deployment.spec.template.metadata.annotations[RESTART_CHECKSUM]).toMatch(/^[0-9a-f]{64}$/);

      const config = parse(configMap.data!['config.yaml']!);
      expect(config.listeners).toEqual([
        { name: 'app', listen: '127.0.0.1:27018', methods: ['static'], staticTenant: 'acme' },
      ]);
      expect(config.metrics.listen).toBe('0.0.0.0:9216');
      expect(sidecar.ports).toContainEqual({ name: 'mtp-mongodb', containerPort: 27018, protocol: 'TCP' });
    });
  });

  it('refuses configurations Kubernetes could not probe or reach, naming the field', async () => {
    expect(await renderError({ set: ['config.metrics.listen=127.0.0.1:9216'] })).toContain('config.metrics.listen');
    expect(await renderError({ set: ['config.metrics.listen=off'] })).toContain('config.metrics.listen must be set');
    expect(await renderError({ set: ['config.listeners[0].listen=127.0.0.1:27018'] })).toContain(
      'config.listeners[0].listen',
    );
    expect(await renderError({ set: ['config.listeners[0].listen=0.0.0.0:0'] })).toContain('needs a fixed port');
    expect(await renderError({ set: ['mode=daemonset'] })).toContain('is not standalone or sidecar');
    expect(
      await renderError({
        values: [VALUES_FILES.sidecar],
        set: ['podMonitor.enabled=true', 'podMonitor.selector=null'],
      }),
    ).toContain('podMonitor.selector');
  });
});

/**
 * The sidecar instructions in docs/deploy.md: its three `include` lines (for the pod template's
 * annotations, initContainers and volumes) and its `helm dependency update` step.
 */
async function readmeSidecarSteps(): Promise<{
  annotations: string;
  initContainers: string;
  volumes: string;
  dependencyUpdate: boolean;
}> {
  const deploy = await readFile(path.join(root, 'docs', 'deploy.md'), 'utf8');
  const section = deploy.slice(deploy.indexOf('**Sidecar**'), deploy.indexOf('In both modes:'));
  const include = (template: string): string => {
    const line = section.split('\n').find((text) => text.includes(`include "mongo-tenant-proxy.${template}"`));
    expect(line, `docs/deploy.md sidecar section includes mongo-tenant-proxy.${template}`).toBeDefined();
    return line!.trim();
  };
  return {
    annotations: include('podAnnotations'),
    initContainers: include('sidecar'),
    volumes: include('sidecarVolumes'),
    dependencyUpdate: /node scripts\/helm\.mjs dependency update /.test(section),
  };
}

/**
 * An application chart as docs/deploy.md describes it: this chart as a dependency (alias
 * tenantProxy) with the sidecar example values, the named templates it shows in its Deployment,
 * and the dependency fetched with `helm dependency update`.
 */
async function writeApplicationChart(): Promise<string> {
  const steps = await readmeSidecarSteps();
  expect(steps.dependencyUpdate, 'docs/deploy.md says to run helm dependency update').toBe(true);
  const app = path.join(home, 'acme-api');
  await rm(app, { recursive: true, force: true });
  await mkdir(path.join(app, 'templates'), { recursive: true });
  await writeFile(
    path.join(app, 'Chart.yaml'),
    stringify({
      apiVersion: 'v2',
      name: 'acme-api',
      version: '1.0.0',
      icon: 'https://example.com/icon.png',
      dependencies: [
        { name: 'mongo-tenant-proxy', version: '0.1.0', repository: `file://${chartDir}`, alias: 'tenantProxy' },
      ],
    }),
  );
  const sidecarValues = parse(await readFile(path.join(chartDir, VALUES_FILES.sidecar), 'utf8'));
  await writeFile(path.join(app, 'values.yaml'), stringify({ image: 'acme/api:1.2.3', tenantProxy: sidecarValues }));
  await writeFile(
    path.join(app, 'templates', 'deployment.yaml'),
    `apiVersion: apps/v1
kind: Deployment
metadata:
  name: acme-api
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: acme-api
  template:
    metadata:
      labels:
        app.kubernetes.io/name: acme-api
      annotations:
        ${steps.annotations}
    spec:
      initContainers:
        ${steps.initContainers}
      containers:
        - name: api
          image: {{ .Values.image }}
          env:
            - name: MONGODB_URI
              value: mongodb://127.0.0.1:27018/?directConnection=true
          volumeMounts:
            - name: app-data
              mountPath: /data
      volumes:
        - name: app-data
          emptyDir: {}
        ${steps.volumes}
`,
  );
  const update = await runHelm(['dependency', 'update', app], app);
  expect(update.code, `${update.stdout}${update.stderr}`).toBe(0);
  return app;
}
