/**
 * Masking of credentials inside connection strings: the one implementation for config output,
 * logs and upstream errors. It imports nothing, so every layer may use it.
 */

export const MASK = '****';

/** Query options of a MongoDB URI whose values are secrets. */
const SECRET_OPTION = /password|secret|token/i;

/**
 * Hides the password of a URI's user info and the values of secret options
 * (`tlsCertificateKeyFilePassword`, `proxyPassword`, AWS session tokens in
 * `authMechanismProperties`…), keeping everything else readable:
 * `mongodb://app:s3cret@db:27017/?tls=true` → `mongodb://app:****@db:27017/?tls=true`.
 *
 * Errs towards hiding too much: the user info ends at the *last* `@`, so a password with an
 * unescaped `@`, `/` or `?` (an invalid URI) is still hidden completely.
 */
export function maskUri(uri: string): string {
  let masked = uri;
  const schemeEnd = masked.indexOf('://');
  if (schemeEnd >= 0) {
    const authorityStart = schemeEnd + 3;
    const at = masked.lastIndexOf('@');
    if (at > authorityStart) {
      const colon = masked.indexOf(':', authorityStart);
      if (colon >= 0 && colon < at) masked = `${masked.slice(0, colon + 1)}${MASK}${masked.slice(at)}`;
    }
  }
  const query = masked.indexOf('?');
  if (query < 0) return masked;
  const options = masked
    .slice(query + 1)
    .split('&')
    .map((option) => {
      const eq = option.indexOf('=');
      if (eq < 0) return option;
      const name = option.slice(0, eq);
      const value = option.slice(eq + 1);
      if (SECRET_OPTION.test(name)) return `${name}=${MASK}`;
      if (/^authMechanismProperties$/i.test(name)) {
        // KEY:value pairs separated by commas, possibly percent-encoded.
        const pairs = value.split(/,|%2C/i).map((pair) => {
          const sep = pair.search(/:|%3A/i);
          return sep >= 0 && SECRET_OPTION.test(pair.slice(0, sep)) ? `${pair.slice(0, sep)}:${MASK}` : pair;
        });
        return `${name}=${pairs.join(',')}`;
      }
      return option;
    });
  return `${masked.slice(0, query + 1)}${options.join('&')}`;
}

/** Masks the password of every `scheme://user:password@` found in free text (error messages). */
export function maskUrisInText(text: string): string {
  return text.replace(/\b([a-z][a-z0-9+.-]*:\/\/[^\s:/@]*):[^\s@]*@/gi, `$1:${MASK}@`);
}
