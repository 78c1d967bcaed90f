/**
 * Types of the generic arguments a forwarded command carries, checked as MongoDB parses them
 * (issue 15: the proxy used to forward any BSON value in them).
 *
 * MongoDB declares every generic argument `IDLAnyType` in `generic_argument.idl` and parses the
 * typed ones itself: `apiVersion` (string), `apiStrict` and `apiDeprecationErrors` (bool),
 * `autocommit` and `startTransaction` (bool), `txnNumber` (long) through IDL structs, whose
 * refusal is TypeMismatch (14) "BSON field '<field>' is the wrong type '<type>', expected type
 * '<type>'"; `readConcern` through `ReadConcernArgs` (FailedToParse 9 for a non-document,
 * TypeMismatch for a mistyped `level` or cluster time, FailedToParse for an unknown level,
 * InvalidOptions 72 for an unknown option); `writeConcern` through `WriteConcernOptions`
 * (FailedToParse 9). A value the server would refuse is refused here with the server's code and
 * never forwarded: an upstream that is not MongoDB may not refuse it cleanly (FerretDB v1 drops
 * the connection, or panics on a Decimal128, docs/upstreams.md).
 *
 * `comment` is `IDLAnyType` and MongoDB stores any BSON value there, so it is not checked: what
 * MongoDB accepts is not refused. `lsid` (rewrite/sessions.ts), `$readPreference`
 * (rewrite/engine.ts), `maxTimeMS` (limits.ts) and `$db` (protocol/command.ts) are checked where
 * they are mapped; `$clusterTime` is never forwarded.
 */
import { ErrorCodes, PolicyRefusal } from '../errors.js';
import { BsonType } from '../wire/bson-scan.js';
import { RawDocument, stringOf, type RawValue } from '../wire/raw-bson.js';
import { isNumber } from './validate.js';

/** MongoDB's names for BSON types (`typeName()`), as its parse errors show them. */
const SERVER_TYPE_NAMES: ReadonlyMap<number, string> = new Map([
  [BsonType.double, 'double'],
  [BsonType.string, 'string'],
  [BsonType.document, 'object'],
  [BsonType.array, 'array'],
  [BsonType.binary, 'binData'],
  [BsonType.undefined, 'undefined'],
  [BsonType.objectId, 'objectId'],
  [BsonType.boolean, 'bool'],
  [BsonType.date, 'date'],
  [BsonType.null, 'null'],
  [BsonType.regex, 'regex'],
  [BsonType.dbPointer, 'dbPointer'],
  [BsonType.javascript, 'javascript'],
  [BsonType.symbol, 'symbol'],
  [BsonType.javascriptWithScope, 'javascriptWithScope'],
  [BsonType.int32, 'int'],
  [BsonType.timestamp, 'timestamp'],
  [BsonType.int64, 'long'],
  [BsonType.decimal128, 'decimal'],
  [BsonType.minKey, 'minKey'],
  [BsonType.maxKey, 'maxKey'],
]);

export function serverTypeName(type: number): string {
  return SERVER_TYPE_NAMES.get(type) ?? `0x${type.toString(16).padStart(2, '0')}`;
}

const RULE = 'field.generic-type';

function wrongType(field: string, value: RawValue, expected: string): never {
  // The IDL parser's message (idl_parser.cpp, IDLParserContext::throwBadType).
  throw new PolicyRefusal(
    RULE,
    `BSON field '${field}' is the wrong type '${serverTypeName(value.type)}', expected type '${expected}'`,
    ErrorCodes.TypeMismatch,
  );
}

