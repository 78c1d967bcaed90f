// Human-readable tables for the benchmark results (stdout).

const TARGET_NAMES = ['direct', 'pipe', 'mongobetween', 'proxy'];

const int = (value) => (value == null || !Number.isFinite(value) ? '-' : Math.round(value).toLocaleString('en-US'));
const fixed = (value, digits = 1) => (value == null || !Number.isFinite(value) ? '-' : value.toFixed(digits));
const times = (value) => (value == null ? '-' : `${value.toFixed(2)}x`);
const signedUs = (value) =>
  value == null || !Number.isFinite(value) ? '-' : `${value >= 0 ? '+' : ''}${value.toFixed(1)} µs`;

function table(header, rows, align) {
  const widths = header.map((title, c) => Math.max(title.length, ...rows.map((row) => String(row[c]).length)));
  const line = (cells) =>
    cells
      .map((cell, c) => (align[c] === 'l' ? String(cell).padEnd(widths[c]) : String(cell).padStart(widths[c])))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

export function formatReport(report) {
  const { meta } = report;
  const out = [];
  const commit = meta.git.commit
    ? `${meta.git.commit.slice(0, 10)}${meta.git.dirty ? ' (+ uncommitted changes)' : ''}`
    : 'unknown';
  out.push('');
  out.push(`mongo-tenant-proxy benchmark  ${meta.date}`);
  out.push(`node ${meta.node} · ${meta.cpus} × ${meta.cpuModel} · commit ${commit}`);
  const drivers = meta.drivers ?? {};
  out.push(
    `driven by the Node driver: ${Object.entries(drivers)
      .map(([target, version]) => `${target} ${version}`)
      .join(', ')}`,
  );
  out.push(`upstream: ${meta.upstream.description} · database ${meta.database} (dropped at the end)`);
  out.push(
    `settings: ${meta.settings.opsC1} ops at c=1, ${meta.settings.opsC32} at c=32, warm-up ${meta.settings.warmupOps} ops, ` +
      `${meta.settings.rounds} rounds with rotating target order (cursor: one pass per target, batches taken in turn)`,
  );
  out.push(
    `cpu µs/op and rss: the middle process's own (pipe, proxy: process.cpuUsage(); mongobetween: /proc/<pid>/stat); ` +
      'cursor and insertMany: one op = one batch of 1000 docs',
  );
  out.push('');

  if (report.workloads.length > 0) formatWorkloads(report, out);
  formatIdle(report.idle, out);
  formatPool(report.pool, out);

  if (report.goals.length > 0) {
    out.push('targets (informational: the benchmark never fails on them)');
    out.push(
      table(
        ['target', 'measured', 'target', 'within'],
        report.goals.map((goal) => [
          goal.label,
          goal.display,
          goal.targetDisplay,
          goal.met == null ? '-' : goal.met ? 'yes' : 'no',
        ]),
        ['l', 'r', 'r', 'l'],
      ),
    );
    out.push('');
  }
  out.push(
    `total ${meta.durationS.toFixed(1)} s; numbers are noisy on shared machines: compare ratios within one run.`,
  );
  return out.join('\n');
}

/** The three-way workload table and its ratios. */
function formatWorkloads(report, out) {
  const rows = [];
  for (const workload of report.workloads) {
    let first = true;
    for (const name of TARGET_NAMES) {
      const result = workload.targets[name];
      if (!result) continue;
      rows.push([
        first ? workload.label : '',
        name,
        `${int(result.throughput)} ${workload.unit === 'docs' ? 'docs/s' : 'ops/s'}`,
        fixed(result.latencyUs.p50),
        fixed(result.latencyUs.p99),
        fixed(result.cpuUsPerOp),
        result.rssBytes == null ? '-' : fixed(result.rssBytes / 1048576),
      ]);
      first = false;
    }
  }
  out.push(
    table(['workload', 'target', 'throughput', 'p50 µs', 'p99 µs', 'cpu µs/op', 'rss MiB'], rows, [
      'l',
      'l',
      'r',
      'r',
      'r',
      'r',
      'r',
    ]),
  );
  out.push('');

  const ratioRows = report.workloads.map((workload) => {
    const r = workload.ratios;
    return [
      workload.label,
      times(r.throughput.proxyPipe),
      times(r.throughput.proxyDirect),
      times(r.throughput.proxyMongobetween),
      times(r.p50.proxyPipe),
      times(r.cpuPerOp.proxyPipe),
      times(r.cpuPerOp.proxyMongobetween),
      times(r.cpuPerOp.mongobetweenPipe),
      signedUs(r.addedP50OverPipeUs),
      signedUs(r.mongobetweenAddedP50OverPipeUs),
    ];
  });
  out.push(
    'ratios (throughput: higher is better for the proxy; p50 and cpu: lower is better; mb = mongobetween; ' +
      "added p50 = p50 minus the pipe's)",
  );
  out.push(
    table(
      [
        'workload',
        'thr proxy/pipe',
        'thr proxy/direct',
        'thr proxy/mb',
        'p50 proxy/pipe',
        'cpu/op proxy/pipe',
        'cpu/op proxy/mb',
        'cpu/op mb/pipe',
        'added p50 proxy',
        'added p50 mb',
      ],
      ratioRows,
      ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
    ),
  );
  out.push('');
}

/** The idle-connection measurement (BENCH_IDLE), when it ran. */
function formatIdle(idle, out) {
  if (!idle) return;
  const mib = (bytes) => (bytes == null ? '-' : fixed(bytes / 1048576));
  out.push(
    `idle connections (BENCH_IDLE=${idle.count}: raw sockets, one isMaster each, then silent; one target at a time)`,
  );
  const rows = [];
  const errors = [];
  for (const name of TARGET_NAMES) {
    const result = idle.targets[name];
    if (!result) continue;
    rows.push([
      name,
      `${int(result.opened)}/${int(result.requested)}`,
      fixed(result.openMs / 1000),
      mib(result.rssBeforeBytes),
      mib(result.rssAfterBytes),
      mib(result.rssAfterBytes - result.rssBeforeBytes),
      result.perConnectionBytes == null ? '-' : fixed(result.perConnectionBytes / 1024, 2),
    ]);
    if (result.error) errors.push(`${name}: stopped opening at ${result.opened}: ${result.error}`);
    if (result.note) errors.push(`${name}: ${result.note}`);
  }
  out.push(
    table(['target', 'open', 'open s', 'rss before MiB', 'rss after MiB', 'growth MiB', 'KiB per conn'], rows, [
      'l',
      'r',
      'r',
      'r',
      'r',
      'r',
      'r',
    ]),
  );
  out.push(...errors);
  out.push('');
}

/** The pool scenario (pool-scenario.mjs), when it ran. */
function formatPool(pool, out) {
  if (!pool) return;
  if (pool.error) {
    out.push(`connection pooling (${pool.name}) failed: ${pool.error}`, '');
    return;
  }
  const { connections } = pool;
  out.push(
    `connection pooling (${pool.name}: its own proxy process, metrics sampled ${connections.samples} times during the run)`,
  );
  out.push(
    table(
      [
        'workload',
        'throughput',
        'p50 µs',
        'p99 µs',
        'cpu µs/op',
        'clients',
        'upstream peak',
        'upstream mean',
        'client:upstream',
      ],
      [
        [
          pool.label,
          `${int(pool.throughput)} ops/s`,
          fixed(pool.latencyUs.p50),
          fixed(pool.latencyUs.p99),
          fixed(pool.cpuUsPerOp),
          int(connections.clientPeak),
          int(connections.upstreamPeak),
          fixed(connections.upstreamMean),
          connections.ratio == null ? '-' : `${fixed(connections.ratio)}:1`,
        ],
      ],
      ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
    ),
  );
  if (pool.note) out.push(pool.note);
  out.push('');
}
