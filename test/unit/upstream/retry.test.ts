import { describe, expect, it } from 'vitest';
import { ErrorCodes, UpstreamError, codeNameOf } from '../../../src/errors.js';
import { NETWORK_ERROR_LABEL } from '../../../src/upstream/connection.js';
import {
  MAX_TIME_REPLY_GRACE_MS,
  replyTimeoutMS,
  ErrorLabels,
  RETRY_DEFAULTS,
  RETRYABLE_ERROR_CODES,
  RETRYABLE_READ_ONLY_ERROR_CODES,
  type RetryCommand,
  backoffDelays,
  classifyForRetry,
  clientDeadlineMS,
  isRetryableError,
  retryErrorOf,
  translateUpstreamFailure,
  upstreamSupportsRetryableWrites,
} from '../../../src/upstream/retry.js';
import { describeServer } from '../../../src/upstream/topology.js';

function cmd(name: string, over: Partial<RetryCommand> = {}): RetryCommand {
  return { name, hasTxnNumber: false, inTransaction: false, pipelineWrites: false, ...over };
}

/** A deterministic random source cycling through `values`. */
function sequence(...values: number[]): () => number {
  let i = 0;
  return () => values[i++ % values.length] ?? 0;
}

describe('classifyForRetry', () => {
  it.each(['find', 'aggregate', 'count', 'distinct', 'listCollections', 'listIndexes', 'listDatabases'])(
    'the read %s is retryable, with or without a txnNumber',
    (name) => {
      expect(classifyForRetry(cmd(name))).toBe('read');
      expect(classifyForRetry(cmd(name, { hasTxnNumber: true }))).toBe('read');
    },
  );

  it.each(['hello', 'isMaster', 'ismaster', 'ping', 'buildInfo', 'buildinfo'])(
    'the handshake-like %s is retryable',
    (name) => {
      expect(classifyForRetry(cmd(name))).toBe('read');
    },
  );

  it('aggregate with $out or $merge is never retried, not even with a txnNumber', () => {
    expect(classifyForRetry(cmd('aggregate', { pipelineWrites: true }))).toBe('never');
    expect(classifyForRetry(cmd('aggregate', { pipelineWrites: true, hasTxnNumber: true }))).toBe('never');
  });

  it('pipelineWrites only matters for aggregate', () => {
    expect(classifyForRetry(cmd('find', { pipelineWrites: true }))).toBe('read');
  });

  it.each([
    'getMore',
    'killCursors',
    'saslStart',
    'saslContinue',
    'authenticate',
    'mapReduce',
    'explain',
    'endSessions',
  ])('%s is never retried', (name) => {
    expect(classifyForRetry(cmd(name))).toBe('never');
    expect(classifyForRetry(cmd(name, { hasTxnNumber: true }))).toBe('never');
  });

  it.each(['insert', 'update', 'delete', 'findAndModify', 'findandmodify', 'bulkWrite'])(
    'the write %s is retryable only with a txnNumber',
    (name) => {
      expect(classifyForRetry(cmd(name, { hasTxnNumber: true }))).toBe('retryable-write');
      expect(classifyForRetry(cmd(name))).toBe('never');
    },
  );

  it('a write with a txnNumber is never retried against an upstream without retryable writes', () => {
    expect(classifyForRetry(cmd('insert', { hasTxnNumber: true }), { retryableWrites: false })).toBe('never');
    expect(classifyForRetry(cmd('insert', { hasTxnNumber: true }), { retryableWrites: true })).toBe('retryable-write');
    expect(classifyForRetry(cmd('insert', { hasTxnNumber: true }), {})).toBe('retryable-write');
    expect(classifyForRetry(cmd('find'), { retryableWrites: false })).toBe('read');
  });

  it('upstreamSupportsRetryableWrites follows the spec: sessions and not a standalone', () => {
    const hello = { maxWireVersion: 21, logicalSessionTimeoutMinutes: 30, ok: 1 };
    expect(
      upstreamSupportsRetryableWrites(describeServer({ ...hello, setName: 'rs', isWritablePrimary: true }, 'h:1')),
    ).toBe(true);
    expect(
      upstreamSupportsRetryableWrites(describeServer({ ...hello, msg: 'isdbgrid', isWritablePrimary: true }, 'h:1')),
    ).toBe(true);
    expect(upstreamSupportsRetryableWrites(describeServer({ ...hello, isWritablePrimary: true }, 'h:1'))).toBe(false);
    expect(
      upstreamSupportsRetryableWrites(
        describeServer({ maxWireVersion: 21, setName: 'rs', isWritablePrimary: true }, 'h:1'),
      ),
    ).toBe(false);
  });

  it.each([
    'create',
    'drop',
    'createIndexes',
    'dropIndexes',
    'renameCollection',
    'collMod',
    'dropDatabase',
    'noSuchCommand',
  ])('the non-retryable command %s is never retried, even with a txnNumber', (name) => {
    expect(classifyForRetry(cmd(name))).toBe('never');
    expect(classifyForRetry(cmd(name, { hasTxnNumber: true }))).toBe('never');
  });

  it('nothing inside a transaction is retried by the proxy, commit and abort included', () => {
    for (const name of [
      'find',
      'aggregate',
      'insert',
      'update',
      'delete',
      'findAndModify',
      'commitTransaction',
      'abortTransaction',
      'hello',
    ]) {
      expect(classifyForRetry(cmd(name, { inTransaction: true, hasTxnNumber: true }))).toBe('never');
    }
  });

  it('commitTransaction and abortTransaction are not proxy-retried outside a transaction flag either', () => {
    expect(classifyForRetry(cmd('commitTransaction', { hasTxnNumber: true }))).toBe('never');
    expect(classifyForRetry(cmd('abortTransaction', { hasTxnNumber: true }))).toBe('never');
  });

  it('command names are case-sensitive, as on the server', () => {
    expect(classifyForRetry(cmd('Find'))).toBe('never');
    expect(classifyForRetry(cmd('INSERT', { hasTxnNumber: true }))).toBe('never');
  });
});

