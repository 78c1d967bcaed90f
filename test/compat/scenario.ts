/**
 * The compatibility suite's data model: a scenario (steps as data, read by every client program)
 * and what a client program reports for it. Client programs in other languages read the same
 * JSON file and print the same shape (see test/compat/clients/).
 */
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const SCENARIO_DIR = fileURLToPath(new URL('./scenarios/', import.meta.url));

/** The client programs, each run once per scenario direct and once through the proxy. */
export const CLIENTS = ['node7', 'node6', 'mongosh', 'mongoose', 'pymongo', 'go', 'java'] as const;
export type ClientName = (typeof CLIENTS)[number];

/** What must match between the direct and the proxied run of a step. */
export type Comparison = 'result' | 'outcome' | 'none';

export interface Step {
  id: string;
  op: string;
  /** Only these clients run the step (default: every client). */
  clients?: ClientName[];
  compare?: Comparison;
  /** The result is a list whose order the server does not define: sorted before comparing. */
  unordered?: boolean;
  collection?: string;
  [argument: string]: unknown;
}

export interface Scenario {
  name: string;
  description: string;
  /** Mongoose models (schema fields and options), used by the ODM steps. */
  models?: Record<string, unknown>;
  steps: Step[];
}

/** A driver or server error, reduced to what applications branch on. */
export interface StepError {
  code?: number;
  codeName?: string;
  /** Client-side errors without a server code (e.g. Mongoose's ValidationError). */
  name?: string;
  /** Per-operation write errors of a bulk write or insertMany: index and code. */
  writeErrors?: { index: number; code: number }[];
  /** For the report only: never compared (texts differ between servers and versions). */
  message?: string;
}

/** One step as a client program saw it; `result` is canonical Extended JSON. */
export interface StepOutcome {
  id: string;
  ok: boolean;
  result?: unknown;
  error?: StepError;
  /** The client cannot express the step (e.g. an ODM feature in a plain driver). */
  skipped?: string;
}

export interface ClientReport {
  client: string;
  /** Driver version the program used, for the report. */
  version?: string;
  steps: StepOutcome[];
}

export function loadScenarios(dir = SCENARIO_DIR): { file: string; scenario: Scenario }[] {
  return readdirSync(dir)
    .filter((name) => name.endsWith('.json'))
    .sort()
    .map((name) => {
      const file = `${dir}${name}`;
      return { file, scenario: JSON.parse(readFileSync(file, 'utf8')) as Scenario };
    });
}

export function stepsFor(scenario: Scenario, client: ClientName): Step[] {
  return scenario.steps.filter((step) => step.clients === undefined || step.clients.includes(client));
}
