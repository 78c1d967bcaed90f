/**
 * Client certificates → tenants (method `mtls`) and the subject MONGODB-X509 authenticates as.
 *
 * Rules (`identity.certificateRules`) are tried in order; within a rule every value of its field
 * is tried in certificate order; the first regular-expression match whose named group `tenant`
 * is non-empty wins. Patterns are used as written (add `^…$` to match whole values) and
 * compiled once, when the mapper is created.
 *
 * `subjectOf` renders the subject the way mongod does for MONGODB-X509 (and `connectionStatus`):
 * RDNs in reverse certificate order (most specific first, `CN=client,OU=eng,O=acme,C=US`),
 * attributes of a multi-valued RDN joined by `+` (also reversed), OpenSSL short names
 * (`CN`, `OU`, `emailAddress`, … or the dotted OID), values prepared with the RFC 4518 LDAP
 * string profile (mapping + NFKC) and escaped as the server's `escapeRfc2253` does: `,+"\<>;`
 * get a backslash, a leading space or `#` is escaped, a trailing space is escaped when the
 * escaped value is longer than two characters, and every byte of a non-ASCII character is
 * written as `\XX` (UTF-8, upper-case hex).
 *
 * Pure: no I/O, no logging. An unparsable certificate maps to no tenant and an empty subject.
 */
import type { CertificateField, CertificateRule } from '../config/types.js';
import { ConfigError, DerParseError } from '../errors.js';
import type { CertificateMapper, PeerCertificate } from './types.js';
import { loadX509, type X509 } from './x509-lib.js';

const OID_CN = '2.5.4.3';
const OID_OU = '2.5.4.11';
const OID_O = '2.5.4.10';

/** OpenSSL's short names (`OBJ_nid2sn`) for the attribute types certificates use. */
const SHORT_NAMES: ReadonlyMap<string, string> = new Map([
  ['2.5.4.3', 'CN'],
  ['2.5.4.4', 'SN'],
  ['2.5.4.5', 'serialNumber'],
  ['2.5.4.6', 'C'],
  ['2.5.4.7', 'L'],
  ['2.5.4.8', 'ST'],
  ['2.5.4.9', 'street'],
  ['2.5.4.10', 'O'],
  ['2.5.4.11', 'OU'],
  ['2.5.4.12', 'title'],
  ['2.5.4.13', 'description'],
  ['2.5.4.15', 'businessCategory'],
  ['2.5.4.17', 'postalCode'],
  ['2.5.4.41', 'name'],
  ['2.5.4.42', 'GN'],
  ['2.5.4.43', 'initials'],
  ['2.5.4.44', 'generationQualifier'],
  ['2.5.4.45', 'x500UniqueIdentifier'],
  ['2.5.4.46', 'dnQualifier'],
  ['2.5.4.65', 'pseudonym'],
  ['2.5.4.72', 'role'],
  ['2.5.4.97', 'organizationIdentifier'],
  ['0.9.2342.19200300.100.1.1', 'UID'],
  ['0.9.2342.19200300.100.1.25', 'DC'],
  ['1.2.840.113549.1.9.1', 'emailAddress'],
  ['1.3.6.1.4.1.311.60.2.1.1', 'jurisdictionL'],
  ['1.3.6.1.4.1.311.60.2.1.2', 'jurisdictionST'],
  ['1.3.6.1.4.1.311.60.2.1.3', 'jurisdictionC'],
]);

export interface NameAttribute {
  oid: string;
  /** The decoded text, or undefined for a value that is not a string type. */
  text: string | undefined;
  /** Content octets as encoded (used for non-string values). */
  raw: Buffer;
}

/** What the rules and `subjectOf` read from one certificate. */
export interface CertificateNames {
  sanUri: string[];
  sanDns: string[];
  sanEmail: string[];
  /** Subject RDNs in certificate (DER) order; each RDN's attributes in DER order. */
  subject: NameAttribute[][];
}

interface CompiledRule {
  field: CertificateField;
  regex: RegExp;
}

export function createCertificateMapper(rules: readonly CertificateRule[]): CertificateMapper {
  const compiled = rules.map((rule, index) => compileRule(rule, `identity.certificateRules[${index}]`));
  loadX509(); // here rather than at the first client certificate: a broken install fails at start or reload
  // tenantOf and subjectOf are usually asked about the same certificate in a row.
  const parsed = new WeakMap<Buffer, CertificateNames | null>();
  const namesOf = (certificate: PeerCertificate): CertificateNames | null => {
    let names = parsed.get(certificate.raw);
    if (names === undefined) {
      names = readCertificateNames(certificate.raw);
      parsed.set(certificate.raw, names);
    }
    return names;
  };

  return {
    tenantOf(certificate) {
      // Defence in depth: an unverified certificate (clientCertificates: optional) never maps.
      if (!certificate.authorized) return undefined;
      const names = namesOf(certificate);
      return names === null ? undefined : tenantFromNames(compiled, names);
    },
    subjectOf(certificate) {
      const names = namesOf(certificate);
      return names === null ? '' : formatSubject(names.subject);
    },
  };
}

