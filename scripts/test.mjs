#!/usr/bin/env node
// The checks of `npm test` after set-up: the type check, ESLint and Prettier run beside the vitest
// run instead of before it. The test run spends much of its time waiting on its upstreams and on
// socket round trips, and on a 2-core machine the three checks (about 1.5 minutes of CPU together)
// would otherwise add their whole time to the run's. (Not at a lower priority: on a machine loaded
// by others, niced checks got almost no CPU and outlasted the tests.) vitest's output streams as
// usual; each check's output is printed when it ends (in full only when it fails). The command
// fails when any of the four fails; vitest always runs to its end (its teardown stops the
// upstreams). Arguments are passed to vitest (`npm test -- test/unit/` still checks everything).
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name) => path.join(root, 'node_modules', '.bin', name);

const checks = [
  ['typecheck', bin('tsc'), ['-p', 'tsconfig.json', '--noEmit']],
  ['eslint', bin('eslint'), ['--cache', '--cache-location', '.cache/eslint/', '--cache-strategy', 'content', '.']],
  ['prettier', bin('prettier'), ['--check', '.']],
];

const started = Date.now();
const seconds = () => ((Date.now() - started) / 1000).toFixed(0);

function runCheck([name, command, args]) {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    child.on('error', (error) => (output += `${error.message}\n`));
    child.on('close', (code, signal) => {
      const ok = code === 0;
      process.stdout.write(
        `[checks] ${name} ${ok ? 'passed' : `FAILED (${signal ?? `exit ${code}`})`} after ${seconds()} s\n`,
      );
      if (!ok) process.stdout.write(output.endsWith('\n') || output === '' ? output : `${output}\n`);
      resolve(ok);
    });
  });
}

function runVitest() {
  return new Promise((resolve) => {
    const child = spawn(bin('vitest'), ['run', '--coverage', ...process.argv.slice(2)], {
      cwd: root,
      stdio: 'inherit',
    });
    child.on('error', (error) => {
      process.stderr.write(`[checks] vitest did not start: ${error.message}\n`);
      resolve(false);
    });
    child.on('close', (code) => {
      process.stdout.write(`[checks] vitest ${code === 0 ? 'passed' : `FAILED (exit ${code})`} after ${seconds()} s\n`);
      resolve(code === 0);
    });
  });
}

const results = await Promise.all([runVitest(), ...checks.map(runCheck)]);
process.exitCode = results.every(Boolean) ? 0 : 1;
