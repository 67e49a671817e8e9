import { X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  createCa,
  fingerprint,
  generateKeyAndCsr,
  issueFromCsr,
  issueServerCertificate,
  peerIdentity,
} from './authority.js';

describe('internal certificate authority', () => {
  it('issues a client certificate from a CSR, with the subject the console chooses', async () => {
    const ca = await createCa();
    const { csrPem } = await generateKeyAndCsr('ferry-agent:ignored');
    const id = '11111111-2222-3333-4444-555555555555';
    const pem = await issueFromCsr(ca, csrPem, `ferry-agent:${id}`);
    const cert = new X509Certificate(pem);
    expect(cert.verify(new X509Certificate(ca.certPem).publicKey)).toBe(true);
    expect(cert.subject).toContain(`CN=ferry-agent:${id}`);
    expect(peerIdentity(`ferry-agent:${id}`)).toEqual({ role: 'agent', id });
    expect(fingerprint(pem)).toMatch(/^[0-9a-f]{64}$/);
  });

  it('refuses a CSR whose signature does not verify', async () => {
    const ca = await createCa();
    const { csrPem } = await generateKeyAndCsr('x');
    const body = csrPem.split('\n').slice(1, -2).join('');
    const der = Buffer.from(body, 'base64');
    der[der.length - 5] = der[der.length - 5]! ^ 0xff;
    const bad = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    await expect(issueFromCsr(ca, bad, 'ferry-agent:x')).rejects.toMatchObject({ code: 'FERRY_BAD_REQUEST' });
  });

  it('issues a server certificate for loopback', async () => {
    const ca = await createCa();
    const server = await issueServerCertificate(ca, ['localhost', '127.0.0.1']);
    const cert = new X509Certificate(server.certPem);
    expect(cert.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(cert.checkHost('localhost')).toBe('localhost');
  });

  it('does not take an identity from a foreign common name', () => {
    expect(peerIdentity('ferry-admin:1')).toBeNull();
    expect(peerIdentity(undefined)).toBeNull();
  });
});
