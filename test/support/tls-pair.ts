import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { createCa, issueServerCertificate } from '../../src/pki/index.js';

/**
 * A real TLS 1.3 connection over loopback: `server` is the socket the server accepted (as
 * the target's data listener gets it), `client` the one that connected. `close()` destroys
 * both and the listener. `onAccept` runs on the accepted socket before anything reads it.
 */
export async function tlsPair(
  onAccept?: (server: tls.TLSSocket) => void,
): Promise<{ client: tls.TLSSocket; server: tls.TLSSocket; close: () => Promise<void> }> {
  const ca = await createCa('test CA');
  const id = await issueServerCertificate(ca, ['127.0.0.1']);
  let accepted: (s: tls.TLSSocket) => void = () => {};
  const serverSide = new Promise<tls.TLSSocket>((resolve) => {
    accepted = resolve;
  });
  const listener = tls.createServer({ key: id.keyPem, cert: id.certPem, minVersion: 'TLSv1.3' }, (s) => {
    onAccept?.(s);
    accepted(s);
  });
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  const { port } = listener.address() as AddressInfo;
  const client = tls.connect({ host: '127.0.0.1', port, ca: ca.certPem, minVersion: 'TLSv1.3' });
  await new Promise<void>((resolve, reject) => {
    client.once('secureConnect', resolve);
    client.once('error', reject);
  });
  const server = await serverSide;
  return {
    client,
    server,
    close: async () => {
      client.destroy();
      server.destroy();
      await new Promise<void>((resolve) => listener.close(() => resolve()));
    },
  };
}
