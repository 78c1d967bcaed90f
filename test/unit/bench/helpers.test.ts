// Pure helpers of the bench (bench/lib/proc.mjs, bench/lib/idle.mjs): the /proc/<pid>/stat parser
// that gives mongobetween's CPU time and RSS, and the hand-encoded handshake of the idle-connection
// measurement. The bench itself is not a test; these keep its numbers from being silently wrong.
import { describe, expect, it } from 'vitest';

interface ProcModule {
  parseProcStat(text: string): { userTicks: number; systemTicks: number; rssPages: number };
}
interface IdleModule {
  isMasterMessage(requestId: number): Buffer;
  completeReply(received: Buffer, requestId: number): number | null;
  replyOk(reply: Buffer): boolean;
}

const proc = (await import(new URL('../../../bench/lib/proc.mjs', import.meta.url).href)) as ProcModule;
const idle = (await import(new URL('../../../bench/lib/idle.mjs', import.meta.url).href)) as IdleModule;

/** A /proc/<pid>/stat line (52 fields) with the given command name, utime, stime and rss. */
function statLine(comm: string, utime: number, stime: number, rss: number): string {
  const fields = Array.from({ length: 52 }, (_, i) => String(i + 1));
  fields[0] = '4242';
  fields[1] = `(${comm})`;
  fields[2] = 'S';
  fields[13] = String(utime);
  fields[14] = String(stime);
  fields[23] = String(rss);
  return `${fields.join(' ')}\n`;
}

describe('parseProcStat', () => {
  it('reads utime, stime and rss', () => {
    expect(proc.parseProcStat(statLine('mongobetween', 1234, 56, 7890))).toEqual({
      userTicks: 1234,
      systemTicks: 56,
      rssPages: 7890,
    });
  });

  it('counts fields from the last parenthesis: a command name may hold spaces and parentheses', () => {
    expect(proc.parseProcStat(statLine('a) b (c', 11, 22, 33))).toEqual({
      userTicks: 11,
      systemTicks: 22,
      rssPages: 33,
    });
  });

  it('refuses text that is not a stat line', () => {
    expect(() => proc.parseProcStat('no parenthesis here')).toThrow(/not a \/proc/);
    expect(() => proc.parseProcStat('1 (x) S 2 3')).toThrow(/field 14/);
  });
});

describe('isMasterMessage', () => {
  it('is an OP_MSG with one body section {isMaster: 1, $db: "admin"}', () => {
    const message = idle.isMasterMessage(7);
    expect(message.readInt32LE(0)).toBe(message.length);
    expect(message.readInt32LE(4)).toBe(7); // requestID
    expect(message.readInt32LE(8)).toBe(0); // responseTo
    expect(message.readInt32LE(12)).toBe(2013); // OP_MSG
    expect(message.readUInt32LE(16)).toBe(0); // flagBits
    expect(message[20]).toBe(0); // section kind 0
    const document = message.subarray(21);
    expect(document.readInt32LE(0)).toBe(document.length);
    expect(document[document.length - 1]).toBe(0);
    // type 0x10 "isMaster" int32 1, type 0x02 "$db" string "admin"
    const expected = Buffer.concat([
      Buffer.from([0x10]),
      Buffer.from('isMaster\0', 'latin1'),
      Buffer.from([1, 0, 0, 0]),
      Buffer.from([0x02]),
      Buffer.from('$db\0', 'latin1'),
      Buffer.from([6, 0, 0, 0]),
      Buffer.from('admin\0', 'latin1'),
    ]);
    expect(document.subarray(4, document.length - 1)).toEqual(expected);
  });
});

describe('completeReply', () => {
  const reply = (length: number, responseTo: number): Buffer => {
    const buffer = Buffer.alloc(length);
    buffer.writeInt32LE(length, 0);
    buffer.writeInt32LE(99, 4);
    buffer.writeInt32LE(responseTo, 8);
    buffer.writeInt32LE(2013, 12);
    return buffer;
  };

  it('waits for the header and then for the whole message', () => {
    const whole = reply(40, 5);
    expect(idle.completeReply(whole.subarray(0, 10), 5)).toBeNull();
    expect(idle.completeReply(whole.subarray(0, 39), 5)).toBeNull();
    expect(idle.completeReply(whole, 5)).toBe(40);
  });

  it('refuses a reply to another request and a length shorter than a header', () => {
    expect(() => idle.completeReply(reply(40, 6), 5)).toThrow(/expected 5/);
    expect(() => idle.completeReply(reply(16, 5).fill(0, 0, 4), 5)).toThrow(/not a wire message/);
  });
});

describe('replyOk', () => {
  const withOk = (type: number, value: Buffer): Buffer =>
    Buffer.concat([Buffer.alloc(21), Buffer.from([type]), Buffer.from('ok\0', 'latin1'), value, Buffer.from([0])]);
  const double = (value: number): Buffer => {
    const buffer = Buffer.alloc(8);
    buffer.writeDoubleLE(value);
    return buffer;
  };

  it('accepts ok: 1 as a double or an int32 and refuses ok: 0', () => {
    expect(idle.replyOk(withOk(0x01, double(1)))).toBe(true);
    expect(idle.replyOk(withOk(0x10, Buffer.from([1, 0, 0, 0])))).toBe(true);
    expect(idle.replyOk(withOk(0x01, double(0)))).toBe(false);
    expect(idle.replyOk(withOk(0x10, Buffer.from([0, 0, 0, 0])))).toBe(false);
  });
});
