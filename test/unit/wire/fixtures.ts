/**
 * Independent byte builders for wire tests. They never call the encoders under test: frames are
 * assembled by hand from little-endian fields and documents from the `bson` package.
 */

import { serialize } from 'bson';

export const bson = (doc: Record<string, unknown>): Buffer => Buffer.from(serialize(doc));

export function int32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(value | 0);
  return b;
}

export function uint32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value >>> 0);
  return b;
}

export const cstring = (s: string): Buffer => Buffer.concat([Buffer.from(s, 'utf8'), Buffer.from([0])]);
export const hex = (h: string): Buffer => Buffer.from(h.replace(/\s+/g, ''), 'hex');

/** A frame: header with the real length (unless `length` overrides it) followed by `parts`. */
export function frame(
  opCode: number,
  parts: Buffer[],
  ids: { requestId?: number; responseTo?: number; length?: number } = {},
): Buffer {
  const body = Buffer.concat(parts);
  return Buffer.concat([
    int32(ids.length ?? 16 + body.length),
    int32(ids.requestId ?? 1),
    int32(ids.responseTo ?? 0),
    int32(opCode),
    body,
  ]);
}

export const kind0 = (doc: Buffer): Buffer => Buffer.concat([Buffer.from([0]), doc]);

export function kind1(identifier: string, docs: Buffer[], sizeOverride?: number): Buffer {
  const id = cstring(identifier);
  const payload = Buffer.concat(docs);
  return Buffer.concat([Buffer.from([1]), int32(sizeOverride ?? 4 + id.length + payload.length), id, payload]);
}

export function opMsg(
  flagBits: number,
  sections: Buffer[],
  ids: { requestId?: number; responseTo?: number } = {},
): Buffer {
  return frame(2013, [uint32(flagBits), ...sections], ids);
}

/** A raw BSON document from hand-made element bytes (the length and terminator added). */
export function rawDoc(...elements: Buffer[]): Buffer {
  const body = Buffer.concat(elements);
  return Buffer.concat([int32(4 + body.length + 1), body, Buffer.from([0])]);
}

/** A raw BSON document of `[type, name, value bytes]` elements (names as latin1 bytes: any byte goes). */
export function rawDocOf(parts: ReadonlyArray<readonly [number, string, Buffer]>): Buffer {
  return rawDoc(...parts.map(([type, name, value]) => element(type, Buffer.from(name, 'latin1'), value)));
}

export function int64(value: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigInt64LE(value);
  return b;
}

export function double(value: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeDoubleLE(value);
  return b;
}

export function element(type: number, name: string | Buffer, value: Buffer): Buffer {
  const key = typeof name === 'string' ? cstring(name) : Buffer.concat([name, Buffer.from([0])]);
  return Buffer.concat([Buffer.from([type]), key, value]);
}

export function bsonString(s: string | Buffer): Buffer {
  const bytes = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
  return Buffer.concat([int32(bytes.length + 1), bytes, Buffer.from([0])]);
}

/** `depth` documents nested as {a:{a:{...}}}, built iteratively from the inside out. */
export function nested(depth: number): Buffer {
  // Each level adds: int32 length, type 0x03, "a\0", ..., terminator: 8 bytes.
  const total = 5 + depth * 8;
  const out = Buffer.alloc(total);
  for (let level = 0; level <= depth; level++) {
    const start = level * 7;
    const length = total - level * 8;
    out.writeInt32LE(length, start);
    if (level < depth) {
      out[start + 4] = 0x03;
      out[start + 5] = 0x61;
      out[start + 6] = 0;
    }
  }
  // terminators: all zero already (Buffer.alloc)
  return out;
}