describe('isRetryableError', () => {
  const specCodes: Array<[string, number]> = [
    ['HostUnreachable', 6],
    ['HostNotFound', 7],
    ['NetworkTimeout', 89],
    ['ShutdownInProgress', 91],
    ['PrimarySteppedDown', 189],
    ['ExceededTimeLimit', 262],
    ['SocketException', 9001],
    ['NotWritablePrimary', 10107],
    ['InterruptedAtShutdown', 11600],
    ['InterruptedDueToReplStateChange', 11602],
    ['NotPrimaryNoSecondaryOk', 13435],
    ['NotPrimaryOrSecondary', 13436],
  ];

  it('lists exactly the retryable-writes spec codes, with their names', () => {
    expect([...RETRYABLE_ERROR_CODES].sort((a, b) => a[0] - b[0])).toEqual(
      specCodes.map(([name, code]) => [code, name]).sort((a, b) => (a[0] as number) - (b[0] as number)),
    );
    expect([...RETRYABLE_READ_ONLY_ERROR_CODES]).toEqual([[134, 'ReadConcernMajorityNotAvailableYet']]);
  });

  it.each(specCodes)('%s (%i) is retryable for reads, retryable writes and unclassified', (_name, code) => {
    expect(isRetryableError({ code, network: false })).toBe(true);
    expect(isRetryableError({ code, network: false }, 'read')).toBe(true);
    expect(isRetryableError({ code, network: false }, 'retryable-write')).toBe(true);
    expect(isRetryableError({ code, network: false }, 'never')).toBe(false);
  });

  it('ReadConcernMajorityNotAvailableYet (134) is retryable for reads only', () => {
    expect(isRetryableError({ code: 134, network: false })).toBe(true);
    expect(isRetryableError({ code: 134, network: false }, 'read')).toBe(true);
    expect(isRetryableError({ code: 134, network: false }, 'retryable-write')).toBe(false);
  });

  it.each([
    ['MaxTimeMSExpired', 50],
    ['DuplicateKey', 11000],
    ['Unauthorized', 13],
    ['CursorNotFound', 43],
    ['WriteConflict', 112],
    ['InternalError', 1],
    ['NoSuchTransaction', 251],
  ])('%s (%i) is not retryable', (_name, code) => {
    expect(isRetryableError({ code, network: false })).toBe(false);
    expect(isRetryableError({ code, network: false }, 'read')).toBe(false);
    expect(isRetryableError({ code, network: false }, 'retryable-write')).toBe(false);
  });

  it('a network error is retryable for any class but never', () => {
    expect(isRetryableError({ network: true })).toBe(true);
    expect(isRetryableError({ network: true }, 'read')).toBe(true);
    expect(isRetryableError({ network: true }, 'retryable-write')).toBe(true);
    expect(isRetryableError({ network: true }, 'never')).toBe(false);
    expect(isRetryableError({ network: true, code: 11000 }, 'read')).toBe(true);
  });

  it('no code, no labels, no network: not retryable', () => {
    expect(isRetryableError({ network: false })).toBe(false);
    expect(isRetryableError({ network: false, labels: [] }, 'read')).toBe(false);
  });

  it('the RetryableWriteError label (4.4+ servers) makes writes retryable, not reads', () => {
    const error = { code: 64, labels: ['RetryableWriteError'], network: false };
    expect(isRetryableError(error, 'retryable-write')).toBe(true);
    expect(isRetryableError(error)).toBe(true);
    expect(isRetryableError(error, 'read')).toBe(false);
    expect(isRetryableError(error, 'never')).toBe(false);
  });

  it('the backpressure RetryableError label is retryable for any class but never', () => {
    const error = { code: 462, labels: ['SystemOverloadedError', 'RetryableError'], network: false };
    expect(isRetryableError(error, 'read')).toBe(true);
    expect(isRetryableError(error, 'retryable-write')).toBe(true);
    expect(isRetryableError(error, 'never')).toBe(false);
  });

  it('other labels do not make an error retryable', () => {
    for (const label of [
      'TransientTransactionError',
      'UnknownTransactionCommitResult',
      'NoWritesPerformed',
      'SystemOverloadedError',
    ]) {
      expect(isRetryableError({ code: 11000, labels: [label], network: false })).toBe(false);
    }
  });
});

