// The parent side of the benchmark's IPC protocol (see child-ipc.mjs): forks a target process,
// starts it, samples its CPU time and RSS, stops it.
import { fork } from 'node:child_process';

/**
 * How the container image runs the proxy (Dockerfile): a full collection when a burst of big
 * messages is over (--expose-gc) and glibc settings that return freed memory (docs/deploy.md, Memory).
 */
export const PROXY_RUNTIME = {
  execArgv: ['--expose-gc'],
  env: { MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '65536' },
};

export class TargetChild {
  /**
   * @param {string} name  label for error messages
   * @param {string} script  absolute path of the child script
   * @param {object} startOptions  sent with the `start` message
   * @param {{ timeoutMS?: number, runtime?: { execArgv: string[], env: Record<string, string>, stdout?: boolean } }} options
   *   runtime: Node flags and environment added to the child's (PROXY_RUNTIME for the proxy);
   *   stdout: the child's stdout to the bench's stderr
   */
  static async start(name, script, startOptions, { timeoutMS = 30_000, runtime } = {}) {
    const child = new TargetChild(name, script, runtime);
    try {
      const ready = await child.#request({ type: 'start', ...startOptions }, 'ready', timeoutMS);
      child.address = ready.address;
      child.info = ready.info ?? null;
      return child;
    } catch (error) {
      child.kill();
      throw error;
    }
  }

  /** @type {{host: string, port: number}} */
  address;
  /** What the child reported about itself when it became ready (plain data or null). */
  info = null;
  #child;
  #waiters = new Map(); // reply type (or `cpu:<id>`) → { resolve, reject }
  #nextId = 1;
  #exited = null;
  #exitPromise;

  constructor(name, script, runtime) {
    this.name = name;
    // stdout is ignored (the proxy logs nothing at level silent anyway) unless runtime.stdout; stderr shows crashes.
    this.#child = fork(script, [], {
      // The child's stdout goes to the bench's stderr when it runs with extra Node flags (a
      // `--trace-gc` or `--trace-deopt` of BENCH_PROXY_NODE_FLAGS prints there), else nowhere.
      stdio: ['ignore', runtime?.stdout === true ? 2 : 'ignore', 'inherit', 'ipc'],
      serialization: 'advanced',
      ...(runtime === undefined
        ? {}
        : { execArgv: [...process.execArgv, ...runtime.execArgv], env: { ...process.env, ...runtime.env } }),
    });
    this.pid = this.#child.pid;
    this.#child.on('message', (message) => this.#onMessage(message));
    this.#exitPromise = new Promise((resolve) => {
      this.#child.on('exit', (code, signal) => {
        this.#exited = { code, signal };
        this.#failAll(new Error(`${this.name} child exited (code ${code}, signal ${signal})`));
        resolve();
      });
    });
    this.#child.on('error', (error) => this.#failAll(error));
  }

  get alive() {
    return this.#exited === null;
  }

  /** `process.cpuUsage()` and RSS of the child, right now. */
  async sample() {
    const id = this.#nextId++;
    const reply = await this.#request({ type: 'cpu', id }, `cpu:${id}`, 10_000);
    return { cpu: reply.cpu, rss: reply.rss, mainCpuUs: reply.mainCpuUs ?? null };
  }

  async stop({ timeoutMS = 10_000 } = {}) {
    if (!this.alive) return;
    try {
      await this.#request({ type: 'stop' }, 'stopped', timeoutMS);
    } catch {
      // fall through to the kill below
    }
    const timer = setTimeout(() => this.kill(), timeoutMS);
    await this.#exitPromise;
    clearTimeout(timer);
  }

  kill() {
    if (this.alive) this.#child.kill('SIGKILL');
  }

  #request(message, replyKey, timeoutMS) {
    if (!this.alive) return Promise.reject(new Error(`${this.name} child is not running`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(replyKey);
        reject(new Error(`${this.name} child did not answer ${message.type} within ${timeoutMS} ms`));
      }, timeoutMS);
      this.#waiters.set(replyKey, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.#child.send(message);
    });
  }

  #onMessage(message) {
    if (message?.type === 'error') {
      this.#failAll(new Error(`${this.name} child: ${message.message}`));
      return;
    }
    const key = message?.type === 'cpu' ? `cpu:${message.id}` : message?.type;
    const waiter = this.#waiters.get(key);
    if (waiter) {
      this.#waiters.delete(key);
      waiter.resolve(message);
    }
  }

  #failAll(error) {
    const waiters = [...this.#waiters.values()];
    this.#waiters.clear();
    for (const waiter of waiters) waiter.reject(error);
  }
}

/** CPU microseconds (user + system) between two `process.cpuUsage()` samples. */
export function cpuMicros(before, after) {
  return after.user - before.user + (after.system - before.system);
}
