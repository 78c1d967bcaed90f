import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../../src/errors.js';
import { INTERNAL_BSON_SLACK, checkRequestSize } from '../../../src/upstream/size-limits.js';
import { serialize } from '../../../src/wire/bson.js';
import { OpMsgFlag } from '../../../src/wire/constants.js';
import { encodeOpMsg } from '../../../src/wire/op-msg.js';

const LIMITS = { maxBsonObjectSize: 1_000, maxMessageSizeBytes: 10_000, maxWriteBatchSize: 5 };

function frame(body: object, sequences: Array<{ identifier: string; documents: object[] }> = [], flagBits = 0): Buffer {
  return encodeOpMsg({
    requestId: 1,
    responseTo: 0,
    flagBits,
    body: serialize(body),
    sequences: sequences.map(({ identifier, documents }) => ({
      identifier,
      documents: documents.map((document) => Buffer.from(serialize(document))),
    })),
  });
}

/** A document of exactly `size` bytes. */
function sized(size: number): object {
  const overhead = serialize({ s: '' }).length;
  return { s: 'x'.repeat(size - overhead) };
}

describe('checkRequestSize (issue 15: the upstream limits after the rewrite)', () => {
  it('passes a request within every limit', () => {
    expect(
      checkRequestSize(
        frame({ insert: 'c', $db: 'd' }, [{ identifier: 'documents', documents: [sized(1_000)] }]),
        LIMITS,
      ),
    ).toBeUndefined();
  });

  it('an inserted document over maxBsonObjectSize: BSONObjectTooLarge, naming its index', () => {
    const error = checkRequestSize(
      frame({ insert: 'c', $db: 'd' }, [{ identifier: 'documents', documents: [sized(20), sized(1_001)] }]),
      LIMITS,
    );
    expect(error).toMatchObject({ code: ErrorCodes.BSONObjectTooLarge, codeName: 'BSONObjectTooLarge' });
    expect(error?.message).toMatch(/object to insert too large.*size in bytes: 1001, max size: 1000 \(document 1/);
    expect(error?.labels).toEqual([]);
  });

  it('update statements and the body may use the internal slack, not more', () => {
    const limits = { ...LIMITS, maxMessageSizeBytes: 100_000 };
    const update = (size: number) =>
      frame({ update: 'c', $db: 'd' }, [{ identifier: 'updates', documents: [sized(size)] }]);
    expect(checkRequestSize(update(1_000 + INTERNAL_BSON_SLACK), limits)).toBeUndefined();
    expect(checkRequestSize(update(1_001 + INTERNAL_BSON_SLACK), limits)?.code).toBe(ErrorCodes.BSONObjectTooLarge);
    expect(checkRequestSize(frame(sized(1_000 + INTERNAL_BSON_SLACK)), limits)).toBeUndefined();
    const body = checkRequestSize(frame(sized(1_001 + INTERNAL_BSON_SLACK)), limits);
    expect(body?.code).toBe(ErrorCodes.BSONObjectTooLarge);
    expect(body?.message).toMatch(/BSONObj size: 17385 \(0x43E9\) is invalid/);
  });

  it('a message over maxMessageSizeBytes: BSONObjectTooLarge telling to send smaller batches', () => {
    const documents = Array.from({ length: 5 }, () => sized(1_000));
    const ok = frame({ insert: 'c', $db: 'd' }, [{ identifier: 'documents', documents }]);
    expect(checkRequestSize(ok, { ...LIMITS, maxMessageSizeBytes: ok.length })).toBeUndefined();
    const error = checkRequestSize(ok, { ...LIMITS, maxMessageSizeBytes: ok.length - 1 });
    expect(error?.code).toBe(ErrorCodes.BSONObjectTooLarge);
    expect(error?.message).toMatch(/maxMessageSizeBytes.*send fewer or smaller documents per batch/);
  });

  it('more statements than maxWriteBatchSize: InvalidLength as the server words it', () => {
    const limits = { ...LIMITS, maxMessageSizeBytes: 100_000 };
    const six = Array.from({ length: 6 }, (_, i) => ({ q: { i }, u: {} }));
    const error = checkRequestSize(
      frame({ update: 'c', $db: 'd' }, [{ identifier: 'updates', documents: six }]),
      limits,
    );
    expect(error).toMatchObject({ code: ErrorCodes.InvalidLength, codeName: 'InvalidLength' });
    expect(error?.message).toBe('Write batch sizes must be between 1 and 5. Got 6 operations.');
    expect(
      checkRequestSize(frame({ update: 'c', $db: 'd' }, [{ identifier: 'updates', documents: six.slice(1) }]), limits),
    ).toBeUndefined();
  });

  it('tolerates a checksum flag and non-OP_MSG frames', () => {
    const withFlag = frame({ ping: 1 }, [], OpMsgFlag.checksumPresent);
    expect(checkRequestSize(Buffer.concat([withFlag, Buffer.alloc(4)]), LIMITS)).toBeUndefined();
    const legacy = Buffer.alloc(20);
    legacy.writeInt32LE(20, 0);
    legacy.writeInt32LE(2004, 12);
    expect(checkRequestSize(legacy, LIMITS)).toBeUndefined();
  });
});
