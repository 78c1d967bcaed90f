// The proxy of bench/hello-burst.mjs: dist/ (run `npm run build` first), listeners `noisy` and
// `bystander` (static tenants), silent. argv: upstream URI, turnMS (StartOptions.turnMS).
// Sends {addresses} when listening; stops on 'stop'.
import { startProxy } from '../dist/main.js';
import { defaultConfig } from '../dist/config/index.js';

const [upstreamUri, turnMS] = process.argv.slice(2);
const defaults = structuredClone(defaultConfig());
const config = {
  ...defaults,
  upstream: { ...defaults.upstream, uri: upstreamUri },
  metrics: { ...defaults.metrics, listen: null },
  log: { ...defaults.log, level: 'silent' },
  limits: { ...defaults.limits, maxConnections: 20_000, maxConnectionsPerTenant: 15_000 },
  listeners: ['noisy', 'bystander'].map((tenant) => ({
    name: tenant,
    listen: { host: '127.0.0.1', port: 0 },
    tls: null,
    methods: ['static'],
    staticTenant: tenant,
  })),
};
const proxy = await startProxy(config, { turnMS: Number(turnMS) });
process.send({ addresses: proxy.addresses });
process.on('message', async (message) => {
  if (message !== 'stop') return;
  await proxy.close();
  process.exit(0);
});