describe('retryErrorOf', () => {
  it('agrees with UpstreamConnection on the network label', () => {
    expect(ErrorLabels.NetworkError).toBe(NETWORK_ERROR_LABEL);
  });

  it('reads an UpstreamError carrying the network label as a network error', () => {
    const error = new UpstreamError(ErrorCodes.SocketException, 'closed', { labels: [NETWORK_ERROR_LABEL] });
    expect(retryErrorOf(error)).toEqual({ code: 9001, labels: ['NetworkError'], network: true });
    expect(isRetryableError(retryErrorOf(error), 'read')).toBe(true);
  });

  it('reads a server-shaped UpstreamError by code and labels', () => {
    const error = new UpstreamError(ErrorCodes.NotWritablePrimary, 'not primary', { labels: ['RetryableWriteError'] });
    expect(retryErrorOf(error)).toEqual({ code: 10107, labels: ['RetryableWriteError'], network: false });
  });

  it('treats anything else as not retryable', () => {
    expect(retryErrorOf(new Error('boom'))).toEqual({ labels: [], network: false });
    expect(retryErrorOf('boom')).toEqual({ network: false });
    expect(retryErrorOf(null)).toEqual({ network: false });
    expect(retryErrorOf({ code: '6', labels: ['NetworkError', 7] })).toEqual({
      labels: ['NetworkError'],
      network: true,
    });
    expect(retryErrorOf({ code: 6.5 })).toEqual({ labels: [], network: false });
    expect(isRetryableError(retryErrorOf(new Error('boom')))).toBe(false);
  });
});