function compileRule(rule: CertificateRule, path: string): CompiledRule {
  let regex: RegExp;
  try {
    regex = new RegExp(rule.pattern, 'u');
  } catch (error) {
    throw new ConfigError(`${path}.pattern`, `not a valid regular expression: ${(error as Error).message}`);
  }
  // An alternative that matches the empty string reports every named group of the pattern.
  const groups = new RegExp(`(?:${rule.pattern})|`, 'u').exec('')?.groups;
  if (groups === undefined || !Object.hasOwn(groups, 'tenant')) {
    throw new ConfigError(`${path}.pattern`, 'needs a named group (?<tenant>…)');
  }
  return { field: rule.field, regex };
}

function tenantFromNames(rules: readonly CompiledRule[], names: CertificateNames): string | undefined {
  for (const rule of rules) {
    for (const value of fieldValues(names, rule.field)) {
      const tenant = rule.regex.exec(value)?.groups?.tenant;
      if (tenant !== undefined && tenant !== '') return tenant;
    }
  }
  return undefined;
}

/** The values a rule's field reads, in certificate order. */
function fieldValues(names: CertificateNames, field: CertificateField): string[] {
  switch (field) {
    case 'san-uri':
      return names.sanUri;
    case 'san-dns':
      return names.sanDns;
    case 'san-email':
      return names.sanEmail;
    case 'subject-cn':
      return subjectValues(names, OID_CN);
    case 'subject-ou':
      return subjectValues(names, OID_OU);
    case 'subject-o':
      return subjectValues(names, OID_O);
  }
}

function subjectValues(names: CertificateNames, oid: string): string[] {
  const values: string[] = [];
  for (const rdn of names.subject) {
    for (const attribute of rdn) {
      if (attribute.oid === oid && attribute.text !== undefined) values.push(attribute.text);
    }
  }
  return values;
}

/** Parses the names the rules use; null when the bytes are not a certificate. */
export function readCertificateNames(raw: Uint8Array): CertificateNames | null {
  const x509 = loadX509();
  let certificate: X509.X509Certificate;
  let subject: NameAttribute[][];
  try {
    certificate = new x509.X509Certificate(raw);
    subject = parseName(Buffer.from(certificate.subjectName.toArrayBuffer()));
  } catch {
    return null;
  }
  const names: CertificateNames = { sanUri: [], sanDns: [], sanEmail: [], subject };
  let san: X509.SubjectAlternativeNameExtension | null = null;
  try {
    san = certificate.getExtension(x509.SubjectAlternativeNameExtension);
  } catch {
    // A malformed SAN extension contributes no names; the subject still counts.
  }
  // Unsupported name forms (x400Address, ediPartyName, …) are skipped by the library.
  for (const name of san?.names.items ?? []) {
    if (name.type === 'url') names.sanUri.push(name.value);
    else if (name.type === 'dns') names.sanDns.push(name.value);
    else if (name.type === 'email') names.sanEmail.push(name.value);
  }
  return names;
}

// ---------------------------------------------------------------------------------------------
// Subject: a minimal DER reader for Name ::= SEQUENCE OF SET OF SEQUENCE { OID, ANY }.

interface Tlv {
  tag: number;
  content: Buffer;
  end: number;
}

function readTlv(buffer: Buffer, offset: number): Tlv {
  if (offset + 2 > buffer.length) throw new DerParseError('truncated DER');
  const tag = buffer[offset]!;
  let length = buffer[offset + 1]!;
  let start = offset + 2;
  if (length & 0x80) {
    const octets = length & 0x7f;
    if (octets === 0 || octets > 4 || start + octets > buffer.length) throw new DerParseError('bad DER length');
    length = 0;
    for (let i = 0; i < octets; i++) length = length * 256 + buffer[start + i]!;
    start += octets;
  }
  const end = start + length;
  if (end > buffer.length) throw new DerParseError('truncated DER');
  return { tag, content: buffer.subarray(start, end), end };
}

function children(content: Buffer): Tlv[] {
  const items: Tlv[] = [];
  for (let offset = 0; offset < content.length;) {
    const item = readTlv(content, offset);
    items.push(item);
    offset = item.end;
  }
  return items;
}

function parseName(der: Buffer): NameAttribute[][] {
  const name = readTlv(der, 0);
  if (name.tag !== 0x30) throw new DerParseError('Name is not a SEQUENCE');
  return children(name.content).map((set) => {
    if (set.tag !== 0x31) throw new DerParseError('RDN is not a SET');
    return children(set.content).map((pair) => {
      const [type, value] = children(pair.content);
      if (pair.tag !== 0x30 || type === undefined || type.tag !== 0x06 || value === undefined) {
        throw new DerParseError('bad AttributeTypeAndValue');
      }
      return { oid: decodeOid(type.content), text: decodeString(value.tag, value.content), raw: value.content };
    });
  });
}

