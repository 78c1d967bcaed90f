/**
 * Resource limits every tenant gets on the shared server (catalogue 15, 62): `maxTimeMS` is
 * clamped to the configured cap, and set to it when the client sends none, so one tenant's
 * regular expression or unindexed scan cannot burn the server for everyone.
 */
import { ErrorCodes, PolicyRefusal } from '../errors.js';
import { BsonType } from '../wire/bson-scan.js';
import { numberOf, valueOf, type RawDocument } from '../wire/raw-bson.js';

export interface CapMaxTimeOptions {
  /**
   * What to do when the body has no `maxTimeMS`: `add` the cap (default) or `leave` it absent.
   * Use `leave` for getMore: the server refuses maxTimeMS on a getMore of a cursor that is not
   * tailable awaitData, and the originating command's limit already bounds the cursor's work.
   */
  whenMissing?: 'add' | 'leave';
}

/**
 * The body with `maxTimeMS` at most `cap`. A value within the cap is kept byte for byte (its
 * numeric type included); a larger one, `0` (which means "no limit"), or a missing one (unless
 * `whenMissing: 'leave'`) becomes the cap as int32. Returns the same instance when nothing
 * changes, so callers can note a rewrite with `result !== body`. A non-numeric or negative
 * maxTimeMS is refused (rule `maxTimeMS.invalid`); a cap that is not a positive int32 is a
 * programming error.
 */
export function capMaxTimeMS(body: RawDocument, cap: number, options: CapMaxTimeOptions = {}): RawDocument {
  if (!Number.isInteger(cap) || cap <= 0 || cap > 0x7fffffff) {
    throw new RangeError(`maxTimeMS cap must be a positive int32, got ${cap}`);
  }
  const found = body.elements.filter((element) => element.name === 'maxTimeMS');
  if (found.length > 1) {
    throw new PolicyRefusal('maxTimeMS.invalid', 'maxTimeMS appears more than once', ErrorCodes.BadValue);
  }
  const current = found[0];
  if (current === undefined) {
    return options.whenMissing === 'leave' ? body : body.with('maxTimeMS', valueOf(cap));
  }
  if (current.type !== BsonType.int32 && current.type !== BsonType.int64 && current.type !== BsonType.double) {
    throw new PolicyRefusal('maxTimeMS.invalid', 'maxTimeMS must be a number', ErrorCodes.TypeMismatch);
  }
  const value = numberOf(current);
  if (value === undefined || Number.isNaN(value) || value < 0) {
    // An int64 beyond the safe range is handled by numberOf returning undefined: huge positive
    // values are capped below, negative ones and NaN are refused here.
    if (value === undefined && current.type === BsonType.int64 && Buffer.from(current.value).readBigInt64LE(0) > 0n) {
      return body.with('maxTimeMS', valueOf(cap));
    }
    throw new PolicyRefusal('maxTimeMS.invalid', 'maxTimeMS must be a non-negative number', ErrorCodes.BadValue);
  }
  if (value === 0 || value > cap) return body.with('maxTimeMS', valueOf(cap));
  return body;
}
