/**
 * Reads a YAML configuration file into a layer. Duplicate keys are errors (the yaml library
 * would otherwise keep one silently), and every key's line is recorded so later validation
 * errors can say `from config.yaml:12`.
 */

import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node } from 'yaml';
import { ConfigError } from '../errors.js';
import { pathKey, type Layer, type PathSegment } from './layers.js';

/**
 * Far above any real configuration. A reload reads whatever the watched path holds: a huge or
 * endless file (a device, a FIFO) must be refused, not read into memory on the event loop.
 */
export const MAX_CONFIG_FILE_BYTES = 4 * 1024 * 1024;

/** Refuse alias-bomb documents long before they could exhaust memory. */
const MAX_ALIAS_COUNT = 100;

function describeReadError(error: unknown): string {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOENT':
      return 'cannot read config file: no such file';
    case 'EACCES':
    case 'EPERM':
      return 'cannot read config file: permission denied';
    case 'EISDIR':
      return 'cannot read config file: it is a directory';
    default:
      return `cannot read config file: ${error instanceof Error ? error.message : String(error)}`;
  }
}

/** The first line of a yaml error, without the source excerpt (which could show secrets). */
function firstLine(message: string): string {
  return (message.split('\n', 1)[0] ?? message).replace(/:\s*$/, '');
}

export function readYamlFile(file: string): Layer {
  let text: string;
  try {
    text = readBoundedFile(file, MAX_CONFIG_FILE_BYTES);
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError(file, describeReadError(error));
  }
  return parseYamlConfig(text, file);
}

/** A regular file's text, at most `maxBytes` (checked while reading too: the file may grow after fstat). */
function readBoundedFile(file: string, maxBytes: number): string {
  const fd = openSync(file, 'r');
  try {
    const stats = fstatSync(fd);
    if (stats.isDirectory()) throw new ConfigError(file, describeReadError({ code: 'EISDIR' }));
    if (!stats.isFile()) throw new ConfigError(file, 'cannot read config file: not a regular file');
    const tooLarge = (): ConfigError => new ConfigError(file, `cannot read config file: larger than ${maxBytes} bytes`);
    if (stats.size > maxBytes) throw tooLarge();
    const buffer = Buffer.alloc(maxBytes + 1);
    let length = 0;
    for (;;) {
      const read = readSync(fd, buffer, length, buffer.length - length, null);
      if (read === 0) break;
      length += read;
      if (length > maxBytes) throw tooLarge();
    }
    return buffer.toString('utf8', 0, length);
  } finally {
    closeSync(fd);
  }
}

/** Parses YAML text (named `origin` in messages) into a layer. */
export function parseYamlConfig(text: string, origin: string): Layer {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: false, prettyErrors: false, version: '1.2' });
  const lineOf = (node: { range?: [number, number, number] | null } | null | undefined): number | undefined =>
    node?.range ? lineCounter.linePos(node.range[0]).line : undefined;

  const syntaxError = doc.errors[0];
  if (syntaxError !== undefined) {
    const pos = syntaxError.linePos?.[0] ?? lineCounter.linePos(syntaxError.pos[0]);
    throw new ConfigError(`${origin}:${pos.line}:${pos.col}`, `invalid YAML: ${firstLine(syntaxError.message)}`);
  }

  const sources = new Map<string, string>();
  const walk = (node: unknown, path: PathSegment[]): void => {
    if (isMap(node)) {
      const seen = new Map<string, number | undefined>();
      for (const pair of node.items) {
        const keyNode = pair.key as Node | null;
        const line = lineOf(keyNode);
        const where = line === undefined ? origin : `${origin}:${line}`;
        if (!isScalar(keyNode) || (typeof keyNode.value !== 'string' && typeof keyNode.value !== 'number')) {
          throw new ConfigError(pathKey(path) || where, `keys must be plain names (${where})`);
        }
        const name = String(keyNode.value);
        const childPath = [...path, name];
        const key = pathKey(childPath);
        if (name === '__proto__') throw new ConfigError(key, `unknown setting (${where})`);
        if (seen.has(name)) {
          const first = seen.get(name);
          throw new ConfigError(
            key,
            `duplicate key (${where}${first === undefined ? '' : `, first set on line ${first}`})`,
          );
        }
        seen.set(name, line);
        sources.set(key, where);
        walk(pair.value, childPath);
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, index) => {
        const line = lineOf(item as Node | null);
        const childPath = [...path, index];
        if (line !== undefined) sources.set(pathKey(childPath), `${origin}:${line}`);
        walk(item, childPath);
      });
    }
  };
  walk(doc.contents, []);

  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (error) {
    throw new ConfigError(origin, `invalid YAML: ${firstLine(error instanceof Error ? error.message : String(error))}`);
  }
  if (data === null || data === undefined) return { data: {}, sources };
  if (typeof data !== 'object' || Array.isArray(data)) {
    throw new ConfigError(origin, `must be a mapping of settings (got ${Array.isArray(data) ? 'a list' : typeof data})`);
  }
  return { data: data as Record<string, unknown>, sources };
}