function decodeOid(content: Buffer): string {
  const arcs: number[] = [];
  let value = 0;
  for (const byte of content) {
    value = value * 128 + (byte & 0x7f);
    if ((byte & 0x80) === 0) {
      arcs.push(value);
      value = 0;
    }
  }
  const first = arcs.shift() ?? 0;
  const head = first < 80 ? [Math.floor(first / 40), first % 40] : [2, first - 80];
  return [...head, ...arcs].join('.');
}

function decodeString(tag: number, content: Buffer): string | undefined {
  switch (tag) {
    case 0x0c: // UTF8String
      return content.toString('utf8');
    case 0x12: // NumericString
    case 0x13: // PrintableString
    case 0x16: // IA5String
    case 0x1a: // VisibleString
      return content.toString('latin1');
    case 0x14: // TeletexString (T61): in practice Latin-1
      return content.toString('latin1');
    case 0x1e: {
      // BMPString: UTF-16BE
      const swapped = Buffer.from(content);
      swapped.swap16();
      return swapped.toString('utf16le');
    }
    case 0x1c: {
      // UniversalString: UTF-32BE
      let text = '';
      for (let i = 0; i + 3 < content.length; i += 4) text += String.fromCodePoint(content.readUInt32BE(i));
      return text;
    }
    default:
      return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// RFC 2253 rendering, as mongod's SSLX509Name::toString() after normalizeStrings().

/** Renders a subject (RDNs in certificate order) as MongoDB reports it for MONGODB-X509. */
function formatSubject(rdns: readonly (readonly NameAttribute[])[]): string {
  return [...rdns]
    .reverse()
    .map((rdn) =>
      [...rdn]
        .reverse()
        .map((attribute) => `${SHORT_NAMES.get(attribute.oid) ?? attribute.oid}=${renderValue(attribute)}`)
        .join('+'),
    )
    .join(',');
}

function renderValue(attribute: NameAttribute): string {
  // Non-string values are written as their content octets, as the server does.
  return escapeRfc2253Bytes(
    attribute.text === undefined ? attribute.raw : Buffer.from(prepareLdapString(attribute.text), 'utf8'),
  );
}

// RFC 4518 §2.2 (ICU's USPREP_RFC4518_LDAP profile, which mongod applies to subject values).
const MAP_TO_NOTHING =
  // eslint-disable-next-line no-misleading-character-class -- RFC 4518 lists combining marks one by one, on purpose
  /[\u00AD\u034F\u1806\u180B-\u180D\uFE00-\uFE0F\uFFFC\u0000-\u0008\u000E-\u001F\u007F-\u0084\u0086-\u009F\u06DD\u070F\u180E\u200B-\u200F\u202A-\u202E\u2060-\u2063\u206A-\u206F\uFEFF\uFFF9-\uFFFB\u{1D173}-\u{1D17A}\u{E0001}\u{E0020}-\u{E007F}]/gu;
const MAP_TO_SPACE = /[\t\n\u000B\f\r\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]/gu;

/** The RFC 4518 LDAP string preparation's mapping and NFKC normalization steps. */
function prepareLdapString(value: string): string {
  return value.replace(MAP_TO_NOTHING, '').replace(MAP_TO_SPACE, ' ').normalize('NFKC');
}

const SPECIALS = new Set([',', '+', '"', '\\', '<', '>', ';']);
const SPACE = 0x20;
const HASH = 0x23;

/**
 * Escapes one attribute value exactly as mongod's `escapeRfc2253` (ssl_manager.cpp) does,
 * including its quirk: a trailing space is escaped only when the escaped value is longer than
 * two characters, so `"a "` stays `a `.
 */
export function escapeRfc2253(value: string): string {
  return escapeRfc2253Bytes(Buffer.from(value, 'utf8'));
}

function escapeRfc2253Bytes(bytes: Uint8Array): string {
  let out = '';
  let index = 0;
  if (bytes[0] === SPACE || bytes[0] === HASH) {
    out = `\\${String.fromCharCode(bytes[0])}`;
    index = 1;
  }
  for (; index < bytes.length; index++) {
    const byte = bytes[index]!;
    if (byte >= 0x80) {
      out += `\\${byte.toString(16).toUpperCase()}`;
    } else {
      const char = String.fromCharCode(byte);
      out += SPECIALS.has(char) ? `\\${char}` : char;
    }
  }
  if (out.length > 2 && out.endsWith(' ')) out = `${out.slice(0, -1)}\\ `;
  return out;
}
