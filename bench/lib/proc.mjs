// CPU time and RSS of a process that is not a Node child of the bench (mongobetween), read from
// /proc/<pid>/stat (Linux only). Same sample() shape as TargetChild (child.mjs): cpu in µs.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/**
 * utime, stime (fields 14 and 15, clock ticks) and rss (field 24, pages) of a /proc/<pid>/stat
 * line. The command name (field 2) is in parentheses and may hold spaces and parentheses itself,
 * so the fields are counted from the last `)`.
 * @param {string} text
 * @returns {{ userTicks: number, systemTicks: number, rssPages: number }}
 */
export function parseProcStat(text) {
  const close = text.lastIndexOf(')');
  if (close < 0) throw new Error('not a /proc/<pid>/stat line');
  // After ") ": field 3 (state) is at index 0.
  const fields = text
    .slice(close + 2)
    .trim()
    .split(/\s+/);
  const field = (n) => {
    const value = Number(fields[n - 3]);
    if (!Number.isFinite(value)) throw new Error(`/proc/<pid>/stat field ${n} is missing`);
    return value;
  };
  return { userTicks: field(14), systemTicks: field(15), rssPages: field(24) };
}

function getconf(name, fallback) {
  try {
    const value = Number(execFileSync('getconf', [name], { encoding: 'utf8' }).trim());
    return Number.isInteger(value) && value > 0 ? value : fallback;
  } catch {
    return fallback;
  }
}

let units;
const systemUnits = () => (units ??= { ticksPerSecond: getconf('CLK_TCK', 100), pageSize: getconf('PAGESIZE', 4096) });

/** Clock ticks (of /proc/<pid>/stat) in µs. */
export function ticksToMicros(ticks) {
  return Math.round((ticks * 1e6) / systemUnits().ticksPerSecond);
}

/** A running process sampled from /proc: `sample()` like TargetChild's, at clock-tick resolution. */
export class ProcTarget {
  /** @param {number} pid */
  constructor(pid) {
    this.pid = pid;
  }

  /** @returns {Promise<{ cpu: { user: number, system: number }, rss: number }>} */
  async sample() {
    const { ticksPerSecond, pageSize } = systemUnits();
    const stat = parseProcStat(readFileSync(`/proc/${this.pid}/stat`, 'utf8'));
    const micros = (ticks) => Math.round((ticks * 1e6) / ticksPerSecond);
    return { cpu: { user: micros(stat.userTicks), system: micros(stat.systemTicks) }, rss: stat.rssPages * pageSize };
  }
}
