import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CertificateRule } from '../../../src/config/types.js';
import { ConfigError } from '../../../src/errors.js';
import { createCertificateMapper, escapeRfc2253, readCertificateNames } from '../../../src/identity/certificates.js';
import type { PeerCertificate } from '../../../src/identity/types.js';
import {
  makeTestPki,
  type ClientCertificateOptions,
  type IssuedCertificate,
  type TestPki,
} from '../../helpers/certs.js';

let pki: TestPki;

beforeAll(async () => {
  pki = await makeTestPki();
});

afterAll(async () => {
  await pki?.remove();
});

const peer = (issued: IssuedCertificate, authorized = true): PeerCertificate => ({ raw: issued.der, authorized });

async function client(options: ClientCertificateOptions): Promise<PeerCertificate> {
  return peer(await pki.issueClient(options));
}

describe('tenantOf', () => {
  it('maps the test PKI clients with its rules', () => {
    const mapper = createCertificateMapper(pki.rules);
    expect(mapper.tenantOf(peer(pki.clients.spiffe))).toBe('acme');
    expect(mapper.tenantOf(peer(pki.clients.cn))).toBe('globex');
    expect(mapper.tenantOf(peer(pki.clients.ouO))).toBe('initech');
    expect(mapper.tenantOf(peer(pki.clients.unmatched))).toBeUndefined();
  });

  it('maps no tenant from a certificate TLS did not verify', () => {
    const mapper = createCertificateMapper(pki.rules);
    expect(mapper.tenantOf(peer(pki.clients.spiffe, false))).toBeUndefined();
    // The subject is still available (for logs).
    expect(mapper.subjectOf(peer(pki.clients.spiffe, false))).toBe('CN=app,O=Acme');
  });

  it('tries rules in order: the first rule with a match wins', async () => {
    const both = await client({ cn: 'tenant-from-cn', uris: ['spiffe://cluster/ns/from-uri/sa/app'] });
    const uri: CertificateRule = { field: 'san-uri', pattern: '^spiffe://cluster/ns/(?<tenant>[^/]+)/sa/' };
    const cn: CertificateRule = { field: 'subject-cn', pattern: '^tenant-(?<tenant>.+)$' };
    expect(createCertificateMapper([uri, cn]).tenantOf(both)).toBe('from-uri');
    expect(createCertificateMapper([cn, uri]).tenantOf(both)).toBe('from-cn');
  });

  it('falls through to the next rule when a rule matches no value', async () => {
    const cert = await client({ cn: 'tenant-fallback', uris: ['https://not-spiffe.example/x'] });
    const mapper = createCertificateMapper([
      { field: 'san-uri', pattern: '^spiffe://cluster/ns/(?<tenant>[^/]+)/sa/' },
      { field: 'san-dns', pattern: '^(?<tenant>[a-z]+)\\.tenants\\.example$' },
      { field: 'subject-cn', pattern: '^tenant-(?<tenant>.+)$' },
    ]);
    expect(mapper.tenantOf(cert)).toBe('fallback');
  });

  it('reads each field', async () => {
    const cert = await client({
      cn: 'cn-value',
      ous: ['ou-value'],
      os: ['o-value'],
      uris: ['spiffe://cluster/ns/uri-value/sa/app'],
      dns: ['dns-value.tenants.example'],
      emails: ['svc@email-value.example'],
    });
    const only = (rule: CertificateRule): string | undefined => createCertificateMapper([rule]).tenantOf(cert);
    expect(only({ field: 'san-uri', pattern: '/ns/(?<tenant>[^/]+)/' })).toBe('uri-value');
    expect(only({ field: 'san-dns', pattern: '^(?<tenant>[^.]+)\\.tenants\\.example$' })).toBe('dns-value');
    expect(only({ field: 'san-email', pattern: '^svc@(?<tenant>[^.]+)\\.example$' })).toBe('email-value');
    expect(only({ field: 'subject-cn', pattern: '^(?<tenant>.+)$' })).toBe('cn-value');
    expect(only({ field: 'subject-ou', pattern: '^(?<tenant>.+)$' })).toBe('ou-value');
    expect(only({ field: 'subject-o', pattern: '^(?<tenant>.+)$' })).toBe('o-value');
    // A field reads only its own values.
    expect(only({ field: 'san-dns', pattern: '(?<tenant>uri-value)' })).toBeUndefined();
    expect(only({ field: 'subject-o', pattern: '(?<tenant>ou-value)' })).toBeUndefined();
    expect(only({ field: 'san-email', pattern: '(?<tenant>dns-value)' })).toBeUndefined();
  });

  it('tries every value of a field in certificate order', async () => {
    const cert = await client({
      cn: 'x',
      uris: ['https://first.example/', 'spiffe://cluster/ns/second/sa/app', 'spiffe://cluster/ns/third/sa/app'],
      dns: ['a.example', 'b.tenants.example', 'c.tenants.example'],
    });
    expect(createCertificateMapper([{ field: 'san-uri', pattern: '/ns/(?<tenant>[^/]+)/' }]).tenantOf(cert)).toBe(
      'second',
    );
    expect(
      createCertificateMapper([{ field: 'san-dns', pattern: '^(?<tenant>[a-z]+)\\.tenants\\.example$' }]).tenantOf(
        cert,
      ),
    ).toBe('b');
  });

  it('reads every value of multi-valued subject attributes, in certificate order', async () => {
    const separateRdns = await client({ cn: 'x', os: ['Org A', 'org-b'], ous: ['ops', 'team-one', 'team-two'] });
    expect(
      createCertificateMapper([{ field: 'subject-ou', pattern: '^team-(?<tenant>.+)$' }]).tenantOf(separateRdns),
    ).toBe('one');
    expect(
      createCertificateMapper([{ field: 'subject-o', pattern: '^org-(?<tenant>.+)$' }]).tenantOf(separateRdns),
    ).toBe('b');
    // One RDN holding several OUs (OU=ops+OU=team-three).
    const oneRdn = await client({ subject: [{ O: ['Acme'] }, { OU: ['ops', 'team-three'] }, { CN: ['x'] }] });
    expect(createCertificateMapper([{ field: 'subject-ou', pattern: '^team-(?<tenant>.+)$' }]).tenantOf(oneRdn)).toBe(
      'three',
    );
  });

  it('skips matches whose tenant group is empty or did not take part', async () => {
    const cert = await client({ cn: 'tenant-', uris: ['spiffe://cluster/ns/real/sa/app'] });
    const mapper = createCertificateMapper([
      { field: 'subject-cn', pattern: '^tenant-(?<tenant>[a-z]*)$' },
      { field: 'subject-cn', pattern: '^tenant-(?:(?<tenant>[a-z]+)|)$' },
      { field: 'san-uri', pattern: '/ns/(?<tenant>[^/]+)/' },
    ]);
    expect(mapper.tenantOf(cert)).toBe('real');
  });

  it('uses patterns as written (unanchored unless anchored)', async () => {
    const cert = await client({ cn: 'prefix-tenant-acme-suffix' });
    expect(createCertificateMapper([{ field: 'subject-cn', pattern: 'tenant-(?<tenant>[a-z]+)' }]).tenantOf(cert)).toBe(
      'acme',
    );
    expect(
      createCertificateMapper([{ field: 'subject-cn', pattern: '^tenant-(?<tenant>[a-z]+)$' }]).tenantOf(cert),
    ).toBeUndefined();
  });

  it('maps nothing with no rules, and nothing from bytes that are not a certificate', () => {
    expect(createCertificateMapper([]).tenantOf(peer(pki.clients.spiffe))).toBeUndefined();
    const garbage: PeerCertificate = { raw: Buffer.from('not a certificate'), authorized: true };
    expect(createCertificateMapper(pki.rules).tenantOf(garbage)).toBeUndefined();
    expect(createCertificateMapper(pki.rules).subjectOf(garbage)).toBe('');
    expect(createCertificateMapper(pki.rules).tenantOf({ raw: Buffer.alloc(0), authorized: true })).toBeUndefined();
    expect(readCertificateNames(Buffer.from([0x30, 0x82, 0xff]))).toBeNull();
  });

  it('refuses invalid patterns and patterns without a tenant group, naming the rule', () => {
    const valid: CertificateRule = { field: 'subject-cn', pattern: '^(?<tenant>.+)$' };
    const attempt = (pattern: string): ConfigError => {
      try {
        createCertificateMapper([valid, { field: 'subject-cn', pattern }]);
      } catch (error) {
        expect(error).toBeInstanceOf(ConfigError);
        return error as ConfigError;
      }
      throw new Error('expected a ConfigError');
    };
    expect(attempt('^(unclosed').path).toBe('identity.certificateRules[1].pattern');
    expect(attempt('^tenant-(.+)$').message).toMatch(/tenant/);
    expect(attempt('^(?<name>.+)$').path).toBe('identity.certificateRules[1].pattern');
  });
});

