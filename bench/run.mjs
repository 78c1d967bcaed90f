#!/usr/bin/env node
// `npm run bench`: the same workloads, in one run, against the same upstream four ways:
//   direct        the driver talks to the upstream
//   pipe          through a minimal TCP pipe in its own process (the floor any proxy pays)
//   mongobetween  through Coinbase's Go connection pooler (scripts/mongobetween.mjs; built into the
//                 cache on first use), the comparison point of issue 16
//   proxy         through mongo-tenant-proxy (dist/) in its own process
// Prints a table and writes every number to bench/results/latest.json. A benchmark, not a test:
// it never fails because of a number. See docs/benchmark.md.
//
// Environment:
//   MONGODB_URI            upstream to use (default: a throwaway FerretDB from scripts/ferretdb.mjs)
//   BENCH_UPSTREAM         documentdb | ferretdb2: a throwaway DocumentDB (PostgreSQL 15) behind its
//                          gateway or FerretDB v2 instead (scripts/documentdb.mjs; first build as root)
//   BENCH_OPS              operations per small workload at concurrency 1 (default 5000)
//   BENCH_OPS_C32          operations per small workload at concurrency 32 (default 4 × BENCH_OPS)
//   BENCH_WARMUP_OPS       warm-up operations before each small workload (default 500)
//   BENCH_ROUNDS           slices each workload runs in, rotating the target order (default 3)
//   BENCH_FIND_DOCS        documents the find-one workload picks from (default 100: FerretDB scans)
//   BENCH_CURSOR_DOCS      documents in the cursor workload (default 100000)
//   BENCH_INSERTMANY_DOCS  documents inserted by the insertMany workload (default 50000)
//   BENCH_TARGETS          comma-separated subset of direct,pipe,mongobetween,proxy (default all four)
//   BENCH_DRIVER           6 | 7: the Node driver major for direct, pipe and proxy (default 6 when
//                          mongobetween is a target, else 7); mongobetween is always driven by 6.x,
//                          since it advertises maxWireVersion 8 and driver 7 requires 9
//   BENCH_IDLE             idle client connections opened to each middle target (default 10000;
//                          0 skips the measurement)
//   BENCH_WORKLOADS        comma-separated subset of workload names (default all; `none`: no workload)
//   BENCH_OUT              JSON output file (default bench/results/latest.json)
//   BENCH_TIMEOUT_S        give up after this many seconds (default 1800)
//   BENCH_PROXY_CONFIG     JSON merged over the proxy's configuration (runtime shape, see
//                          src/config/types.ts; objects merge, arrays replace)
//   BENCH_PROXY_NODE_FLAGS Node flags added to the proxy child's only, split on spaces (e.g.
//                          `--cpu-prof --cpu-prof-dir=/tmp/prof`; see docs/benchmark.md, Profiling)
//   BENCH_POOL_CLIENTS     client connections of the pool-500 scenario (default 500)
//   BENCH_POOL_SIZE        its upstream.maxPoolSize (default 10)
//   BENCH_POOL_OPS         its find-one operations (default BENCH_OPS)
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MongoClient as MongoClient7 } from 'mongodb';
import { MongoClient as MongoClient6 } from 'mongodb6';
import { ConnectionString } from 'mongodb-connection-string-url';
import { PROXY_RUNTIME, TargetChild, cpuMicros } from './lib/child.mjs';
import { closeAll, openIdleConnections, stillOpen } from './lib/idle.mjs';
import { deepMerge } from './lib/merge.mjs';
import { ProcTarget } from './lib/proc.mjs';
import { formatReport } from './lib/report.mjs';
import { ratio, round, summarize } from './lib/stats.mjs';
import { POOL_SCENARIO_NAME, runPoolScenario } from './lib/pool-scenario.mjs';
import { seed, workloads } from './lib/workloads.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const ALL_TARGETS = ['direct', 'pipe', 'mongobetween', 'proxy'];
/** The targets with a process of their own between the driver and the upstream. */
const MIDDLE_TARGETS = ['pipe', 'mongobetween', 'proxy'];
const DRIVERS = {
  6: { MongoClient: MongoClient6, module: 'mongodb6' },
  7: { MongoClient: MongoClient7, module: 'mongodb' },
};

const startedAt = Date.now();
const loadAtStart = os.loadavg().map((value) => Math.round(value * 100) / 100);
const log = (message) =>
  process.stderr.write(`[bench ${((Date.now() - startedAt) / 1000).toFixed(1).padStart(5)}s] ${message}\n`);

function intEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw.replaceAll('_', ''));
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name}=${raw} is not a positive integer`);
  return value;
}

function countEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw.replaceAll('_', ''));
  if (!Number.isInteger(value) || value < 0) throw new Error(`${name}=${raw} is not a non-negative integer`);
  return value;
}

function listEnv(name, allowed) {
  const raw = process.env[name];
  if (!raw) return allowed;
  // `none`: no list entry at all (BENCH_WORKLOADS=none with BENCH_IDLE: only the idle measurement).
  if (raw.trim() === 'none') return [];
  const values = raw
    .split(',')
    .map((value) => value.trim())
    .filter(Boolean);
  const unknown = values.filter((value) => !allowed.includes(value));
  if (unknown.length > 0) throw new Error(`${name}: unknown ${unknown.join(', ')} (known: ${allowed.join(', ')})`);
  return allowed.filter((value) => values.includes(value));
}

function jsonEnv(name) {
  const raw = process.env[name];
  if (!raw) return null;
  try {
    return JSON.parse(raw);
  } catch (error) {
    throw new Error(`${name} is not valid JSON: ${error.message}`, { cause: error });
  }
}

function readSettings() {
  const opsC1 = intEnv('BENCH_OPS', 5_000);
  const targets = listEnv('BENCH_TARGETS', ALL_TARGETS);
  const driver = process.env.BENCH_DRIVER || (targets.includes('mongobetween') ? '6' : '7');
  if (!Object.hasOwn(DRIVERS, driver)) throw new Error(`BENCH_DRIVER=${driver}: expected 6 or 7`);
  return {
    opsC1,
    opsC32: intEnv('BENCH_OPS_C32', opsC1 * 4),
    warmupOps: intEnv('BENCH_WARMUP_OPS', 500),
    rounds: intEnv('BENCH_ROUNDS', 3),
    findDocs: intEnv('BENCH_FIND_DOCS', 100),
    cursorDocs: intEnv('BENCH_CURSOR_DOCS', 100_000),
    insertManyDocs: intEnv('BENCH_INSERTMANY_DOCS', 50_000),
    targets,
    driver,
    idle: countEnv('BENCH_IDLE', 10_000),
    out: path.resolve(root, process.env.BENCH_OUT || 'bench/results/latest.json'),
    timeoutS: intEnv('BENCH_TIMEOUT_S', 1_800),
    proxyOverrides: jsonEnv('BENCH_PROXY_CONFIG'),
    poolClients: intEnv('BENCH_POOL_CLIENTS', 500),
    poolSize: intEnv('BENCH_POOL_SIZE', 10),
    poolOps: intEnv('BENCH_POOL_OPS', opsC1),
  };
}

// ---------------------------------------------------------------------------------------------
// Upstream and connection strings

async function startUpstream() {
  if (process.env.MONGODB_URI) {
    return { uri: process.env.MONGODB_URI, kind: 'external', stop: async () => {} };
  }
  const chosen = process.env.BENCH_UPSTREAM;
  if (chosen === 'documentdb' || chosen === 'ferretdb2') {
    const { startDocumentDB, DOCUMENTDB_VERSION } = await import('../scripts/documentdb.mjs');
    const instance = await startDocumentDB({ front: chosen === 'documentdb' ? 'gateway' : 'ferretdb2', log });
    const front = chosen === 'documentdb' ? 'its gateway' : 'FerretDB v2';
    return {
      uri: instance.uri,
      kind: 'documentdb',
      description: `DocumentDB ${DOCUMENTDB_VERSION} on PostgreSQL 15 behind ${front}, local`,
      stop: () => instance.stop(),
    };
  }
  if (chosen !== undefined && chosen !== '' && chosen !== 'ferretdb1') {
    throw new Error(`BENCH_UPSTREAM=${chosen}: expected ferretdb1, documentdb or ferretdb2`);
  }
  const { startFerretDB, FERRETDB_VERSION } = await import('../scripts/ferretdb.mjs');
  const ferret = await startFerretDB({ log });
  return { uri: ferret.uri, kind: 'ferretdb', ferretdbVersion: FERRETDB_VERSION, stop: () => ferret.stop() };
}

/** How the proxy child runs: PROXY_RUNTIME plus BENCH_PROXY_NODE_FLAGS (e.g. a CPU profile of the proxy alone). */
function proxyRuntime() {
  const flags = (process.env.BENCH_PROXY_NODE_FLAGS ?? '').split(' ').filter((flag) => flag !== '');
  return { ...PROXY_RUNTIME, execArgv: [...PROXY_RUNTIME.execArgv, ...flags], stdout: flags.length > 0 };
}

function redact(uri) {
  try {
    const cs = new ConnectionString(uri);
    if (cs.password) cs.password = '***';
    return cs.toString();
  } catch {
    return '(unparseable uri)';
  }
}

function parseHostPort(value) {
  const match = /^\[(.+)\]:(\d+)$/.exec(value) ?? /^([^:]+):(\d+)$/.exec(value);
  if (match) return { host: match[1], port: Number(match[2]) };
  return { host: value.replace(/^\[|\]$/g, ''), port: 27017 };
}

/** The one server the TCP pipe forwards to: the URI's host if it names one, else the primary. */
function pipeUpstream(uri, hello) {
  const cs = new ConnectionString(uri);
  if (!cs.isSRV && cs.hosts.length === 1) return parseHostPort(cs.hosts[0]);
  if (hello.primary) return parseHostPort(hello.primary);
  if (hello.me) return parseHostPort(hello.me);
  return parseHostPort(cs.hosts[0]);
}

/**
 * The upstream URI pointed at the pipe: same credentials and options (the pipe is transparent),
 * one host, directConnection=true.
 */
function uriThroughPipe(uri, address) {
  const source = new ConnectionString(uri);
  const target = new ConnectionString(`mongodb://${hostPort(address)}/`);
  target.username = source.username;
  target.password = source.password;
  target.pathname = source.pathname;
  for (const [key, value] of source.searchParams) target.searchParams.append(key, value);
  for (const key of ['replicaSet', 'directConnection', 'loadBalanced', 'srvServiceName', 'srvMaxHosts']) {
    target.searchParams.delete(key);
  }
  target.searchParams.set('directConnection', 'true');
  const tls = source.searchParams.get('tls') ?? source.searchParams.get('ssl');
  if (tls === 'true' || (source.isSRV && tls !== 'false')) {
    target.searchParams.set('tls', 'true');
    target.searchParams.set('tlsAllowInvalidHostnames', 'true'); // the pipe listens on 127.0.0.1
  }
  return target.toString();
}

