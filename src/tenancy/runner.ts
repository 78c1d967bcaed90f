/**
 * How the tenancy layer talks to the upstream: one command, one reply document. Narrow on
 * purpose, so the catalogue and the executor are unit-testable with a fake.
 */
import { ErrorCodes, ProxyError } from '../errors.js';
import { deserialize, serialize, type DeserializeOptions, type Document } from '../wire/bson.js';
import { encodeOpMsg } from '../wire/op-msg.js';
import { replyBody } from '../protocol/command.js';
import type { Upstream } from '../upstream/upstream.js';

export interface CommandRunner {
  /**
   * Runs `command` on `db`; resolves with the reply when `ok: 1`, rejects with a CommandFailed
   * otherwise. `options.exact`: values keep their BSON types (sizes computed from them are exact).
   * `options.replyTimeoutMS`: fail with NetworkTimeout (and close the connection) when no reply
   * arrives for this long (a half-open upstream would hold the command forever).
   */
  run(
    db: string,
    command: Document,
    options?: { tenant?: string; exact?: boolean; replyTimeoutMS?: number },
  ): Promise<Document>;
}

/** The upstream answered `ok: 0`: its code and message, as a MongoDB-shaped error. */
export class CommandFailed extends ProxyError {
  override get name(): string {
    return 'CommandFailed';
  }
}

/** Pool connections of the proxy's own upstream (its credentials), one per command. */
export function upstreamRunner(upstream: Upstream): CommandRunner {
  return {
    async run(db, command, options = {}) {
      const connection = await upstream.acquire(options.tenant);
      let reply: Buffer | undefined;
      try {
        const frame = encodeOpMsg({ requestId: 0, responseTo: 0, body: serialize({ ...command, $db: db }) });
        await connection.request(
          frame,
          (bytes) => {
            reply = bytes;
          },
          { replyTimeoutMS: options.replyTimeoutMS },
        );
      } finally {
        upstream.release(connection);
      }
      const body = reply === undefined ? undefined : replyBody(reply);
      if (body === undefined) throw new CommandFailed(ErrorCodes.InternalError, 'the upstream sent no reply document');
      const exact: DeserializeOptions = { promoteValues: false, promoteLongs: false, promoteBuffers: false };
      return checked(deserialize(body, options.exact === true ? exact : {}));
    },
  };
}

/** The reply when `ok: 1`; a CommandFailed carrying the server's code and message otherwise. */
export function checked(reply: Document): Document {
  if (Number(reply['ok']) === 1 || reply['ok'] === true) {
    const writeErrors = reply['writeErrors'] as Document[] | undefined;
    const first = writeErrors?.[0];
    if (first !== undefined)
      throw new CommandFailed(
        Number(first['code'] ?? ErrorCodes.InternalError),
        String(first['errmsg'] ?? 'write error'),
      );
    return reply;
  }
  const code = reply['code'] === undefined ? ErrorCodes.InternalError : Number(reply['code']);
  throw new CommandFailed(code, typeof reply['errmsg'] === 'string' ? reply['errmsg'] : 'command failed upstream');
}
