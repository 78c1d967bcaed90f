// A throw-away PKI for TLS tests, generated with @peculiar/x509 (ECDSA P-256, fast) into a temporary
// directory: no key is ever checked in. One CA signs the server and most client certificates; a
// second, unrelated CA signs the "unknown CA" client.
//
// Subjects are written in the conventional DER order (C, ST, L, O, OU, CN), so MongoDB reports
// them most specific first: `CN=tenant-globex,OU=payments,O=Globex,C=US`.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CertificateRule, ListenerTlsConfig } from '../../src/config/types.js';
import { loadX509, type X509 } from '../../src/identity/x509-lib.js';

const x509 = loadX509();

const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY = 24 * 60 * 60 * 1000;

type KeyPair = Parameters<typeof x509.X509CertificateGenerator.createSelfSigned>[0]['keys'];

/** One certificate and its key, on disk and in memory. */
export interface IssuedCertificate {
  /** PEM certificate. */
  certFile: string;
  /** PEM PKCS#8 private key (unencrypted). */
  keyFile: string;
  /** Certificate then key in one PEM file: the driver's / mongosh's `tlsCertificateKeyFile`. */
  pemFile: string;
  certPem: string;
  keyPem: string;
  /** DER bytes (what `getPeerCertificate().raw` returns). */
  der: Buffer;
  /** Upper-case hex without leading zeros, as Node's `getPeerCertificate().serialNumber`. */
  serialNumber: string;
}

export interface ClientCertificateOptions {
  /** Base name of the files in the PKI directory; default: a random one. */
  name?: string;
  cn?: string;
  ous?: string[];
  os?: string[];
  c?: string;
  /** Subject in DER order, replacing cn/ous/os/c (e.g. for multi-valued RDNs or odd strings). */
  subject?: X509.JsonNameParams;
  /** SAN URIs, DNS names and e-mail addresses. */
  uris?: string[];
  dns?: string[];
  emails?: string[];
  notBefore?: Date;
  notAfter?: Date;
  /** `ca` (default) or the unrelated `other` CA. */
  issuer?: 'ca' | 'other';
}

export interface TestPki {
  dir: string;
  /** The CA the proxy trusts for client certificates (and clients trust for the server). */
  caFile: string;
  /** An unrelated CA nobody trusts. */
  otherCaFile: string;
  /** For `localhost` / `127.0.0.1` (SAN DNS + IP), signed by the CA; rotateServerCert() replaces its files. */
  server: IssuedCertificate;
  clients: {
    /** SAN URI `spiffe://cluster/ns/acme/sa/app` → tenant `acme`. */
    spiffe: IssuedCertificate;
    /** Only subject `CN=tenant-globex` → tenant `globex`. */
    cn: IssuedCertificate;
    /** `CN=svc-1,OU=team-initech,O=Initech,C=US` → tenant `initech` (by OU). */
    ouO: IssuedCertificate;
    /** Like `spiffe` (tenant `acme`) but expired yesterday. */
    expired: IssuedCertificate;
    /** Like `spiffe` (tenant `acme`) but signed by the other CA. */
    unknownCa: IssuedCertificate;
    /** Valid, signed by the CA, matches none of `rules`. */
    unmatched: IssuedCertificate;
  };
  /** Tenant of each client certificate under `rules`. */
  tenants: { spiffe: string; cn: string; ouO: string };
  /** Rules that map the client certificates above. */
  rules: CertificateRule[];
  issueClient(options?: ClientCertificateOptions): Promise<IssuedCertificate>;
  /** A listener's `tls` section serving `server`, trusting the CA for client certificates. */
  listenerTls(clientCertificates: ListenerTlsConfig['clientCertificates']): ListenerTlsConfig;
  /**
   * Issues a new server certificate with a new key and moves it over `server.certFile` /
   * `server.keyFile` (each file replaced atomically by rename, key first); `server` is updated.
   */
  rotateServerCert(): Promise<IssuedCertificate>;
  /** Deletes the directory. */
  remove(): Promise<void>;
}

interface Authority {
  cert: X509.X509Certificate;
  keys: KeyPair;
}

