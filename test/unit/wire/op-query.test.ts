import { deserialize } from 'bson';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, WireProtocolError } from '../../../src/errors.js';
import { OpCode } from '../../../src/wire/constants.js';
import { encodeOpReply, parseOpQuery, parseOpReply, unwrapLegacyCommand } from '../../../src/wire/op-query.js';
import { bson, cstring, frame, hex, int32, nested } from './fixtures.js';

const opts = { maxBsonDepth: 200 };

function opQuery(parts: {
  flags?: number;
  ns?: Buffer;
  skip?: number;
  ret?: number;
  query: Buffer;
  fields?: Buffer;
  extra?: Buffer;
}): Buffer {
  return frame(
    OpCode.OP_QUERY,
    [
      int32(parts.flags ?? 0),
      parts.ns ?? cstring('admin.$cmd'),
      int32(parts.skip ?? 0),
      int32(parts.ret ?? -1),
      parts.query,
      parts.fields ?? Buffer.alloc(0),
      parts.extra ?? Buffer.alloc(0),
    ],
    { requestId: 21 },
  );
}

function wireError(run: () => unknown): WireProtocolError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(WireProtocolError);
    return error as WireProtocolError;
  }
  throw new Error('expected a WireProtocolError');
}

describe('parseOpQuery', () => {
  it('parses a hand-written legacy isMaster', () => {
    // {isMaster: 1}: int32 isMaster = 1
    const golden = hex(`
      3a000000 05000000 00000000 d4070000
      04000000 61646d696e2e24636d6400 00000000 ffffffff
      13000000 10 69734d617374657200 01000000 00`);
    const q = parseOpQuery(golden, opts);
    expect(q).toMatchObject({
      requestId: 5,
      responseTo: 0,
      flags: 4,
      fullCollectionName: 'admin.$cmd',
      numberToSkip: 0,
      numberToReturn: -1,
      returnFieldsSelector: null,
    });
    expect(deserialize(q.query)).toEqual({ isMaster: 1 });
    expect(unwrapLegacyCommand(q.query).name).toBe('isMaster');
  });

  it('parses the optional returnFieldsSelector', () => {
    const q = parseOpQuery(opQuery({ query: bson({ hello: 1 }), fields: bson({ a: 1 }) }), opts);
    expect(deserialize(q.returnFieldsSelector!)).toEqual({ a: 1 });
  });

  it('rejects bytes after the selector, lying lengths and truncation as fatal', () => {
    const fatal = (bytes: Buffer, message: RegExp) => {
      const error = wireError(() => parseOpQuery(bytes, opts));
      expect(error.fatal).toBe(true);
      expect(error.message).toMatch(message);
    };
    fatal(opQuery({ query: bson({ hello: 1 }), fields: bson({}), extra: hex('00') }), /trailing bytes|document length/);
    fatal(opQuery({ query: bson({ hello: 1 }), extra: hex('0102') }), /returnFieldsSelector/);
    fatal(frame(OpCode.OP_QUERY, [int32(0), Buffer.from('admin.$cmd')]), /not terminated/);
    fatal(frame(OpCode.OP_QUERY, [hex('00')]), /too short for flags/);
    fatal(frame(OpCode.OP_QUERY, [int32(0), cstring('a.b'), int32(0)]), /numberToSkip/);
    fatal(
      frame(OpCode.OP_QUERY, [int32(0), cstring('a.b'), int32(0), int32(0), hex('0a000000')]),
      /query: document length 10/,
    );
    fatal(
      frame(OpCode.OP_QUERY, [int32(0), cstring('a.b'), int32(0), int32(0), hex('0a00')]),
      /query: document length runs/,
    );
    const lying = opQuery({ query: bson({ hello: 1 }) });
    lying.writeInt32LE(lying.length - 1, 0);
    fatal(lying, /does not match/);
    fatal(frame(OpCode.OP_MSG, [int32(0)]), /not OP_QUERY/);
  });

  it('rejects duplicate keys by default, accepts them on request', () => {
    const dup = Buffer.concat([int32(19), hex('10 6100 01000000 10 6100 02000000 00')]);
    const bytes = opQuery({ query: dup });
    const error = wireError(() => parseOpQuery(bytes, opts));
    expect({ code: error.code, fatal: error.fatal }).toEqual({ code: ErrorCodes.InvalidBSON, fatal: false });
    expect(parseOpQuery(bytes, { ...opts, rejectDuplicateKeys: false }).query).toEqual(dup);
  });

  it('rejects invalid BSON and invalid namespaces as non-fatal', () => {
    const deep = wireError(() => parseOpQuery(opQuery({ query: nested(300) }), opts));
    expect({ code: deep.code, fatal: deep.fatal }).toEqual({ code: ErrorCodes.Overflow, fatal: false });
    const ns = wireError(() => parseOpQuery(opQuery({ ns: hex('61ff2e6200'), query: bson({ hello: 1 }) }), opts));
    expect({ code: ns.code, fatal: ns.fatal }).toEqual({ code: ErrorCodes.InvalidNamespace, fatal: false });
  });
});

