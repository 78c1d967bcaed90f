# syntax=docker/dockerfile:1
#
# mongo-tenant-proxy container image.
#
#   docker build -t mongo-tenant-proxy .
#   docker run --read-only -p 27018:27018 -p 9216:9216 \
#     -v "$PWD/config.yaml:/etc/mongo-tenant-proxy/config.yaml:ro" \
#     -v "$PWD/tls:/etc/mongo-tenant-proxy/tls:ro" mongo-tenant-proxy
#
# Runs as a non-root user (uid/gid 1000), writes nothing (a read-only root filesystem works), and
# runs Node as PID 1 with no shell in between, so SIGTERM reaches the proxy, which drains and exits
# 0. The configuration is mounted at /etc/mongo-tenant-proxy/config.yaml (the default one below
# serves only the handshake); certificates, keys and credential files are mounted anywhere under
# /etc/mongo-tenant-proxy and named in it. In a container the metrics listener (/metrics,
# /healthz) must listen on 0.0.0.0 so the HEALTHCHECK, probes and Prometheus reach it.

ARG NODE_IMAGE=node:26-trixie-slim

# ---- build: compile TypeScript to dist/ --------------------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json .npmrc ./
# Only the TypeScript compiler runs here: no install scripts (the test-only tools' native addons).
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# ---- deps: production dependencies only ---------------------------------------------------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# The native codecs (zstd, snappy, crc32) come as prebuilt N-API packages: no compiler needed.
# koffi (malloc_trim, docs/deploy.md "Memory") ships a build for every platform: only this one's stays.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force \
 && keep="$(node -p 'process.platform + "_" + process.arch')" \
 && find node_modules/koffi/build/koffi -mindepth 1 -maxdepth 1 -type d ! -name "$keep" -exec rm -rf {} +

# ---- runtime ------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
# npm, npx, corepack and yarn are never used at run time: less to patch, less to exploit.
RUN rm -rf /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/corepack /opt/yarn-* \
      /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack /usr/local/bin/yarn /usr/local/bin/yarnpkg \
 && mkdir -p /etc/mongo-tenant-proxy

# The default configuration: replace it by mounting a file (or a ConfigMap) over it.
COPY <<EOF /etc/mongo-tenant-proxy/config.yaml
# Default container configuration: see /app/config/example.yaml for every option.
# Mount your own file here. The upstream URI can also come from MTP_UPSTREAM.
listeners:
  - name: default
    listen: 0.0.0.0:27018
    methods: []
upstream:
  uri: mongodb://mongodb:27017/
metrics:
  # All interfaces: the HEALTHCHECK, Kubernetes probes and Prometheus connect from outside
  # the process's loopback (the HEALTHCHECK itself uses 127.0.0.1).
  listen: 0.0.0.0:9216
EOF

WORKDIR /app
# Memory of big messages goes back to the system once they are answered (docs/deploy.md, "Memory"):
# MALLOC_ARENA_MAX: glibc gives each thread (libuv pool, V8 helpers) its own malloc arena and keeps
# freed memory in them; two arenas return it. MALLOC_MMAP_THRESHOLD_: glibc raises its mmap
# threshold (up to 32 MiB) after each big free, so later big buffers and the 64 KiB socket reads
# land in the heap, fragment it and are never returned; fixed at 64 KiB they are mmapped and
# unmapped when freed. --expose-gc (ENTRYPOINT): the proxy runs one full collection when a burst is over,
# then glibc's malloc_trim (through koffi) for the free pages left inside the heap.
ENV NODE_ENV=production \
    HEALTHCHECK_URL=http://127.0.0.1:9216/healthz \
    MALLOC_ARENA_MAX=2 \
    MALLOC_MMAP_THRESHOLD_=65536
# Everything root-owned and read-only for the proxy's user.
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY config ./config

USER 1000:1000
EXPOSE 27018 9216

# Node itself, no curl: exit 0 only for a 2xx answer from /healthz within 2 s. HEALTHCHECK_URL
# follows a changed metrics port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch(process.env.HEALTHCHECK_URL || 'http://127.0.0.1:9216/healthz', { signal: AbortSignal.timeout(2000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "--expose-gc", "bin/mongo-tenant-proxy"]
CMD ["serve", "--config", "/etc/mongo-tenant-proxy/config.yaml"]