describe('backoffDelays', () => {
  it('has explicit defaults', () => {
    expect(RETRY_DEFAULTS).toMatchObject({ attempts: 3, baseMS: 50, maxMS: 1_000, deadlineMS: undefined });
    expect(Object.isFrozen(RETRY_DEFAULTS)).toBe(true);
    const delays = backoffDelays();
    expect(delays).toHaveLength(2);
    expect(delays[0]).toBeGreaterThanOrEqual(0);
    expect(delays[0]).toBeLessThanOrEqual(50);
    expect(delays[1]).toBeLessThanOrEqual(100);
  });

  it('returns attempts - 1 delays; one attempt means no retry', () => {
    expect(backoffDelays({ attempts: 1 })).toEqual([]);
    expect(backoffDelays({ attempts: 5, random: () => 0.5 })).toHaveLength(4);
  });

  it('doubles the cap every retry up to maxMS (random at its top = the cap)', () => {
    expect(backoffDelays({ attempts: 8, baseMS: 10, maxMS: 200, random: () => 1 })).toEqual([
      10, 20, 40, 80, 160, 200, 200,
    ]);
  });

  it('full jitter: each delay is random × cap, floored to whole ms', () => {
    expect(backoffDelays({ attempts: 5, baseMS: 100, maxMS: 10_000, random: sequence(0.5, 0.25, 0, 0.999) })).toEqual([
      50, 50, 0, 799,
    ]);
  });

  it('stays within [0, cap] for any random value, clamping nonsense', () => {
    expect(backoffDelays({ attempts: 4, baseMS: 100, maxMS: 1000, random: sequence(-3, 7, Number.NaN) })).toEqual([
      0, 200, 0,
    ]);
    for (let i = 0; i < 200; i++) {
      const delays = backoffDelays({ attempts: 10, baseMS: 25, maxMS: 400 });
      delays.forEach((delay, retry) => {
        expect(Number.isInteger(delay)).toBe(true);
        expect(delay).toBeGreaterThanOrEqual(0);
        expect(delay).toBeLessThanOrEqual(Math.min(400, 25 * 2 ** retry));
      });
    }
  });

  it('never overflows with many attempts', () => {
    const delays = backoffDelays({ attempts: 2000, baseMS: 1, maxMS: 5, random: () => 1 });
    expect(delays).toHaveLength(1999);
    expect(delays.at(-1)).toBe(5);
  });

  it('stops before the running total of delays reaches the deadline', () => {
    // caps 100, 200, 400, 800 at random 1 → totals 100, 300, 700, 1500
    expect(backoffDelays({ attempts: 5, baseMS: 100, maxMS: 10_000, random: () => 1, deadlineMS: 701 })).toEqual([
      100, 200, 400,
    ]);
    expect(backoffDelays({ attempts: 5, baseMS: 100, maxMS: 10_000, random: () => 1, deadlineMS: 700 })).toEqual([
      100, 200,
    ]);
    expect(backoffDelays({ attempts: 5, baseMS: 100, maxMS: 10_000, random: () => 1, deadlineMS: 100 })).toEqual([]);
    expect(backoffDelays({ attempts: 5, baseMS: 100, maxMS: 10_000, random: () => 1, deadlineMS: 0 })).toEqual([]);
    expect(backoffDelays({ attempts: 5, baseMS: 100, maxMS: 10_000, random: () => 1, deadlineMS: -5 })).toEqual([]);
  });

  it('lets attempts bound the retries when the deadline is far', () => {
    expect(backoffDelays({ attempts: 3, baseMS: 100, maxMS: 10_000, random: () => 1, deadlineMS: 1e9 })).toEqual([
      100, 200,
    ]);
  });

  it('zero delays are allowed under any positive deadline, never under an expired one', () => {
    expect(backoffDelays({ attempts: 3, baseMS: 0, maxMS: 0, deadlineMS: 1 })).toEqual([0, 0]);
    expect(backoffDelays({ attempts: 3, baseMS: 0, maxMS: 0, deadlineMS: 0 })).toEqual([]);
  });

  it('rejects invalid options', () => {
    expect(() => backoffDelays({ attempts: 0 })).toThrow(RangeError);
    expect(() => backoffDelays({ attempts: 1.5 })).toThrow(RangeError);
    expect(() => backoffDelays({ baseMS: -1 })).toThrow(RangeError);
    expect(() => backoffDelays({ maxMS: Number.POSITIVE_INFINITY })).toThrow(RangeError);
    expect(() => backoffDelays({ deadlineMS: Number.NaN })).toThrow(RangeError);
  });
});

describe('clientDeadlineMS', () => {
  it('takes maxTimeMS or timeoutMS, the smaller when both', () => {
    expect(clientDeadlineMS({})).toBeUndefined();
    expect(clientDeadlineMS({ maxTimeMS: 500 })).toBe(500);
    expect(clientDeadlineMS({ timeoutMS: 300 })).toBe(300);
    expect(clientDeadlineMS({ maxTimeMS: 500, timeoutMS: 300 })).toBe(300);
    expect(clientDeadlineMS({ maxTimeMS: 200, timeoutMS: 300 })).toBe(200);
  });

  it('treats 0, negative and odd values as no limit', () => {
    expect(clientDeadlineMS({ maxTimeMS: 0 })).toBeUndefined();
    expect(clientDeadlineMS({ maxTimeMS: -1, timeoutMS: null })).toBeUndefined();
    expect(clientDeadlineMS({ maxTimeMS: '100' })).toBeUndefined();
    expect(clientDeadlineMS({ maxTimeMS: Number.NaN })).toBeUndefined();
    expect(clientDeadlineMS({ maxTimeMS: 0, timeoutMS: 40 })).toBe(40);
  });

  it('accepts BSON Long-like values and bigints', () => {
    expect(clientDeadlineMS({ maxTimeMS: { toNumber: () => 250 } })).toBe(250);
    expect(clientDeadlineMS({ maxTimeMS: 90n })).toBe(90);
  });
});

