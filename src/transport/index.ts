/**
 * transport: how ferry's programs reach each other. An HTTPS JSON client for the console
 * API (bearer token or client certificate), enrollment of an agent or target (key, CSR,
 * stored credential), and mutually authenticated TLS data connections between agent and
 * target. Must not import console, agent, target or cli code.
 */
export { ConsoleClient, type ConsoleClientOptions, parseHostPort } from './console-client.js';
export { connectData, createDataServer, setDataCredential } from './data-tls.js';
export { type Credential, enroll, forgetCredential, readSecretFile } from './enrollment.js';
export { Heartbeat, pollUntilStopped } from './heartbeat.js';
export { RateLimiter } from './rate-limit.js';
export { READ_BUFFER_BYTES, readIntoReusedBuffer, reusedBufferReads } from './read-buffer.js';
