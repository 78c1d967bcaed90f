import { describe, expect, it, vi } from 'vitest';
import * as errors from '../../src/errors.js';
import {
  BrandedError,
  CodedError,
  ConfigError,
  ConfigValidationError,
  CredentialsFileError,
  ErrorCodes,
  InvariantError,
  PolicyRefusal,
  ProxyError,
  UpstreamError,
  WireProtocolError,
} from '../../src/errors.js';

/** A second copy of the module, as a second install or a bundle would load it. */
async function secondCopy(): Promise<typeof errors> {
  vi.resetModules(); // the next import evaluates the module again: new classes, same brands
  const copy = await import('../../src/errors.js');
  expect(copy.ProxyError).not.toBe(ProxyError);
  return copy;
}

const errorClasses = Object.entries(errors).filter(
  (entry): entry is [string, typeof BrandedError] =>
    typeof entry[1] === 'function' && entry[1].prototype instanceof Error,
);

describe('error classes', () => {
  it('each declares its own brand, so instanceof never matches a parent instance by mistake', () => {
    expect(errorClasses.map(([name]) => name)).toContain('PolicyRefusal');
    for (const [name, errorClass] of errorClasses) {
      expect(Object.hasOwn(errorClass, 'brand'), name).toBe(true);
      expect(errorClass.brand, name).toBe(Symbol.for(`mongo-tenant-proxy.${name}`));
    }
  });

  it('instanceof and is() recognise errors made by another copy of the module', async () => {
    const copy = await secondCopy();
    const refusal = new copy.PolicyRefusal('x.rule', 'no');
    expect(refusal instanceof PolicyRefusal).toBe(true);
    expect(refusal instanceof ProxyError).toBe(true);
    expect(refusal instanceof BrandedError).toBe(true);
    expect(refusal instanceof Error).toBe(true);
    expect(ProxyError.is(refusal)).toBe(true);
    expect(PolicyRefusal.is(refusal)).toBe(true);
    expect(refusal instanceof WireProtocolError).toBe(false);
    expect(refusal instanceof CodedError).toBe(false);

    const config = new copy.ConfigValidationError([{ path: 'a.b', message: 'is wrong' }]);
    expect(config instanceof ConfigValidationError).toBe(true);
    expect(config instanceof ConfigError).toBe(true);
    expect(config instanceof CodedError).toBe(true);
    expect(config instanceof ProxyError).toBe(false);
    expect(new ConfigError('a', 'b') instanceof copy.ConfigValidationError).toBe(false);
  });

  it('a subclass declared elsewhere without a brand keeps the ordinary prototype check', () => {
    class Interrupted extends UpstreamError {}
    expect(new Interrupted(ErrorCodes.HostUnreachable, 'gone') instanceof UpstreamError).toBe(true);
    expect(new Interrupted(ErrorCodes.HostUnreachable, 'gone') instanceof Interrupted).toBe(true);
    expect(new UpstreamError(ErrorCodes.HostUnreachable, 'gone') instanceof Interrupted).toBe(false);
    expect(Interrupted.is(new UpstreamError(ErrorCodes.HostUnreachable, 'gone'))).toBe(false);
  });

  it('plain values and foreign errors are not branded errors', () => {
    for (const value of [undefined, null, 1, 'ProxyError', {}, new Error('x'), { code: 1 }]) {
      expect(value instanceof ProxyError).toBe(false);
      expect(ProxyError.is(value)).toBe(false);
      expect(ConfigError.is(value)).toBe(false);
    }
  });

  it('string codes are stable and stay out of logs and equality (getters, not own fields)', () => {
    const cases: Array<[CodedError, string, string]> = [
      [new ConfigError('upstream.uri', 'is required'), 'MTP_ERR_CONFIG', 'upstream.uri: is required'],
      [new ConfigValidationError([{ path: 'p', message: 'm' }]), 'MTP_ERR_CONFIG_VALIDATION', 'p: m'],
      [new CredentialsFileError('users.yaml: bad'), 'MTP_ERR_CREDENTIALS_FILE', 'users.yaml: bad'],
      [new errors.JwtKeyError('not a JSON object'), 'MTP_ERR_JWT_KEY', 'not a JSON object'],
      [new errors.HostPortError('missing port number'), 'MTP_ERR_HOST_PORT', 'missing port number'],
      [new errors.DerParseError('truncated DER'), 'MTP_ERR_DER_PARSE', 'truncated DER'],
      [new InvariantError('used twice'), 'MTP_ERR_INVARIANT', 'used twice'],
    ];
    for (const [error, code, message] of cases) {
      expect(error.code).toBe(code);
      expect(error.message).toBe(message);
      expect(error.name).toBe(error.constructor.name);
      expect(Object.keys(error)).not.toContain('code');
      expect(
        Object.getOwnPropertySymbols(error).every((s) => !Object.getOwnPropertyDescriptor(error, s)!.enumerable),
      ).toBe(true);
    }
  });

  it('ProxyError keeps its MongoDB code and code name', () => {
    const refusal = new PolicyRefusal('cursor.foreign', 'not yours', ErrorCodes.CursorNotFound);
    expect(refusal.code).toBe(43);
    expect(refusal.codeName).toBe('CursorNotFound');
    expect(refusal.message).toBe('mongo-tenant-proxy refused the command (rule cursor.foreign): not yours');
  });
});