describe('unwrapLegacyCommand', () => {
  it('returns an unwrapped command as is', () => {
    const query = bson({ ismaster: 1, client: { driver: { name: 'x' } } });
    const cmd = unwrapLegacyCommand(query);
    expect(cmd).toMatchObject({ name: 'ismaster', wrapped: false });
    expect(cmd.command).toBe(query);
    expect(cmd.modifiers.map((m) => m.name)).toEqual(['client']);
  });

  it('unwraps $query and query, keeping the modifiers', () => {
    for (const wrapper of ['$query', 'query']) {
      const query = bson({
        [wrapper]: { isMaster: 1, helloOk: true },
        $readPreference: { mode: 'secondaryPreferred' },
      });
      const cmd = unwrapLegacyCommand(query);
      expect(cmd.name).toBe('isMaster');
      expect(cmd.wrapped).toBe(true);
      expect(deserialize(cmd.command)).toEqual({ isMaster: 1, helloOk: true });
      expect(cmd.modifiers.map((m) => m.name)).toEqual(['$readPreference']);
    }
  });

  it('exposes what a wrapper hides: {$query: {find: "c"}} reads as find', () => {
    expect(unwrapLegacyCommand(bson({ $query: { find: 'c' }, $orderby: { a: 1 } })).name).toBe('find');
  });

  it('only unwraps when the wrapper is the first key', () => {
    expect(unwrapLegacyCommand(bson({ isMaster: 1, $query: { find: 'c' } })).name).toBe('isMaster');
  });

  it('rejects empty commands and non-document wrappers', () => {
    expect(wireError(() => unwrapLegacyCommand(bson({}))).code).toBe(ErrorCodes.BadValue);
    expect(wireError(() => unwrapLegacyCommand(bson({ $query: {} }))).code).toBe(ErrorCodes.BadValue);
    expect(wireError(() => unwrapLegacyCommand(bson({ $query: 'isMaster' }))).code).toBe(ErrorCodes.TypeMismatch);
  });
});

describe('encodeOpReply', () => {
  it('produces the hand-built bytes', () => {
    const doc = bson({ ismaster: true, ok: 1 });
    const expected = Buffer.concat([
      int32(16 + 20 + doc.length),
      int32(99),
      int32(21),
      int32(OpCode.OP_REPLY),
      int32(8),
      hex('0100000000000080'),
      int32(3),
      int32(1),
      doc,
    ]);
    expect(
      encodeOpReply({
        requestId: 99,
        responseTo: 21,
        responseFlags: 8,
        cursorId: -(2n ** 63n) + 1n,
        startingFrom: 3,
        documents: [doc],
      }),
    ).toEqual(expected);
  });

  it('defaults to no flags, cursor 0, and round-trips through parseOpReply', () => {
    const docs = [bson({ a: 1 }), bson({ b: 'x' })];
    const out = encodeOpReply({ requestId: 1, responseTo: 2, documents: docs });
    expect(out.subarray(16, 36)).toEqual(Buffer.concat([int32(0), Buffer.alloc(8), int32(0), int32(2)]));
    expect(parseOpReply(out, opts)).toEqual({
      requestId: 1,
      responseTo: 2,
      responseFlags: 0,
      cursorId: 0n,
      startingFrom: 0,
      documents: docs,
    });
    expect(encodeOpReply({ requestId: 1, responseTo: 2, documents: [] }).length).toBe(36);
  });

  it('parseOpReply rejects a numberReturned lie, truncation and other opcodes', () => {
    const out = encodeOpReply({ requestId: 1, responseTo: 2, documents: [bson({ a: 1 })] });
    out.writeInt32LE(2, 32);
    expect(wireError(() => parseOpReply(out, opts)).fatal).toBe(true);
    expect(wireError(() => parseOpReply(frame(OpCode.OP_REPLY, [int32(0)]), opts)).message).toMatch(/too short/);
    expect(wireError(() => parseOpReply(frame(OpCode.OP_MSG, [Buffer.alloc(20)]), opts)).message).toMatch(
      /not OP_REPLY/,
    );
    const lying = encodeOpReply({ requestId: 1, responseTo: 2, documents: [] });
    lying.writeInt32LE(37, 0);
    expect(wireError(() => parseOpReply(lying, opts)).message).toMatch(/does not match/);
  });
});
