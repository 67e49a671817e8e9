import 'reflect-metadata';
import { createHash, X509Certificate as NodeX509, randomBytes, webcrypto } from 'node:crypto';

import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';
import { FerryError } from '../errors/index.js';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY = 86_400_000;

export interface CaMaterial {
  readonly certPem: string;
  readonly keyPem: string;
}

export interface IssuedIdentity {
  readonly certPem: string;
  readonly keyPem: string;
}

async function keyToPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  const b64 = der.toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN PRIVATE KEY-----\n${b64.trimEnd()}\n-----END PRIVATE KEY-----\n`;
}

async function pemToKey(pem: string): Promise<CryptoKey> {
  const b64 = pem.replace(/-----(BEGIN|END) PRIVATE KEY-----/g, '').replace(/\s+/g, '');
  return webcrypto.subtle.importKey('pkcs8', Buffer.from(b64, 'base64'), ALG, false, ['sign']);
}

function serial(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f;
  return b.toString('hex');
}

function validity(days: number): { notBefore: Date; notAfter: Date } {
  const now = Date.now();
  return { notBefore: new Date(now - DAY), notAfter: new Date(now + days * DAY) };
}

export async function createCa(commonName = 'ferry console CA'): Promise<CaMaterial> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${commonName}, O=ferry`,
    ...validity(3650),
    signingAlgorithm: ALG,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await keyToPem(keys.privateKey) };
}

async function issue(
  ca: CaMaterial,
  publicKey: x509.PublicKey | CryptoKey,
  commonName: string,
  sans: string[],
  usages: string[],
): Promise<string> {
  const caCert = new x509.X509Certificate(ca.certPem);
  const names = sans.map((s) =>
    isIP(s) ? { type: 'ip' as const, value: s } : { type: 'dns' as const, value: s },
  );
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${commonName}, O=ferry`,
    issuer: caCert.subject,
    ...validity(1825),
    signingAlgorithm: ALG,
    publicKey,
    signingKey: await pemToKey(ca.keyPem),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement,
        true,
      ),
      new x509.ExtendedKeyUsageExtension(usages),
      ...(names.length ? [new x509.SubjectAlternativeNameExtension(names)] : []),
    ],
  });
  return cert.toString('pem');
}

/** The console's HTTPS certificate, valid for the given host names and IP addresses. */
export async function issueServerCertificate(ca: CaMaterial, sans: string[]): Promise<IssuedIdentity> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const certPem = await issue(ca, keys.publicKey, 'ferry console', sans, [x509.ExtendedKeyUsage.serverAuth]);
  return { certPem, keyPem: await keyToPem(keys.privateKey) };
}

/**
 * Signs a registrant's CSR. The subject is chosen by the console (`ferry-<role>:<id>`),
 * never taken from the CSR; the CSR's own signature must verify.
 */
export async function issueFromCsr(ca: CaMaterial, csrPem: string, commonName: string): Promise<string> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (e) {
    throw new FerryError('FERRY_BAD_REQUEST', 'csr is not a PEM certificate request', { cause: e });
  }
  if (!(await csr.verify())) throw new FerryError('FERRY_BAD_REQUEST', 'csr signature does not verify');
  return issue(
    ca,
    csr.publicKey,
    commonName,
    [],
    [x509.ExtendedKeyUsage.clientAuth, x509.ExtendedKeyUsage.serverAuth],
  );
}

export async function generateKeyAndCsr(commonName: string): Promise<{ keyPem: string; csrPem: string }> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${commonName}`,
    keys,
    signingAlgorithm: ALG,
  });
  return { keyPem: await keyToPem(keys.privateKey), csrPem: csr.toString('pem') };
}

/** SHA-256 of the certificate's DER, lowercase hex: how the console names a credential. */
export function fingerprint(certPemOrDer: string | Buffer): string {
  const der = typeof certPemOrDer === 'string' ? new NodeX509(certPemOrDer).raw : certPemOrDer;
  return createHash('sha256').update(der).digest('hex');
}

/** `{role, id}` from a certificate this console issued (CN `ferry-<role>:<id>`), else null. */
export function peerIdentity(
  commonName: string | undefined,
): { role: 'agent' | 'target'; id: string } | null {
  const m = /^ferry-(agent|target):([0-9a-f-]{36})$/.exec(commonName ?? '');
  return m ? { role: m[1] as 'agent' | 'target', id: m[2]! } : null;
}