const hostPort = ({ host, port }) => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);

// ---------------------------------------------------------------------------------------------
// Facts about this run

function gitInfo() {
  const git = (...args) =>
    execFileSync('git', ['--no-optional-locks', ...args], {
      cwd: root,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  try {
    const commit = git('rev-parse', 'HEAD');
    let dirty = null;
    try {
      dirty = git('status', '--porcelain', '--untracked-files=no').length > 0;
    } catch {
      // leave unknown
    }
    return { commit, dirty };
  } catch {
    return { commit: null, dirty: null };
  }
}

async function driverVersion(major) {
  try {
    const file = path.join(root, 'node_modules', DRIVERS[major].module, 'package.json');
    return JSON.parse(await readFile(file, 'utf8')).version;
  } catch {
    return 'unknown';
  }
}

/** The driver major that drives `target`: mongobetween only speaks to 6.x (maxWireVersion 8). */
const driverFor = (target, settings) => (target === 'mongobetween' ? '6' : settings.driver);

/**
 * Raises this process's open-file limit (and so its children's: the pipe, mongobetween, the proxy
 * and FerretDB all start later) so that BENCH_IDLE connections fit, and returns the limit in force.
 * Going above the hard limit needs CAP_SYS_RESOURCE in the initial user namespace; in a container
 * (as here: 20,000) it fails and the limit stays where it was.
 */
function raiseFileLimit(wanted, log) {
  try {
    execFileSync('prlimit', [`--pid=${process.pid}`, `--nofile=${wanted}:${wanted}`], { stdio: 'ignore' });
  } catch {
    // not permitted: keep the current limit, reported below
  }
  try {
    const limit = Number(execFileSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).trim());
    if (limit < wanted) log(`open-file limit ${limit} (could not raise it to ${wanted})`);
    return Number.isInteger(limit) ? limit : null;
  } catch {
    return null;
  }
}

function describeUpstream(upstream, buildInfo, hello) {
  const topology = hello.setName ? `replica set ${hello.setName}` : hello.msg === 'isdbgrid' ? 'mongos' : 'standalone';
  const ferret = buildInfo.ferretdbVersion ?? buildInfo.ferretdb?.version;
  if (upstream.kind === 'documentdb')
    return `${upstream.description} (${topology}, reports MongoDB ${buildInfo.version})`;
  if (upstream.kind === 'ferretdb') {
    return `FerretDB ${ferret ?? upstream.ferretdbVersion} (SQLite handler, local, reports MongoDB ${buildInfo.version})`;
  }
  return `${ferret ? `FerretDB ${ferret}` : `MongoDB ${buildInfo.version}`} (${topology}) from MONGODB_URI`;
}

// ---------------------------------------------------------------------------------------------
// Measurement

const CLIENT_OPTIONS = { maxPoolSize: 64, serverSelectionTimeoutMS: 15_000, appName: 'mtp-bench' };
const newClient = (target, settings, uri) => new DRIVERS[driverFor(target, settings)].MongoClient(uri, CLIENT_OPTIONS);

/** Opens the pool (32 concurrent pings, several rounds) so no measured operation pays a connect. */
async function warmTarget(client) {
  const admin = client.db('admin');
  for (let i = 0; i < 10; i++) {
    await Promise.all(Array.from({ length: 32 }, () => admin.command({ ping: 1 })));
  }
}

/**
 * Measures one workload against every target. All targets are warmed up first; then the
 * operations run in `rounds` slices, each slice visiting every target, in an order that rotates
 * from round to round, so that a burst of load from elsewhere on the machine is spread over all
 * targets instead of landing on one.
 */
async function measureWorkload(workload, targetNames, targets, database, rounds) {
  for (const name of targetNames) await workload.warmup(targets[name].client.db(database), name);
  if (workload.interleaved) return measureInterleaved(workload, targetNames, targets, database);

  const slices = workload.splittable ? split(workload.ops, Math.min(rounds, workload.ops)) : [workload.ops];
  const totals = Object.fromEntries(
    targetNames.map((name) => [
      name,
      { ops: 0, docs: 0, wallNs: 0, latencies: [], childCpuUs: 0, childMainCpuUs: 0, clientCpuUs: 0, rss: null },
    ]),
  );
  let offset = 0;
  for (const [round, ops] of slices.entries()) {
    const order = targetNames.map((_, i) => targetNames[(i + round) % targetNames.length]);
    for (const name of order) {
      const { client, child } = targets[name];
      const total = totals[name];
      const before = await child?.sample();
      const clientBefore = process.cpuUsage();
      const result = await workload.run(client.db(database), name, ops, offset);
      total.clientCpuUs += cpuMicros(clientBefore, process.cpuUsage());
      const after = await child?.sample();
      if (child) {
        total.childCpuUs += cpuMicros(before.cpu, after.cpu);
        total.childMainCpuUs = mainDelta(total.childMainCpuUs, before, after);
        total.rss = after.rss;
      }
      total.ops += result.ops;
      total.docs += result.docs;
      total.wallNs += result.wallNs;
      total.latencies.push(result.latenciesNs);
    }
    offset += ops;
  }

  const summary = {};
  for (const name of targetNames) {
    const total = totals[name];
    const seconds = total.wallNs / 1e9;
    const hasChild = targets[name].child !== null;
    summary[name] = {
      ops: total.ops,
      docs: total.docs,
      rounds: slices.length,
      wallMs: round(total.wallNs / 1e6, 1),
      opsPerSec: round(total.ops / seconds, 1),
      docsPerSec: round(total.docs / seconds, 1),
      throughput: round((workload.unit === 'docs' ? total.docs : total.ops) / seconds, 1),
      latencyUs: summarize(concat(total.latencies)),
      cpuUsPerOp: hasChild ? round(total.childCpuUs / total.ops, 2) : null,
      mainCpuUsPerOp: hasChild && total.childMainCpuUs !== null ? round(total.childMainCpuUs / total.ops, 2) : null,
      childCpuMs: hasChild ? round(total.childCpuUs / 1000, 1) : null,
      rssBytes: total.rss,
      clientCpuUsPerOp: round(total.clientCpuUs / total.ops, 2),
    };
  }
  return summary;
}

/**
 * `sum` plus the main-thread CPU µs between two child samples; null once either sample has none
 * (not Linux, or mongobetween).
 */
function mainDelta(sum, before, after) {
  if (sum === null || before?.mainCpuUs == null || after?.mainCpuUs == null) return null;
  return sum + after.mainCpuUs - before.mainCpuUs;
}

/**
 * For the cursor: one stepper per target, all open at once, advanced one batch at a time in a
 * rotating order. Throughput is documents over the target's own summed batch times (the time
 * between its batches belongs to the other targets); the children's CPU is sampled around the
 * whole pass (a child is idle while the others are served). The bench's own CPU cannot be
 * split between targets here and is left out.
 */
async function measureInterleaved(workload, targetNames, targets, database) {
  const state = {};
  for (const name of targetNames) {
    state[name] = { stepper: workload.open(targets[name].client.db(database)), latencies: [], docs: 0, done: false };
  }
  const before = {};
  for (const name of targetNames) before[name] = await targets[name].child?.sample();
  try {
    for (let step = 0; targetNames.some((name) => !state[name].done); step++) {
      for (let i = 0; i < targetNames.length; i++) {
        const s = state[targetNames[(i + step) % targetNames.length]];
        if (s.done) continue;
        const batch = await s.stepper.next();
        if (batch === null) {
          s.done = true;
        } else {
          s.latencies.push(batch.latencyNs);
          s.docs += batch.docs;
        }
      }
    }
  } finally {
    for (const name of targetNames) await state[name].stepper.close();
  }
  const summary = {};
  for (const name of targetNames) {
    const { child } = targets[name];
    const after = await child?.sample();
    const s = state[name];
    if (workload.expectedDocs !== undefined && s.docs !== workload.expectedDocs) {
      throw new Error(
        `${workload.name} through ${name} returned ${s.docs} documents, expected ${workload.expectedDocs}`,
      );
    }
    const ops = s.latencies.length;
    const busyNs = s.latencies.reduce((sum, value) => sum + value, 0);
    const seconds = busyNs / 1e9;
    const childCpuUs = child ? cpuMicros(before[name].cpu, after.cpu) : null;
    const mainCpuUs = child ? mainDelta(0, before[name], after) : null;
    summary[name] = {
      ops,
      docs: s.docs,
      rounds: 1,
      wallMs: round(busyNs / 1e6, 1),
      opsPerSec: round(ops / seconds, 1),
      docsPerSec: round(s.docs / seconds, 1),
      throughput: round((workload.unit === 'docs' ? s.docs : ops) / seconds, 1),
      latencyUs: summarize(Float64Array.from(s.latencies)),
      cpuUsPerOp: childCpuUs == null ? null : round(childCpuUs / ops, 2),
      mainCpuUsPerOp: mainCpuUs == null ? null : round(mainCpuUs / ops, 2),
      childCpuMs: childCpuUs == null ? null : round(childCpuUs / 1000, 1),
      rssBytes: after?.rss ?? null,
      clientCpuUsPerOp: null,
    };
  }
  return summary;
}

/** `total` split into `parts` near-equal positive integers. */
function split(total, parts) {
  const base = Math.floor(total / parts);
  return Array.from({ length: parts }, (_, i) => base + (i < total % parts ? 1 : 0));
}

function concat(arrays) {
  const out = new Float64Array(arrays.reduce((sum, array) => sum + array.length, 0));
  let at = 0;
  for (const array of arrays) {
    out.set(array, at);
    at += array.length;
  }
  return out;
}

function ratios(targets) {
  const { direct, pipe, mongobetween, proxy } = targets;
  const p50 = (t) => t?.latencyUs.p50;
  const addedOverPipe = (t) => (t && pipe ? round(p50(t) - p50(pipe), 1) : null);
  return {
    throughput: {
      proxyPipe: ratio(proxy?.throughput, pipe?.throughput),
      proxyDirect: ratio(proxy?.throughput, direct?.throughput),
      pipeDirect: ratio(pipe?.throughput, direct?.throughput),
      proxyMongobetween: ratio(proxy?.throughput, mongobetween?.throughput),
      mongobetweenPipe: ratio(mongobetween?.throughput, pipe?.throughput),
      mongobetweenDirect: ratio(mongobetween?.throughput, direct?.throughput),
    },
    p50: {
      proxyPipe: ratio(p50(proxy), p50(pipe)),
      proxyDirect: ratio(p50(proxy), p50(direct)),
      pipeDirect: ratio(p50(pipe), p50(direct)),
      proxyMongobetween: ratio(p50(proxy), p50(mongobetween)),
    },
    p99: {
      proxyPipe: ratio(proxy?.latencyUs.p99, pipe?.latencyUs.p99),
      proxyDirect: ratio(proxy?.latencyUs.p99, direct?.latencyUs.p99),
    },
    cpuPerOp: {
      proxyPipe: ratio(proxy?.cpuUsPerOp, pipe?.cpuUsPerOp),
      proxyMongobetween: ratio(proxy?.cpuUsPerOp, mongobetween?.cpuUsPerOp),
      mongobetweenPipe: ratio(mongobetween?.cpuUsPerOp, pipe?.cpuUsPerOp),
    },
    addedP50OverPipeUs: addedOverPipe(proxy),
    mongobetweenAddedP50OverPipeUs: addedOverPipe(mongobetween),
    addedP50OverDirectUs: proxy && direct ? round(p50(proxy) - p50(direct), 1) : null,
  };
}

const KIB = 1024;
const MIB = 1024 * 1024;

/** One target line: `met` is null when the value is missing (a target did not run). */
function goal(id, label, value, display, targetDisplay, within) {
  return {
    id,
    label,
    value,
    display: value == null ? '-' : display(value),
    targetDisplay,
    met: value == null ? null : within(value),
  };
}
const timesDisplay = (value) => `${value.toFixed(2)}x`;
const percentDisplay = (value) => `${(value * 100).toFixed(1)} %`;

/** Issue 16's performance targets, shown next to the measurements (never pass/fail). */
function goals(results, idle) {
  const list = [];
  const byName = (name) => results.find((workload) => workload.name === name);
  for (const name of ['ping-c1', 'findOne-c1', 'insertOne-c1']) {
    const workload = byName(name);
    if (!workload) continue;
    list.push(
      goal(
        `addedP50OverPipe:${name}`,
        `added p50 over the pipe, ${workload.label}`,
        workload.ratios.addedP50OverPipeUs,
        (value) => `${value >= 0 ? '+' : ''}${value.toFixed(1)} µs`,
        '<= 60 µs',
        (value) => value <= 60,
      ),
    );
  }
  for (const workload of results) {
    list.push(
      goal(
        `cpuPerOpVsMongobetween:${workload.name}`,
        `cpu per op proxy/mongobetween, ${workload.label}`,
        workload.ratios.cpuPerOp.proxyMongobetween,
        timesDisplay,
        '<= 1.00x',
        (value) => value <= 1,
      ),
    );
  }
  for (const name of ['ping-c32', 'findOne-c32', 'insertOne-c32']) {
    const workload = byName(name);
    if (!workload) continue;
    list.push(
      goal(
        `throughputVsMongobetween:${name}`,
        `throughput proxy/mongobetween, ${workload.label}`,
        workload.ratios.throughput.proxyMongobetween,
        timesDisplay,
        '>= 1.00x',
        (value) => value >= 1,
      ),
    );
  }
  const cursor = byName('cursor');
  if (cursor) {
    list.push(
      goal(
        'cursorThroughput',
        'cursor docs/s proxy/direct',
        cursor.ratios.throughput.proxyDirect,
        percentDisplay,
        '>= 97.0 %',
        (value) => value >= 0.97,
      ),
      goal(
        'cursorCpu',
        'cursor cpu per batch proxy/pipe',
        cursor.ratios.cpuPerOp.proxyPipe,
        timesDisplay,
        '<= 2.00x',
        (value) => value <= 2,
      ),
    );
  }
  const insertMany = byName('insertMany');
  if (insertMany) {
    list.push(
      goal(
        'insertManyCpu',
        'insertMany cpu per batch proxy/pipe',
        insertMany.ratios.cpuPerOp.proxyPipe,
        timesDisplay,
        '<= 3.00x',
        (value) => value <= 3,
      ),
    );
  }
  const proxyIdle = idle?.targets.proxy;
  if (proxyIdle && !proxyIdle.error) {
    list.push(
      goal(
        'idlePerConnection',
        `idle connections: proxy rss growth per connection (${idle.count})`,
        proxyIdle.perConnectionBytes,
        (value) => `${(value / KIB).toFixed(1)} KiB`,
        '<= 6.0 KiB',
        (value) => value <= 6 * KIB,
      ),
      goal(
        'idleTotal',
        `idle connections: proxy rss with ${idle.count} open`,
        proxyIdle.rssAfterBytes,
        (value) => `${(value / MIB).toFixed(1)} MiB`,
        '< 150 MiB',
        (value) => value < 150 * MIB,
      ),
    );
  }
  return list;
}

/**
 * BENCH_IDLE: for each middle target in turn, its RSS, then `count` connections that each complete
 * an isMaster handshake and stay open and silent, a second to settle, its RSS again; then they
 * are closed before the next target. The bench's own driver connections stay open throughout.
 */
async function measureIdle(targetNames, targets, count, fileLimit) {
  const results = {};
  for (const name of targetNames) {
    const { child, address } = targets[name];
    // The pipe holds two descriptors per client connection (client and upstream socket): under
    // the open-file limit it can hold only about half of it; ask for what fits and say so.
    const fits = name === 'pipe' && fileLimit ? Math.floor((fileLimit - 500) / 2) : count;
    const requested = Math.min(count, fits);
    const note =
      requested < count
        ? `capped at ${requested}: two descriptors per connection under an open-file limit of ${fileLimit}`
        : null;
    const before = await child.sample();
    const opening = await openIdleConnections(address, requested);
    const { sockets, openMs } = opening;
    let { error } = opening;
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const after = await child.sample();
    // Open ones only: a target that refuses a connection after its handshake closes it.
    const opened = stillOpen(sockets);
    await closeAll(sockets);
    if (opened < sockets.length) {
      error ??= `${sockets.length - opened} of ${sockets.length} connections were closed by the target after the handshake`;
    }
    results[name] = {
      requested,
      note,
      opened,
      openMs,
      rssBeforeBytes: before.rss,
      rssAfterBytes: after.rss,
      perConnectionBytes: opened > 0 ? round((after.rss - before.rss) / opened, 0) : null,
      error,
    };
    log(
      `idle ${name.padEnd(12)} ${opened}/${count} connections in ${(openMs / 1000).toFixed(1)} s: rss ${(before.rss / MIB).toFixed(1)} → ${(after.rss / MIB).toFixed(1)} MiB` +
        (opened > 0 ? `, ${((after.rss - before.rss) / opened / KIB).toFixed(2)} KiB per connection` : '') +
        (error ? ` (stopped: ${error})` : '') +
        (note ? ` (${note})` : ''),
    );
    // Let the target release what the connections held before the next one is measured.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
  }
  return { count, targets: results };
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const settings = readSettings();
  const selectedNames = listEnv('BENCH_WORKLOADS', [
    ...workloads(settings).map((workload) => workload.name),
    POOL_SCENARIO_NAME,
  ]);
  const selectedWorkloads = workloads(settings).filter((workload) => selectedNames.includes(workload.name));
  // The pool scenario runs through a proxy of its own, after the three-way workloads.
  const runPool = selectedNames.includes(POOL_SCENARIO_NAME) && settings.targets.includes('proxy');

  const cleanups = []; // run in reverse order
  let cleaning;
  const cleanup = () => {
    cleaning ??= (async () => {
      for (const step of cleanups.reverse()) {
        try {
          await step();
        } catch (error) {
          log(`cleanup: ${error instanceof Error ? error.message : String(error)}`);
        }
      }
    })();
    return cleaning;
  };
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.once(signal, () => {
      log(`${signal}: cleaning up`);
      void cleanup().finally(() => process.exit(130));
    });
  }
  const watchdog = setTimeout(() => {
    log(`still running after ${settings.timeoutS} s (BENCH_TIMEOUT_S): giving up`);
    void cleanup().finally(() => process.exit(1));
  }, settings.timeoutS * 1000);
  watchdog.unref();

  const results = [];
  let pool = null;
  let idle = null;
  let meta;
  // Before anything starts: the children inherit the limit.
  const fileLimit = settings.idle > 0 ? raiseFileLimit(Math.max(65_536, settings.idle * 3 + 1_000), log) : null;
  try {
    const upstream = await startUpstream();
    cleanups.push(() => upstream.stop());
    log(`upstream: ${redact(upstream.uri)}`);

    const directClient = newClient('direct', settings, upstream.uri);
    cleanups.push(() => directClient.close());
    await directClient.connect();
    const admin = directClient.db('admin');
    const hello = await admin.command({ hello: 1 });
    const buildInfo = await admin.command({ buildInfo: 1 });

    const database = `mtp_bench_${new Date().toISOString().replace(/[-:]/g, '').slice(0, 15)}_${randomBytes(3).toString('hex')}`;
    cleanups.push(async () => {
      await directClient.db(database).dropDatabase();
      log(`dropped database ${database}`);
    });
    log(`seeding ${database}`);
    await seed(directClient.db(database), settings, log);

    const targets = { direct: { client: directClient, child: null } };
    if (settings.targets.includes('pipe')) {
      const forward = pipeUpstream(upstream.uri, hello);
      const child = await TargetChild.start('pipe', path.join(here, 'pipe-child.mjs'), { upstream: forward });
      cleanups.push(() => child.stop());
      const client = newClient('pipe', settings, uriThroughPipe(upstream.uri, child.address));
      cleanups.push(() => client.close());
      targets.pipe = { client, child, address: child.address };
      log(`pipe (pid ${child.pid}) on ${hostPort(child.address)} → ${hostPort(forward)}`);
    }
    if (settings.targets.includes('mongobetween')) {
      const { startMongobetween } = await import('../scripts/mongobetween.mjs');
      const instance = await startMongobetween({ upstreamUri: upstream.uri, log });
      cleanups.push(() => instance.stop());
      const client = newClient('mongobetween', settings, instance.uri);
      cleanups.push(() => client.close());
      targets.mongobetween = { client, child: new ProcTarget(instance.pid), address: instance.address };
      log(`mongobetween (pid ${instance.pid}) on ${hostPort(instance.address)}`);
    }
    if (settings.targets.includes('proxy')) {
      // Room for the idle connections next to the bench's own (the proxy's default is 10,000), all of
      // one tenant: its per-tenant share (a quarter by default) would refuse three quarters of them.
      const maxConnections = Math.max(10_000, settings.idle + 1_000);
      const limits = settings.idle > 0 ? { limits: { maxConnections, maxConnectionsPerTenant: maxConnections } } : {};
      const child = await TargetChild.start(
        'proxy',
        path.join(here, 'proxy-child.mjs'),
        {
          upstreamUri: upstream.uri,
          overrides: deepMerge(limits, settings.proxyOverrides ?? {}),
        },
        { runtime: proxyRuntime() },
      );
      cleanups.push(() => child.stop());
      const client = newClient('proxy', settings, `mongodb://${hostPort(child.address)}/?directConnection=true`);
      cleanups.push(() => client.close());
      targets.proxy = { client, child, address: child.address };
      log(`proxy (pid ${child.pid}) on ${hostPort(child.address)}`);
    }
    const targetNames = ALL_TARGETS.filter((name) =>
      name === 'direct' ? settings.targets.includes('direct') : targets[name],
    );
    for (const name of targetNames) {
      await targets[name].client.connect();
      await warmTarget(targets[name].client);
    }
    log(
      `warmed up ${targetNames.join(', ')}; drivers: ${targetNames.map((name) => `${name} ${driverFor(name, settings)}.x`).join(', ')}`,
    );

    for (const workload of selectedWorkloads) {
      const measured = await measureWorkload(workload, targetNames, targets, database, settings.rounds);
      for (const [name, result] of Object.entries(measured)) {
        log(
          `${workload.name.padEnd(13)} ${name.padEnd(12)} ${Math.round(result.throughput).toLocaleString('en-US').padStart(9)} ${workload.unit}/s` +
            `  p50 ${result.latencyUs.p50} µs  p99 ${result.latencyUs.p99} µs` +
            (result.cpuUsPerOp == null ? '' : `  cpu ${result.cpuUsPerOp} µs/op`) +
            (result.mainCpuUsPerOp == null ? '' : ` (main thread ${result.mainCpuUsPerOp})`),
        );
      }
      results.push({
        name: workload.name,
        label: workload.label,
        unit: workload.unit,
        op: workload.opLabel,
        small: workload.small,
        concurrency: workload.concurrency,
        ops: workload.ops,
        targets: measured,
        ratios: ratios(measured),
      });
    }

    const idleTargets = MIDDLE_TARGETS.filter((name) => targets[name]);
    if (settings.idle > 0 && idleTargets.length > 0) {
      log(`idle: ${settings.idle} connections to each of ${idleTargets.join(', ')}`);
      idle = await measureIdle(idleTargets, targets, settings.idle, fileLimit);
      idle.fileLimit = fileLimit;
    }

    if (runPool) {
      try {
        pool = await runPoolScenario({
          upstreamUri: upstream.uri,
          database,
          proxyScript: path.join(here, 'proxy-child.mjs'),
          overrides: settings.proxyOverrides,
          clients: settings.poolClients,
          poolSize: settings.poolSize,
          ops: settings.poolOps,
          findDocs: settings.findDocs,
          log,
        });
        const { connections } = pool;
        log(
          `${POOL_SCENARIO_NAME} ${Math.round(pool.throughput).toLocaleString('en-US')} ops/s  p50 ${pool.latencyUs.p50} µs  p99 ${pool.latencyUs.p99} µs` +
            `  clients ${connections.clientPeak} : upstream ${connections.upstreamPeak}${pool.note ? ` (${pool.note})` : ''}`,
        );
      } catch (error) {
        // Broken, not slow: the run fails, but the measurements above are still written.
        const message = error instanceof Error ? error.message : String(error);
        log(`${POOL_SCENARIO_NAME} failed: ${message}`);
        pool = { name: POOL_SCENARIO_NAME, error: message };
        process.exitCode = 1;
      }
    }

    meta = {
      date: new Date(startedAt).toISOString(),
      node: process.version,
      platform: `${os.platform()} ${os.release()} ${os.arch()}`,
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model?.trim() ?? 'unknown',
      loadAverage: { start: loadAtStart, end: os.loadavg().map((value) => round(value, 2)) },
      driverVersion: await driverVersion(settings.driver),
      drivers: Object.fromEntries(
        await Promise.all(targetNames.map(async (name) => [name, await driverVersion(driverFor(name, settings))])),
      ),
      git: gitInfo(),
      upstream: {
        kind: upstream.kind,
        description: describeUpstream(upstream, buildInfo, hello),
        version: buildInfo.version,
        ferretdbVersion: buildInfo.ferretdbVersion ?? buildInfo.ferretdb?.version ?? upstream.ferretdbVersion ?? null,
        uri: redact(upstream.uri),
        pipeForwardsTo: targets.pipe ? hostPort(pipeUpstream(upstream.uri, hello)) : null,
      },
      proxy: targets.proxy
        ? {
            pid: targets.proxy.child.pid,
            config: targets.proxy.child.info?.config ?? null,
            upstreamAsSeenByProxy: targets.proxy.child.info?.upstream ?? null,
          }
        : null,
      mongobetween: targets.mongobetween
        ? {
            pid: targets.mongobetween.child.pid,
            commit: (await import('../scripts/mongobetween.mjs')).MONGOBETWEEN_COMMIT,
          }
        : null,
      database,
      settings: { ...settings, out: path.relative(root, settings.out) },
    };
  } finally {
    await cleanup();
    clearTimeout(watchdog);
  }

  meta.durationS = (Date.now() - startedAt) / 1000;
  const report = { meta, workloads: results, idle, pool, goals: goals(results, idle), neighbours: await neighbours() };
  process.stdout.write(`${formatReport(report)}\n`);
  await mkdir(path.dirname(settings.out), { recursive: true });
  await writeFile(settings.out, `${JSON.stringify(report, null, 2)}\n`);
  log(`wrote ${path.relative(process.cwd(), settings.out) || settings.out}`);
}

/**
 * The last noisy-neighbour run's rows (`npm run test:neighbours` writes .tmp/neighbours/latest.json):
 * the bystander's p99 ratio per abuse, recorded with the bench; null when there is none.
 */
async function neighbours() {
  try {
    return JSON.parse(await readFile(path.join(root, '.tmp', 'neighbours', 'latest.json'), 'utf8'));
  } catch {
    return null;
  }
}

main().catch((error) => {
  process.stderr.write(`[bench] failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
});
