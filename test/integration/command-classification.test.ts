/**
 * Every command the upstream knows is classified (G1: deny by default, aliases included). The
 * list built from public sources (test/data/server-commands.json) is checked in the unit tests;
 * here the live server's own `listCommands` is checked too. FerretDB implements only a subset of
 * MongoDB's commands, so the check that matters runs when MONGODB_URI points at a real MongoDB.
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { MongoClient } from 'mongodb';
import { classify } from '../../src/policy/commands.js';
import { directClient, needsMongoDB } from '../helpers/upstream.js';
import { readFileSync } from 'node:fs';

const serverCommands = JSON.parse(readFileSync(new URL('../data/server-commands.json', import.meta.url), 'utf8')) as {
  commands: string[];
};

let direct: MongoClient | undefined;
afterAll(async () => {
  await direct?.close();
});

async function liveCommandNames(): Promise<string[]> {
  direct ??= directClient();
  const reply = await direct.db('admin').command({ listCommands: 1 });
  return Object.keys(reply.commands as Record<string, unknown>);
}

describe('catalogue G1: the server command list is fully classified', () => {
  it('classifies every command the test upstream lists, except names MongoDB itself does not have', async () => {
    const unknown = (await liveCommandNames()).filter((name) => {
      const decision = classify(name);
      return decision.kind === 'refuse' && decision.rule === 'command.unknown';
    });
    // Whatever the upstream lists that the table does not know must not be a MongoDB command
    // (FerretDB has a few debug commands of its own); those are refused as unknown.
    const mongodbCommands = new Set(serverCommands.commands);
    expect(unknown.filter((name) => mongodbCommands.has(name))).toEqual([]);
  });

  it.skipIf(needsMongoDB('listCommands of a real MongoDB server'))(
    'has an explicit classification for every command a real MongoDB lists',
    async () => {
      const unclassified = (await liveCommandNames()).filter((name) => {
        const decision = classify(name);
        return decision.kind === 'refuse' && decision.rule === 'command.unknown';
      });
      expect(unclassified).toEqual([]);
    },
  );
});