describe('translateUpstreamFailure', () => {
  it('maps each failure kind to a code drivers retry reads on, with the server code name', () => {
    const read = cmd('find');
    expect(translateUpstreamFailure({ kind: 'unreachable', command: read })).toEqual({
      code: 6,
      codeName: 'HostUnreachable',
      errmsg: 'could not reach the upstream server',
      errorLabels: [],
    });
    expect(translateUpstreamFailure({ kind: 'circuit-open', command: read })).toMatchObject({
      code: 6,
      codeName: 'HostUnreachable',
    });
    expect(translateUpstreamFailure({ kind: 'network', command: read })).toMatchObject({
      code: 9001,
      codeName: 'SocketException',
    });
    expect(translateUpstreamFailure({ kind: 'timeout', command: read })).toMatchObject({
      code: 89,
      codeName: 'NetworkTimeout',
    });
    for (const kind of ['unreachable', 'circuit-open', 'network', 'timeout'] as const) {
      const reply = translateUpstreamFailure({ kind, command: read });
      expect(RETRYABLE_ERROR_CODES.has(reply.code)).toBe(true);
      expect(reply.codeName).toBe(codeNameOf(reply.code));
      expect(reply.errorLabels).not.toContain('NetworkError');
    }
  });

  it('labels a network failure of a write with a txnNumber RetryableWriteError', () => {
    for (const name of ['insert', 'update', 'delete', 'findAndModify', 'bulkWrite']) {
      expect(
        translateUpstreamFailure({ kind: 'network', command: cmd(name, { hasTxnNumber: true }) }).errorLabels,
      ).toEqual(['RetryableWriteError']);
    }
  });

  it('gives a write without a txnNumber no retry label: it may have been applied', () => {
    for (const kind of ['network', 'timeout'] as const) {
      expect(translateUpstreamFailure({ kind, command: cmd('update') }).errorLabels).toEqual([]);
      expect(
        translateUpstreamFailure({ kind, command: cmd('aggregate', { pipelineWrites: true, hasTxnNumber: true }) })
          .errorLabels,
      ).toEqual([]);
    }
  });

  it('adds NoWritesPerformed to writes that never left the proxy', () => {
    expect(
      translateUpstreamFailure({ kind: 'unreachable', command: cmd('insert', { hasTxnNumber: true }) }).errorLabels,
    ).toEqual(['RetryableWriteError', 'NoWritesPerformed']);
    expect(translateUpstreamFailure({ kind: 'circuit-open', command: cmd('delete') }).errorLabels).toEqual([
      'NoWritesPerformed',
    ]);
    expect(
      translateUpstreamFailure({ kind: 'circuit-open', command: cmd('aggregate', { pipelineWrites: true }) })
        .errorLabels,
    ).toEqual(['NoWritesPerformed']);
    expect(translateUpstreamFailure({ kind: 'circuit-open', command: cmd('find') }).errorLabels).toEqual([]);
  });

  it('gives reads no labels (drivers retry them on the code)', () => {
    for (const name of [
      'find',
      'aggregate',
      'count',
      'distinct',
      'listCollections',
      'listIndexes',
      'listDatabases',
      'getMore',
    ]) {
      expect(translateUpstreamFailure({ kind: 'network', command: cmd(name) }).errorLabels).toEqual([]);
    }
  });

  it('labels commands inside a transaction TransientTransactionError, never RetryableWriteError', () => {
    for (const name of ['find', 'insert', 'update', 'delete', 'findAndModify', 'aggregate', 'getMore']) {
      for (const kind of ['unreachable', 'circuit-open', 'network', 'timeout'] as const) {
        expect(
          translateUpstreamFailure({ kind, command: cmd(name, { inTransaction: true, hasTxnNumber: true }) })
            .errorLabels,
        ).toEqual(['TransientTransactionError']);
      }
    }
  });

  it('labels commitTransaction UnknownTransactionCommitResult + RetryableWriteError, never transient', () => {
    for (const kind of ['unreachable', 'circuit-open', 'network', 'timeout'] as const) {
      const { errorLabels } = translateUpstreamFailure({
        kind,
        command: cmd('commitTransaction', { inTransaction: true, hasTxnNumber: true }),
      });
      expect(errorLabels).toEqual(['RetryableWriteError', 'UnknownTransactionCommitResult']);
      expect(errorLabels).not.toContain('TransientTransactionError');
    }
  });

  it('labels abortTransaction RetryableWriteError + TransientTransactionError', () => {
    expect(
      translateUpstreamFailure({
        kind: 'network',
        command: cmd('abortTransaction', { inTransaction: true, hasTxnNumber: true }),
      }).errorLabels,
    ).toEqual(['RetryableWriteError', 'TransientTransactionError']);
  });

  it('mentions attempts and detail in the message', () => {
    expect(
      translateUpstreamFailure({ kind: 'network', command: cmd('find'), attempts: 3, detail: 'ECONNRESET (db:27017)' })
        .errmsg,
    ).toBe('the connection to the upstream server failed after 3 attempts: ECONNRESET (db:27017)');
    expect(translateUpstreamFailure({ kind: 'timeout', command: cmd('find'), attempts: 1, detail: '' }).errmsg).toBe(
      'the upstream server did not reply in time',
    );
    expect(translateUpstreamFailure({ kind: 'circuit-open', command: cmd('find') }).errmsg).toContain(
      'circuit breaker open',
    );
  });

  it('fits UpstreamError for errorReplyDocument', () => {
    const reply = translateUpstreamFailure({ kind: 'network', command: cmd('insert', { hasTxnNumber: true }) });
    const error = new UpstreamError(reply.code, reply.errmsg, { labels: reply.errorLabels });
    expect(error.codeName).toBe('SocketException');
    expect(error.labels).toEqual(['RetryableWriteError']);
  });
});

