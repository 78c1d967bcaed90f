/**
 * The one seam for the `bson` package: every other module imports BSON values and types from
 * here, so a bson upgrade (or a swap) touches one file.
 */

export {
  BSON,
  BSONError,
  BSONRegExp,
  BSONSymbol,
  BSONType,
  Binary,
  Code,
  DBRef,
  Decimal128,
  Double,
  EJSON,
  Int32,
  Long,
  MaxKey,
  MinKey,
  ObjectId,
  Timestamp,
  UUID,
  calculateObjectSize,
  deserialize,
  serialize,
} from 'bson';

export type { DeserializeOptions, Document, SerializeOptions } from 'bson';
