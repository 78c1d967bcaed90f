/**
 * The layer rules in eslint.config.js (docs/architecture.md's table) refuse what they should and
 * let through what the tree needs, for files that exist and files not written yet.
 */
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';

const eslint = new ESLint({ cwd: new URL('../..', import.meta.url).pathname });

/** Rule ids reported for `code` as if it were the file `path`, layer rules only. */
async function layerFindings(path: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: path });
  return (result?.messages ?? [])
    .filter((message) => message.ruleId === 'no-restricted-imports' || message.ruleId === 'no-restricted-syntax')
    .map((message) => `${message.ruleId}: ${message.message}`);
}

const refused: Array<[string, string]> = [
  ['src/wire/new.ts', "import '../config/types.js';"],
  ['src/wire/new.ts', "import { helloReply } from '../protocol/hello.js';"],
  ['src/wire/new.ts', "import 'yaml';"],
  ['src/wire/op-msg.ts', "import { serialize } from 'bson';"],
  ['src/wire/sub/new.ts', "import '../../server/listener.js';"],
  ['src/protocol/new.ts', "import '../identity/types.js';"],
  ['src/identity/new.ts', "import '../upstream/connection.js';"],
  ['src/identity/new.ts', "import { serialize } from 'bson';"],
  ['src/policy/new.ts', "import '../rewrite/engine.js';"],
  ['src/policy/new.ts', "export { capMaxTimeMS } from '../rewrite/reads.js';"],
  ['src/policy/new.ts', "type T = import('../rewrite/engine.js').Decision;"],
  ['src/policy/new.ts', "import '../server/listener.js';"],
  ['src/policy/new.ts', "import '../config/load.js';"],
  ['src/rewrite/new.ts', "import '../server/listener.js';"],
  ['src/rewrite/new.ts', "import '../upstream/upstream.js';"],
  ['src/upstream/new.ts', "import '../server/listener.js';"],
  ['src/upstream/new.ts', "import '../policy/commands.js';"],
  ['src/upstream/new.ts', "import '../identity/types.js';"],
  ['src/upstream/new.ts', "import '../observability/metrics.js';"],
  ['src/upstream/server-set/new.ts', "import '../../server/client-connection.js';"],
  ['src/upstream/new.ts', "import { pino } from 'pino';"],
  ['src/observability/new.ts', "import '../wire/bson.js';"],
  ['src/observability/new.ts', "import '../config/load.js';"],
  ['src/server/new.ts', "import '../main.js';"],
  ['src/server/new.ts', "import '../config/load.js';"],
  ['src/server/new.ts', "import { Registry } from 'prom-client';"],
  ['src/server/route/new.ts', "import '../../../test/helpers/proxy.js';"],
  ['src/server/new.ts', "import { MongoClient } from 'mongodb';"],
  ['src/config/new.ts', "import '../wire/bson.js';"],
  ['src/cli/index.ts', "import '../server/listener.js';"],
  ['src/main.ts', "import './cli/index.js';"],
  ['src/main.ts', "import '../test/helpers/proxy.js';"],
  ['src/errors.ts', "import { inspect } from 'node:util';"],
  ['src/secrets.ts', "import './errors.js';"],
  ['src/newlayer/new.ts', "import '../errors.js';"],
  ['src/newlayer/deep/new.ts', "import '../../wire/bson.js';"],
  ['src/newlayer/new.ts', "import { serialize } from 'bson';"],
  ['src/new.ts', "import './errors.js';"],
];

const allowed: Array<[string, string]> = [
  ['src/wire/bson.ts', "import { serialize } from 'bson';"],
  ['src/wire/new.ts', "import { ErrorCodes } from '../errors.js'; import { crc32c } from '@node-rs/crc32';"],
  ['src/protocol/new.ts', "import '../wire/op-msg.js'; import type { ProxyConfig } from '../config/types.js';"],
  ['src/rewrite/new.ts', "import type { TenantContext } from '../policy/types.js'; import './filter.js';"],
  ['src/upstream/new.ts', "import type { Logger } from 'pino'; import { maskUri } from '../secrets.js';"],
  ['src/upstream/server-set/new.ts', "import '../pool.js'; import '../../wire/bson.js'; import './other.js';"],
  ['src/identity/new.ts', "import '../protocol/scram-crypto.js'; import type { Logger } from 'pino';"],
  ['src/observability/new.ts', "import { Registry } from 'prom-client'; import { pino } from 'pino';"],
  ['src/server/new.ts', "import '../upstream/upstream.js'; import '../rewrite/engine.js'; import '../errors.js';"],
  ['src/config/new.ts', "import '../errors.js'; import '../secrets.js'; import './types.js';"],
  ['src/cli/index.ts', "import '../config/index.js'; const main = await import('../main.js');"],
  ['src/main.ts', "import './server/listener.js'; import './upstream/upstream.js';"],
  ['src/newlayer/deep/new.ts', "import '../sibling.js'; import './other.js'; import 'node:fs';"],
];

describe('layer rules (eslint.config.js)', () => {
  it.each(refused)('%s: refuses %s', async (path, code) => {
    expect(await layerFindings(path, code)).not.toEqual([]);
  });

  it.each(allowed)('%s: allows %s', async (path, code) => {
    expect(await layerFindings(path, code)).toEqual([]);
  });
});