describe('the pieces together', () => {
  it('a retryable write that keeps failing on the network: retried, then labelled for the driver', () => {
    const command = cmd('update', { hasTxnNumber: true });
    const retryClass = classifyForRetry(command);
    const delays = backoffDelays({
      attempts: 3,
      baseMS: 10,
      maxMS: 100,
      random: () => 1,
      deadlineMS: clientDeadlineMS({ maxTimeMS: 1000 }),
    });
    const error = retryErrorOf(
      new UpstreamError(ErrorCodes.SocketException, 'reset', { labels: [NETWORK_ERROR_LABEL] }),
    );
    let attempts = 1;
    while (isRetryableError(error, retryClass) && delays[attempts - 1] !== undefined) attempts++;
    expect(attempts).toBe(3);
    expect(translateUpstreamFailure({ kind: 'network', command, attempts }).errorLabels).toEqual([
      'RetryableWriteError',
    ]);
  });

  it('a plain write is sent once and comes back with no retry label', () => {
    const command = cmd('insert');
    expect(classifyForRetry(command)).toBe('never');
    expect(isRetryableError({ network: true }, classifyForRetry(command))).toBe(false);
    expect(translateUpstreamFailure({ kind: 'network', command }).errorLabels).toEqual([]);
  });
});

describe('replyTimeoutMS (review: half-open upstream)', () => {
  it('is the shorter of socketTimeoutMS and maxTimeMS + grace; 0 only when neither is set', () => {
    const find = (maxTimeMS?: number) => ({ name: 'find', maxTimeMS });
    expect(replyTimeoutMS(0, find())).toBe(0);
    expect(replyTimeoutMS(0, find(200))).toBe(200 + MAX_TIME_REPLY_GRACE_MS);
    expect(replyTimeoutMS(1_000, find())).toBe(1_000);
    expect(replyTimeoutMS(1_000, find(60_000))).toBe(1_000);
    expect(replyTimeoutMS(600_000, find(200))).toBe(200 + MAX_TIME_REPLY_GRACE_MS);
  });

  it('an awaitData getMore (maxTimeMS = time to wait for data) may stay silent until maxTimeMS + grace', () => {
    expect(replyTimeoutMS(1_000, { name: 'getMore', maxTimeMS: 30_000 })).toBe(30_000 + MAX_TIME_REPLY_GRACE_MS);
    expect(replyTimeoutMS(60_000, { name: 'getMore', maxTimeMS: 1_000 })).toBe(60_000);
    expect(replyTimeoutMS(1_000, { name: 'getMore' })).toBe(1_000);
  });
});
