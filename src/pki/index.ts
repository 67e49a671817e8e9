/**
 * pki: the console's internal certificate authority and the key/CSR handling of agents
 * and targets. Knows X.509 and PEM; must not touch files or sockets (callers persist).
 */
export {
  type CaMaterial,
  createCa,
  fingerprint,
  generateKeyAndCsr,
  type IssuedIdentity,
  issueFromCsr,
  issueServerCertificate,
  peerIdentity,
} from './authority.js';