export async function makeTestPki(dir?: string): Promise<TestPki> {
  const root = dir ?? (await mkdtemp(join(tmpdir(), 'mtp-pki-')));
  const ca = await createAuthority('mongo-tenant-proxy test CA');
  const other = await createAuthority('Unknown test CA');
  const caFile = join(root, 'ca.pem');
  const otherCaFile = join(root, 'other-ca.pem');
  await writeFile(caFile, ca.cert.toString('pem') + '\n');
  await writeFile(otherCaFile, other.cert.toString('pem') + '\n');

  const issueClient = async (options: ClientCertificateOptions = {}): Promise<IssuedCertificate> => {
    const issuer = options.issuer === 'other' ? other : ca;
    const subject = options.subject ?? conventionalSubject(options);
    const issued = await issue(issuer, {
      subject,
      notBefore: options.notBefore,
      notAfter: options.notAfter,
      sans: [
        ...(options.uris ?? []).map((value) => ({ type: 'url' as const, value })),
        ...(options.dns ?? []).map((value) => ({ type: 'dns' as const, value })),
        ...(options.emails ?? []).map((value) => ({ type: 'email' as const, value })),
      ],
      usage: 'clientAuth',
    });
    return save(root, options.name ?? `client-${randomBytes(4).toString('hex')}`, issued);
  };

  const issueServer = async (): Promise<Issued> =>
    issue(ca, {
      subject: [{ O: ['mongo-tenant-proxy tests'] }, { CN: ['localhost'] }],
      sans: [
        { type: 'dns', value: 'localhost' },
        { type: 'ip', value: '127.0.0.1' },
      ],
      usage: 'serverAuth',
    });

  const server = await save(root, 'server', await issueServer());
  const spiffeUri = 'spiffe://cluster/ns/acme/sa/app';
  const yesterday = new Date(Date.now() - DAY);
  const pki: TestPki = {
    dir: root,
    caFile,
    otherCaFile,
    server,
    clients: {
      spiffe: await issueClient({ name: 'client-spiffe', cn: 'app', os: ['Acme'], uris: [spiffeUri] }),
      cn: await issueClient({ name: 'client-cn', subject: [{ CN: ['tenant-globex'] }] }),
      ouO: await issueClient({ name: 'client-ou-o', c: 'US', os: ['Initech'], ous: ['team-initech'], cn: 'svc-1' }),
      expired: await issueClient({
        name: 'client-expired',
        cn: 'app',
        uris: [spiffeUri],
        notBefore: new Date(Date.now() - 3 * DAY),
        notAfter: yesterday,
      }),
      unknownCa: await issueClient({ name: 'client-unknown-ca', cn: 'app', uris: [spiffeUri], issuer: 'other' }),
      unmatched: await issueClient({
        name: 'client-unmatched',
        cn: 'nobody',
        os: ['Elsewhere'],
        ous: ['ops'],
        uris: ['spiffe://other-cluster/ns/acme/sa/app'],
        dns: ['nobody.example'],
      }),
    },
    tenants: { spiffe: 'acme', cn: 'globex', ouO: 'initech' },
    rules: [
      { field: 'san-uri', pattern: '^spiffe://cluster/ns/(?<tenant>[a-z0-9-]+)/sa/[^/]+$' },
      { field: 'subject-cn', pattern: '^tenant-(?<tenant>[a-z0-9-]+)$' },
      { field: 'subject-ou', pattern: '^team-(?<tenant>[a-z0-9-]+)$' },
    ],
    issueClient,
    listenerTls: (clientCertificates) => ({
      certFile: server.certFile,
      keyFile: server.keyFile,
      keyPassphrase: null,
      caFile,
      clientCertificates,
      minVersion: 'TLSv1.2',
    }),
    async rotateServerCert() {
      const issued = await issueServer();
      const next = await save(root, `server-${randomBytes(4).toString('hex')}`, issued);
      await rename(next.keyFile, server.keyFile);
      await rename(next.certFile, server.certFile);
      await rename(next.pemFile, server.pemFile);
      Object.assign(server, { ...next, certFile: server.certFile, keyFile: server.keyFile, pemFile: server.pemFile });
      return server;
    },
    async remove() {
      await rm(root, { recursive: true, force: true });
    },
  };
  return pki;
}

function conventionalSubject(options: ClientCertificateOptions): X509.JsonNameParams {
  const subject: X509.JsonNameParams = [];
  if (options.c !== undefined) subject.push({ C: [options.c] });
  for (const o of options.os ?? []) subject.push({ O: [o] });
  for (const ou of options.ous ?? []) subject.push({ OU: [ou] });
  if (options.cn !== undefined) subject.push({ CN: [options.cn] });
  return subject;
}

async function generateKeys(): Promise<KeyPair> {
  return (await crypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as KeyPair;
}

/** A positive serial (first byte 0x10–0x7f) so Node prints it at full length. */
function serial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x6f) | 0x10;
  return bytes.toString('hex');
}

async function createAuthority(cn: string): Promise<Authority> {
  const keys = await generateKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: [{ O: ['mongo-tenant-proxy tests'] }, { CN: [cn] }],
    notBefore: new Date(Date.now() - DAY),
    notAfter: new Date(Date.now() + 30 * DAY),
    keys,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert, keys };
}

interface Issued {
  cert: X509.X509Certificate;
  keys: KeyPair;
}

async function issue(
  issuer: Authority,
  options: {
    subject: X509.JsonNameParams;
    notBefore?: Date | undefined;
    notAfter?: Date | undefined;
    sans: X509.JsonGeneralNames;
    usage: 'serverAuth' | 'clientAuth';
  },
): Promise<Issued> {
  const keys = await generateKeys();
  const extensions: X509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([
      options.usage === 'serverAuth' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth,
    ]),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    await x509.AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey),
  ];
  if (options.sans.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(options.sans));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: new x509.Name(options.subject),
    issuer: issuer.cert.subjectName,
    notBefore: options.notBefore ?? new Date(Date.now() - 60 * 60 * 1000),
    notAfter: options.notAfter ?? new Date(Date.now() + 7 * DAY),
    publicKey: keys.publicKey,
    signingKey: issuer.keys.privateKey,
    signingAlgorithm: ALGORITHM,
    extensions,
  });
  return { cert, keys };
}

async function save(dir: string, name: string, issued: Issued): Promise<IssuedCertificate> {
  const certPem = issued.cert.toString('pem') + '\n';
  const pkcs8 = await crypto.subtle.exportKey('pkcs8', issued.keys.privateKey);
  const keyPem = x509.PemConverter.encode(pkcs8, 'PRIVATE KEY') + '\n';
  const files = {
    certFile: join(dir, `${name}.crt.pem`),
    keyFile: join(dir, `${name}.key.pem`),
    pemFile: join(dir, `${name}.pem`),
  };
  await writeFile(files.keyFile, keyPem, { mode: 0o600 });
  await writeFile(files.certFile, certPem);
  await writeFile(files.pemFile, certPem + keyPem, { mode: 0o600 });
  return {
    ...files,
    certPem,
    keyPem,
    der: Buffer.from(issued.cert.rawData),
    serialNumber: issued.cert.serialNumber.replace(/^0+/, '').toUpperCase(),
  };
}
