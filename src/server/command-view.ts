/**
 * A client command decoded once. The OP_MSG body is split into its top-level elements a single
 * time; its envelope (name, `$db`), the moreToCome flag, the engine's input and, on first use, the
 * traits forwarding needs (session, transaction, read preference, cursor) are all read from
 * that one split. Routing, the isolation engine, the upstream forward, audit and logs share it.
 */
import { readCommandEnvelope } from '../protocol/command.js';
import type { CommandInput } from '../policy/types.js';
import { traitsOf, type CommandTraits } from '../upstream/command-traits.js';
import { BsonType, readString } from '../wire/bson-scan.js';
import { OpMsgFlag } from '../wire/constants.js';
import { parseOpMsgFacts, type OpMsg, type OpMsgFacts, type PrevalidatedDocuments } from '../wire/op-msg.js';
import { RawDocument, bsonElementOf } from '../wire/raw-bson.js';
import { CopyJob } from '../wire/copy-job.js';

/** What logs, metrics and audit events name a command by. */
export interface CommandLabels {
  readonly name: string;
  readonly db: string;
  /** `db.collection` when the first field names a collection (find, insert…), else `db`. */
  readonly namespace: string;
}

/** Parses an OP_MSG request (validated as a server does) and decodes its command; throws a ProxyError. */
export function decodeCommand(
  frame: Buffer,
  options: { maxBsonDepth: number; prevalidated?: PrevalidatedDocuments; deferCopies?: boolean },
): CommandView {
  // parseOpMsg's defaults reject duplicate keys in every document: the engine may rely on it.
  const { msg, facts } = parseOpMsgFacts(frame, options);
  const command = new CommandView(msg, facts);
  if (options.deferCopies === true) command.copies = new CopyJob();
  return command;
}

const NO_SEQUENCES: ReadonlyMap<string, readonly Uint8Array[]> = new Map();
const NO_SEQUENCE_FACTS: ReadonlyMap<string, Uint8Array> = new Map();

export class CommandView implements CommandLabels {
  readonly name: string;
  readonly db: string;
  /** The request has moreToCome: the client expects no reply (w:0 writes, endSessions). */
  readonly moreToCome: boolean;
  /** The body's top-level elements (values are views into the request frame). */
  readonly body: RawDocument;
  /**
   * The copies the rewrite of this command put off (CommandInput.copies; decodeCommand's
   * `deferCopies`): the forwarded frame is complete once this job has run. Undefined: none.
   */
  copies: CopyJob | undefined;
  #traits: CommandTraits | undefined;

  /** Throws a ProxyError when the envelope is invalid (catalogue 53): no command, no or a bad `$db`. */
  constructor(
    readonly msg: OpMsg,
    /**
     * Every document was validated with duplicate keys rejected, and what validation saw
     * (CommandInput.validated, CommandInput.facts); absent for a message parsed otherwise.
     */
    readonly facts?: OpMsgFacts,
  ) {
    this.body = RawDocument.parse(msg.body);
    ({ name: this.name, db: this.db } = readCommandEnvelope(this.body));
    this.moreToCome = (msg.flagBits & OpMsgFlag.moreToCome) !== 0;
  }

  /** What forwarding reads from the body as the client sent it. */
  get traits(): CommandTraits {
    return (this.#traits ??= traitsOf(this.body.elements));
  }

  get namespace(): string {
    const first = this.body.first;
    if (first === undefined || first.type !== BsonType.string) return this.db;
    // A name longer than any valid namespace is cut (the audit stream bounds its events anyway).
    return `${this.db}.${readString(first.value, bsonElementOf(first)).slice(0, 1024)}`;
  }

  /** The isolation engine's input: this split body, sequences by identifier. */
  engineInput(): CommandInput {
    const { sequences } = this.msg;
    // Most commands carry no sequence: one shared empty map (read-only) instead of two new ones.
    const none = sequences.length === 0;
    return {
      name: this.name,
      db: this.db,
      body: this.body,
      sequences: none ? NO_SEQUENCES : new Map(sequences.map((sequence) => [sequence.identifier, sequence.documents])),
      moreToCome: this.moreToCome,
      copies: this.copies,
      validated: this.facts !== undefined,
      facts:
        this.facts === undefined
          ? undefined
          : {
              body: this.facts.body,
              sequences: none
                ? NO_SEQUENCE_FACTS
                : new Map(sequences.map((sequence, i) => [sequence.identifier, this.facts!.sequences[i]!])),
            },
    };
  }
}
