// The container image, without a Docker engine: the Dockerfile's structure (stages, non-root
// user, HEALTHCHECK, exec-form ENTRYPOINT/CMD, build context), and what the image runs, run here
// instead: the build into a fresh directory, an application directory laid out as the runtime
// stage lays it out with only the production dependencies `npm ci --omit=dev` installs, and the
// image's ENTRYPOINT + CMD and HEALTHCHECK commands against the test upstream, stopped by SIGTERM.
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { cp, lstat, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { loadConfig } from '../../src/config/index.js';
import { builtDist } from '../helpers/cli-process.js';
import { upstreamUri } from '../helpers/upstream.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

interface Instruction {
  keyword: string;
  args: string;
  /** Body of a heredoc (`COPY <<EOF dest`), if any. */
  heredoc?: string;
  line: number;
}

interface Stage {
  name: string;
  base: string;
  instructions: Instruction[];
}

/** A Dockerfile's instructions: comments dropped, continuation lines joined, heredocs read. */
function parseDockerfile(text: string): { directives: string[]; args: Instruction[]; stages: Stage[] } {
  const lines = text.split('\n');
  const directives: string[] = [];
  const globalArgs: Instruction[] = [];
  const stages: Stage[] = [];
  let seenInstruction = false;
  for (let i = 0; i < lines.length; i += 1) {
    const start = i;
    let line = lines[i]!;
    if (/^\s*#/.test(line)) {
      if (!seenInstruction && /^#\s*\w+=/.test(line)) directives.push(line.replace(/^#\s*/, ''));
      continue;
    }
    if (line.trim() === '') continue;
    while (line.endsWith('\\') && i + 1 < lines.length) {
      i += 1;
      const next = lines[i]!;
      if (/^\s*#/.test(next)) continue;
      line = `${line.slice(0, -1)} ${next.trim()}`;
    }
    seenInstruction = true;
    const match = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!match) throw new Error(`Dockerfile line ${start + 1}: cannot parse ${JSON.stringify(line)}`);
    const instruction: Instruction = { keyword: match[1]!.toUpperCase(), args: match[2]!.trim(), line: start + 1 };
    const heredoc = /<<-?(["']?)(\w+)\1/.exec(instruction.args);
    if (heredoc) {
      const body: string[] = [];
      while (i + 1 < lines.length && lines[i + 1] !== heredoc[2]) body.push(lines[++i]!);
      i += 1; // the terminator
      instruction.heredoc = `${body.join('\n')}\n`;
    }
    if (instruction.keyword === 'FROM') {
      const from = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(instruction.args);
      if (!from) throw new Error(`Dockerfile line ${start + 1}: cannot parse FROM`);
      stages.push({ base: from[1]!, name: from[2] ?? String(stages.length), instructions: [] });
    } else if (stages.length === 0) {
      globalArgs.push(instruction);
    } else {
      stages.at(-1)!.instructions.push(instruction);
    }
  }
  return { directives, args: globalArgs, stages };
}

/** An exec-form (JSON array) argument list; throws for the shell form. */
function execForm(args: string): string[] {
  const parsed: unknown = JSON.parse(args);
  if (!Array.isArray(parsed) || !parsed.every((a) => typeof a === 'string')) throw new Error(`not exec form: ${args}`);
  return parsed;
}

/** ENV key=value pairs (the form the Dockerfile uses). */
function envPairs(args: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of args.match(/\S+=("[^"]*"|\S*)/g) ?? []) {
    const at = pair.indexOf('=');
    env[pair.slice(0, at)] = pair.slice(at + 1).replace(/^"(.*)"$/, '$1');
  }
  return env;
}

/** .dockerignore semantics: patterns in order, the last match wins, a match covers what is under it. */
function dockerignored(patterns: string[], file: string): boolean {
  const toRegExp = (glob: string): RegExp =>
    new RegExp(
      `^${glob
        .replace(/^\/+|\/+$/g, '')
        .split('')
        .map((c, i, all) => {
          if (c === '*' && all[i + 1] === '*') return '';
          if (c === '*' && all[i - 1] === '*') return '.*';
          if (c === '*') return '[^/]*';
          if (c === '?') return '[^/]';
          return c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
        })
        .join('')}$`,
    );
  const prefixes = file.split('/').map((_, i, parts) => parts.slice(0, i + 1).join('/'));
  let ignored = false;
  for (const raw of patterns) {
    const negated = raw.startsWith('!');
    const regexp = toRegExp(negated ? raw.slice(1) : raw);
    if (prefixes.some((prefix) => regexp.test(prefix))) ignored = !negated;
  }
  return ignored;
}

function run(
  command: string,
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { ...options, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, stdout: `${stdout}`, stderr: `${stderr}` });
    });
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Every file under `dir` with its size and modification time, to see that nothing was written. */
async function snapshot(dir: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  const walk = async (current: string): Promise<void> => {
    for (const entry of await readdir(current, { withFileTypes: true })) {
      const full = path.join(current, entry.name);
      const stat = await lstat(full);
      files.set(path.relative(dir, full), `${stat.size}:${stat.mtimeMs}`);
      if (entry.isDirectory()) await walk(full);
    }
  };
  await walk(dir);
  return files;
}

const dockerfile = parseDockerfile(await readFile(path.join(root, 'Dockerfile'), 'utf8'));
const runtime = dockerfile.stages.at(-1)!;
const stage = (name: string): Stage => {
  const found = dockerfile.stages.find((s) => s.name === name);
  if (!found) throw new Error(`no stage ${name}`);
  return found;
};
const runs = (s: Stage): string[] => s.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args);
const last = (s: Stage, keyword: string): Instruction | undefined =>
  s.instructions.filter((i) => i.keyword === keyword).at(-1);
/** The default configuration the image carries at /etc/mongo-tenant-proxy/config.yaml. */
const imageConfig = runtime.instructions.find(
  (i) => i.keyword === 'COPY' && i.heredoc !== undefined && i.args.endsWith('/etc/mongo-tenant-proxy/config.yaml'),
);

describe('Dockerfile', () => {
  it('builds in stages from a current Node LTS slim image', () => {
    expect(dockerfile.directives).toContain('syntax=docker/dockerfile:1'); // heredocs
    const image = dockerfile.args.find((i) => i.keyword === 'ARG' && i.args.startsWith('NODE_IMAGE='));
    const [, major, variant] = /^NODE_IMAGE=node:(\d+)-(\w+-)?slim$/.exec(image?.args ?? '') ?? [];
    expect(image?.args, 'ARG NODE_IMAGE=node:<LTS major>-<debian>-slim').toMatch(/^NODE_IMAGE=node:\d+-\w+-slim$/);
    expect(Number(major) % 2, 'an LTS (even) major').toBe(0);
    expect(Number(major)).toBeGreaterThanOrEqual(24);
    expect(variant).toBeTruthy();
    expect(dockerfile.stages.map((s) => s.name)).toEqual(['build', 'deps', 'runtime']);
    for (const s of dockerfile.stages) expect(s.base).toBe('${NODE_IMAGE}');

    expect(runs(stage('build'))).toEqual(expect.arrayContaining([expect.stringMatching(/^npm ci\b/), 'npm run build']));
    expect(runs(stage('deps')).some((r) => /^npm ci --omit=dev\b/.test(r))).toBe(true);
    // The runtime stage installs nothing: it copies the production node_modules and dist/.
    expect(runs(runtime).join('\n')).not.toMatch(/npm (ci|install)/);
    const copies = runtime.instructions.filter((i) => i.keyword === 'COPY').map((i) => i.args);
    expect(copies).toEqual(
      expect.arrayContaining([
        '--from=deps /app/node_modules ./node_modules',
        '--from=build /src/dist ./dist',
        'bin ./bin',
        'config ./config',
      ]),
    );
    expect(last(runtime, 'WORKDIR')?.args).toBe('/app');
  });

  it('runs as a non-root numeric user, without a shell between the runtime and Node', () => {
    const user = last(runtime, 'USER');
    expect(user?.args).toMatch(/^\d+:\d+$/); // numeric, so Kubernetes runAsNonRoot can verify it
    expect(Number(user!.args.split(':')[0])).toBeGreaterThan(0);
    // Nothing after USER runs as root or changes files.
    const after = runtime.instructions.filter((i) => i.line > user!.line).map((i) => i.keyword);
    expect(after.filter((k) => ['RUN', 'COPY', 'ADD', 'USER'].includes(k))).toEqual([]);

    // --expose-gc: a full collection once a burst of big messages is over (docs/deploy.md, "Memory").
    expect(execForm(last(runtime, 'ENTRYPOINT')!.args)).toEqual(['node', '--expose-gc', 'bin/mongo-tenant-proxy']);
    expect(execForm(last(runtime, 'CMD')!.args)).toEqual(['serve', '--config', '/etc/mongo-tenant-proxy/config.yaml']);
    const stopSignal = last(runtime, 'STOPSIGNAL');
    if (stopSignal) expect(stopSignal.args).toBe('SIGTERM');
    expect(runtime.instructions.map((i) => i.keyword)).not.toContain('VOLUME');
  });

  it('checks health with node against /healthz on the metrics listener, which listens on 0.0.0.0', () => {
    const healthcheck = last(runtime, 'HEALTHCHECK')!;
    expect(healthcheck).toBeDefined();
    const [, options, command] = /^((?:--\S+\s+)*)CMD\s+(.*)$/.exec(healthcheck.args) ?? [];
    expect(options).toMatch(/--interval=\S+/);
    expect(options).toMatch(/--timeout=\S+/);
    const argv = execForm(command!);
    expect(argv[0]).toBe('node');
    expect(argv.join(' ')).not.toMatch(/\b(curl|wget|sh)\b/);
    expect(argv.join(' ')).toContain('/healthz');

    expect(imageConfig?.heredoc).toBeDefined();
    const config = parse(imageConfig!.heredoc!);
    expect(config.metrics.listen).toBe('0.0.0.0:9216');
    const env = Object.assign(
      {},
      ...runtime.instructions.filter((i) => i.keyword === 'ENV').map((i) => envPairs(i.args)),
    );
    expect(env.HEALTHCHECK_URL).toBe('http://127.0.0.1:9216/healthz');
    expect(env.NODE_ENV).toBe('production');
    // Freed native memory goes back to the system after big messages (docs/deploy.md, "Memory").
    expect(env.MALLOC_ARENA_MAX).toBe('2');
    expect(env.MALLOC_MMAP_THRESHOLD_).toBe('65536');
  });

  it('sends only what the build copies as build context (.dockerignore), never node_modules, tests or keys', async () => {
    const patterns = (await readFile(path.join(root, '.dockerignore'), 'utf8'))
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    const sources = dockerfile.stages
      .flatMap((s) => s.instructions)
      .filter((i) => i.keyword === 'COPY' && !i.args.startsWith('--from') && i.heredoc === undefined)
      .flatMap((i) => i.args.split(/\s+/).slice(0, -1));
    expect(sources.length).toBeGreaterThan(5);
    for (const source of sources) {
      expect(existsSync(path.join(root, source)), `${source} exists`).toBe(true);
      expect(dockerignored(patterns, source), `${source} is in the build context`).toBe(false);
    }
    expect(dockerignored(patterns, 'src/main.ts')).toBe(false);
    for (const excluded of [
      'node_modules/yaml/package.json',
      'dist/main.js',
      '.git/HEAD',
      'test/helpers/certs.ts',
      'coverage/x',
      'helm/mongo-tenant-proxy/values.yaml',
      'server.key',
      'Dockerfile',
    ]) {
      expect(dockerignored(patterns, excluded), `${excluded} stays out of the build context`).toBe(true);
    }
  });
});

const pkg = JSON.parse(await readFile(path.join(root, 'package.json'), 'utf8')) as {
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};

describe('what the image runs, outside Docker', () => {
  let work = '';
  let app = '';
  let configFile = '';

  beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), 'mtp-container-test-'));
    app = path.join(work, 'app');
    // Build stage: `npm run build` is `tsc -p tsconfig.build.json`, run once per test run; its dist/ here.
    await cp(await builtDist(), path.join(app, 'dist'), { recursive: true });
    // Runtime stage: package.json, bin, config, and the packages `npm ci --omit=dev` installs
    // (every lockfile entry not marked dev; optional ones only when this platform has them).
    await cp(path.join(root, 'package.json'), path.join(app, 'package.json'));
    await cp(path.join(root, 'bin'), path.join(app, 'bin'), { recursive: true });
    await cp(path.join(root, 'config'), path.join(app, 'config'), { recursive: true });
    const lock = JSON.parse(await readFile(path.join(root, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { dev?: boolean; optional?: boolean }>;
    };
    for (const [location, entry] of Object.entries(lock.packages)) {
      if (location === '' || entry.dev) continue;
      const source = path.join(root, location);
      if (!existsSync(source)) {
        if (entry.optional) continue; // another platform's prebuilt binary
        throw new Error(`production package ${location} is not installed`);
      }
      await cp(source, path.join(app, location), { recursive: true, verbatimSymlinks: true });
    }
    // The image's default config file, at a path of its own.
    configFile = path.join(work, 'etc', 'mongo-tenant-proxy', 'config.yaml');
    await mkdir(path.dirname(configFile), { recursive: true });
    await writeFile(configFile, imageConfig!.heredoc!);
  }, 120_000);

  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('imports from dist/ only Node built-ins and `dependencies`, never a devDependency', async () => {
    const specifiers = new Map<string, string>(); // specifier -> a file importing it
    const walk = async (dir: string): Promise<void> => {
      for (const entry of await readdir(dir, { withFileTypes: true })) {
        const full = path.join(dir, entry.name);
        if (entry.isDirectory()) await walk(full);
        else if (entry.name.endsWith('.js')) {
          const text = await readFile(full, 'utf8');
          const patterns = [
            /^\s*(?:import|export)\b[^'";]*?\bfrom\s*['"]([^'"\s]+)['"]/gm, // static, possibly multi-line
            /^\s*import\s*['"]([^'"\s]+)['"]/gm, // side effect only
            /\bimport\s*\(\s*['"]([^'"\s]+)['"]\s*\)/g,
            /\brequire\s*\(\s*['"]([^'"\s]+)['"]\s*\)/g,
          ];
          for (const pattern of patterns)
            for (const m of text.matchAll(pattern)) specifiers.set(m[1]!, path.relative(app, full));
        }
      }
    };
    await walk(path.join(app, 'dist'));
    const bin = await readFile(path.join(app, 'bin', 'mongo-tenant-proxy'), 'utf8');
    for (const m of bin.matchAll(/\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g))
      specifiers.set(m[1]!, 'bin/mongo-tenant-proxy');

    const builtins = new Set(builtinModules);
    const packages = new Map<string, string>();
    for (const [specifier, file] of specifiers) {
      if (specifier.startsWith('.') || specifier.startsWith('/')) continue;
      if (specifier.startsWith('node:') || builtins.has(specifier)) continue;
      const name = specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : specifier.split('/')[0]!;
      packages.set(name, file);
    }
    expect(packages.size).toBeGreaterThan(5);
    for (const [name, file] of packages) {
      expect(pkg.devDependencies[name], `${file} imports the devDependency ${name}`).toBeUndefined();
      expect(pkg.dependencies[name], `${file} imports ${name}, which is not in dependencies`).toBeDefined();
    }
    expect(specifiers.get('../dist/cli/index.js')).toBe('bin/mongo-tenant-proxy');
  });

  it('runs the ENTRYPOINT with only the production dependencies: --help and validate-config', async () => {
    const entrypoint = execForm(last(runtime, 'ENTRYPOINT')!.args);
    const env = { PATH: process.env.PATH, NODE_ENV: 'production' };
    const help = await run(process.execPath, [...entrypoint.slice(1), '--help'], { cwd: app, env });
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toContain('mongo-tenant-proxy serve');
    const validate = await run(process.execPath, [...entrypoint.slice(1), 'validate-config', configFile], {
      cwd: app,
      env,
    });
    expect(validate.code, validate.stdout + validate.stderr).toBe(0);
    expect(validate.stdout.trim()).toBe('ok');
    expect(() => loadConfig({ file: configFile, env: {} })).not.toThrow();
  });

  it('serves with ENTRYPOINT + CMD, passes the HEALTHCHECK, exits 0 on SIGTERM, and writes nothing', async () => {
    const entrypoint = execForm(last(runtime, 'ENTRYPOINT')!.args);
    const cmd = execForm(last(runtime, 'CMD')!.args).map((a) =>
      a === '/etc/mongo-tenant-proxy/config.yaml' ? configFile : a,
    );
    const healthcheck = execForm(/CMD\s+(.*)$/.exec(last(runtime, 'HEALTHCHECK')!.args)![1]!);
    expect(entrypoint[0]).toBe('node');
    expect(healthcheck[0]).toBe('node');

    const metricsPort = await freePort();
    const imageEnv = Object.assign(
      {},
      ...runtime.instructions.filter((i) => i.keyword === 'ENV').map((i) => envPairs(i.args)),
    );
    const healthUrl = `http://127.0.0.1:${metricsPort}/healthz`;
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: path.join(work, 'no-home'), // never created: nothing may need a writable home
      ...imageEnv,
      HEALTHCHECK_URL: healthUrl,
      MTP_UPSTREAM: upstreamUri(),
      MTP_LISTEN: '127.0.0.1:0',
      // The image's 0.0.0.0, on a free port.
      MTP_METRICS_LISTEN: `0.0.0.0:${metricsPort}`,
    };
    const before = await snapshot(app);

    const child = spawn(process.execPath, [...entrypoint.slice(1), ...cmd], {
      cwd: app,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.on('exit', (code, signal) => resolve({ code, signal })),
    );
    try {
      const deadline = Date.now() + 30_000;
      let healthy = false;
      while (!healthy && Date.now() < deadline && child.exitCode === null) {
        const probe = await run(healthcheck[0] === 'node' ? process.execPath : healthcheck[0]!, healthcheck.slice(1), {
          env,
          timeout: 5_000,
        });
        healthy = probe.code === 0;
        if (!healthy) await new Promise((resolve) => setTimeout(resolve, 200));
      }
      expect(healthy, `the HEALTHCHECK never passed; proxy output:\n${output}`).toBe(true);
      expect(output).toContain('"msg":"listening"');
      // The metrics listener is on all interfaces, as the image's config says.
      expect(output).toContain(`0.0.0.0:${metricsPort}`);

      child.kill('SIGTERM');
      const result = await Promise.race([
        exited,
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new Error(`no exit 10 s after SIGTERM:\n${output}`)), 10_000),
        ),
      ]);
      expect(result, output).toEqual({ code: 0, signal: null });
      expect(output).toContain('"signal":"SIGTERM"');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }

    const down = await run(process.execPath, healthcheck.slice(1), { env, timeout: 5_000 });
    expect(down.code, 'the HEALTHCHECK fails once the proxy is gone').not.toBe(0);
    expect(await snapshot(app)).toEqual(before);
    expect(existsSync(env.HOME!)).toBe(false);
  });
});