describe('readCertificateNames', () => {
  it('lists SAN URIs, DNS names and e-mails in certificate order, ignoring IP addresses', () => {
    const names = readCertificateNames(pki.server.der);
    expect(names?.sanDns).toEqual(['localhost']);
    expect(names?.sanUri).toEqual([]);
    const unmatched = readCertificateNames(pki.clients.unmatched.der);
    expect(unmatched?.sanUri).toEqual(['spiffe://other-cluster/ns/acme/sa/app']);
    expect(unmatched?.sanDns).toEqual(['nobody.example']);
  });
});

describe('subjectOf (RFC 2253 as mongod reports it for MONGODB-X509)', () => {
  const subjectOf = async (options: ClientCertificateOptions): Promise<string> =>
    createCertificateMapper([]).subjectOf(await client(options));

  it('puts the most specific RDN first', () => {
    const mapper = createCertificateMapper(pki.rules);
    expect(mapper.subjectOf(peer(pki.clients.ouO))).toBe('CN=svc-1,OU=team-initech,O=Initech,C=US');
    expect(mapper.subjectOf(peer(pki.clients.cn))).toBe('CN=tenant-globex');
  });

  it('agrees with openssl -nameopt RFC2253 on a plain subject', async () => {
    const issued = await pki.issueClient({ c: 'IS', os: ['MongoDB'], ous: ['Drivers'], cn: 'client' });
    let openssl: string;
    try {
      openssl = execFileSync('openssl', ['x509', '-noout', '-subject', '-nameopt', 'RFC2253'], {
        input: issued.certPem,
        encoding: 'utf8',
      });
    } catch {
      return; // no openssl binary here: the literal expectation below still holds
    }
    expect(openssl.trim()).toBe('subject=CN=client,OU=Drivers,O=MongoDB,C=IS');
    expect(createCertificateMapper([]).subjectOf(peer(issued))).toBe('CN=client,OU=Drivers,O=MongoDB,C=IS');
  });

  it('escapes the RFC 2253 specials, a leading space and a trailing space', async () => {
    // The subject of mongod's own escaping test certificate (jstests client_escape.pem).
    const subject = await subjectOf({
      subject: [
        { C: [{ utf8String: ',+' }] },
        { ST: [{ utf8String: '"\\<' }] },
        { L: [{ utf8String: ' >' }] },
        { O: [{ utf8String: '; ' }] },
        { OU: [{ utf8String: 'Escape' }] },
        { CN: [{ utf8String: 'Test' }] },
      ],
    });
    expect(subject).toBe('CN=Test,OU=Escape,O=\\;\\ ,L=\\ \\>,ST=\\"\\\\\\<,C=\\,\\+');
  });

  it('escapes a leading # and writes every byte of non-ASCII characters as \\XX', async () => {
    expect(await subjectOf({ subject: [{ O: [{ utf8String: '#hash' }] }, { CN: [{ utf8String: 'Калоян' }] }] })).toBe(
      'CN=\\D0\\9A\\D0\\B0\\D0\\BB\\D0\\BE\\D1\\8F\\D0\\BD,O=\\#hash',
    );
    // BMPString and UniversalString values are the same text.
    expect(await subjectOf({ subject: [{ CN: [{ bmpString: 'Жé' }] }] })).toBe('CN=\\D0\\96\\C3\\A9');
    expect(await subjectOf({ subject: [{ CN: [{ universalString: 'Ж' }] }] })).toBe('CN=\\D0\\96');
  });

  it('prepares values with the RFC 4518 profile (NFKC, control characters, spaces)', async () => {
    expect(await subjectOf({ subject: [{ CN: [{ utf8String: 'Ａ\tb\u0001c\u00ADd' }] }] })).toBe('CN=A bcd');
    // "e" + combining acute accent composes to é (C3 A9).
    expect(await subjectOf({ subject: [{ CN: [{ utf8String: 'e\u0301' }] }] })).toBe('CN=\\C3\\A9');
  });

  it('joins multi-valued RDNs with + (reversed, as mongod iterates entries backwards)', async () => {
    expect(await subjectOf({ subject: [{ C: ['US'] }, { O: ['acme'] }, { OU: ['a'], CN: ['b'] }] })).toBe(
      'CN=b+OU=a,O=acme,C=US',
    );
  });

  it('uses OpenSSL short names, and the dotted OID for unknown types', async () => {
    expect(
      await subjectOf({
        subject: [
          { DC: ['com'] },
          { DC: ['example'] },
          { '1.2.3.4': ['custom'] },
          { E: ['svc@example.com'] },
          { CN: ['x'] },
        ],
      }),
    ).toBe('CN=x,emailAddress=svc@example.com,1.2.3.4=custom,DC=example,DC=com');
  });
});