/** Generic arguments with one IDL type: the BSON type each must have. */
const SCALAR_TYPES: ReadonlyMap<string, { type: number; expected: string; context: string }> = new Map([
  ['apiVersion', { type: BsonType.string, expected: 'string', context: 'APIParametersFromClient' }],
  ['apiStrict', { type: BsonType.boolean, expected: 'bool', context: 'APIParametersFromClient' }],
  ['apiDeprecationErrors', { type: BsonType.boolean, expected: 'bool', context: 'APIParametersFromClient' }],
  ['autocommit', { type: BsonType.boolean, expected: 'bool', context: 'OperationSessionInfo' }],
  ['startTransaction', { type: BsonType.boolean, expected: 'bool', context: 'OperationSessionInfo' }],
  ['txnNumber', { type: BsonType.int64, expected: 'long', context: 'OperationSessionInfo' }],
]);

const READ_CONCERN_LEVELS: ReadonlySet<string> = new Set([
  'local',
  'majority',
  'linearizable',
  'available',
  'snapshot',
]);

/** ReadConcernArgs::initialize / parse (repl/read_concern_args.cpp). */
function checkReadConcern(value: RawValue): void {
  if (value.type !== BsonType.document) {
    throw new PolicyRefusal(RULE, 'readConcern field should be an object', ErrorCodes.FailedToParse);
  }
  for (const element of RawDocument.parse(value.value).elements) {
    const had = (expected: string): never => {
      // bsonExtractTypedField's message.
      throw new PolicyRefusal(
        RULE,
        `"${element.name}" had the wrong type. Expected ${expected}, found ${serverTypeName(element.type)}`,
        ErrorCodes.TypeMismatch,
      );
    };
    switch (element.name) {
      case 'level':
        if (element.type !== BsonType.string) had('string');
        if (!READ_CONCERN_LEVELS.has(stringOf(element))) {
          throw new PolicyRefusal(
            RULE,
            "readConcern.level must be either 'local', 'majority', 'linearizable', 'available', or 'snapshot'",
            ErrorCodes.FailedToParse,
          );
        }
        break;
      case 'afterClusterTime':
      case 'atClusterTime':
        if (element.type !== BsonType.timestamp) had('timestamp');
        break;
      case 'afterOpTime':
        if (element.type !== BsonType.document) had('object');
        break;
      case 'provenance':
        if (element.type !== BsonType.string) had('string');
        break;
      default:
        // allowTransactionTableSnapshot is internal; anything else is unknown to the server.
        throw new PolicyRefusal(
          RULE,
          `Unrecognized option in readConcern: ${JSON.stringify(element.name.slice(0, 64))}`,
          ErrorCodes.InvalidOptions,
        );
    }
  }
}

/** WriteConcernOptions::parse (write_concern_options.cpp): the options it reads, by type. */
function checkWriteConcern(value: RawValue): void {
  const fail = (message: string): never => {
    throw new PolicyRefusal(RULE, message, ErrorCodes.FailedToParse);
  };
  if (value.type !== BsonType.document) fail('writeConcern must be an object');
  for (const element of RawDocument.parse(value.value).elements) {
    switch (element.name) {
      case 'w':
        if (!isNumber(element) && element.type !== BsonType.string && element.type !== BsonType.document)
          fail('w has to be a number, string, or object');
        break;
      case 'j':
      case 'fsync':
        if (!isNumber(element) && element.type !== BsonType.boolean)
          fail(`${element.name} must be numeric or a boolean value`);
        break;
      case 'wtimeout':
      case 'wtimeoutMS':
        if (!isNumber(element)) fail(`${element.name} must be a number`);
        break;
      case 'provenance':
        if (element.type !== BsonType.string) fail('provenance must be a string');
        break;
      default:
        break; // the server ignores options it does not read
    }
  }
}

/**
 * Throws PolicyRefusal when the generic argument `name` (a GENERIC_FIELDS name) holds a value
 * MongoDB's own parsing refuses; returns for the names this module does not type (see above).
 */
export function assertGenericArgument(name: string, value: RawValue): void {
  const scalar = SCALAR_TYPES.get(name);
  if (scalar !== undefined) {
    if (value.type !== scalar.type) wrongType(`${scalar.context}.${name}`, value, scalar.expected);
    return;
  }
  if (name === 'readConcern') checkReadConcern(value);
  else if (name === 'writeConcern') checkWriteConcern(value);
}