describe('escapeRfc2253', () => {
  it('matches mongod (ssl_manager_test EscapeRFC2253), including its trailing-space rule', () => {
    expect(escapeRfc2253('abc')).toBe('abc');
    expect(escapeRfc2253(' abc')).toBe('\\ abc');
    expect(escapeRfc2253('#abc')).toBe('\\#abc');
    expect(escapeRfc2253('a,c')).toBe('a\\,c');
    expect(escapeRfc2253('a+c')).toBe('a\\+c');
    expect(escapeRfc2253('a"c')).toBe('a\\"c');
    expect(escapeRfc2253('a\\c')).toBe('a\\\\c');
    expect(escapeRfc2253('a<c')).toBe('a\\<c');
    expect(escapeRfc2253('a>c')).toBe('a\\>c');
    expect(escapeRfc2253('a;c')).toBe('a\\;c');
    expect(escapeRfc2253('abc ')).toBe('abc\\ ');
    // mongod escapes a trailing space only when the escaped value is longer than two characters.
    expect(escapeRfc2253('a ')).toBe('a ');
    expect(escapeRfc2253(' ')).toBe('\\ ');
    expect(escapeRfc2253('  ')).toBe('\\ \\ ');
    expect(escapeRfc2253('')).toBe('');
    expect(escapeRfc2253('é#')).toBe('\\C3\\A9#');
  });
});
