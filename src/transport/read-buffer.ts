import net from 'node:net';
import type { Duplex } from 'node:stream';

/**
 * Reads a socket into one buffer that is reused for every read, instead of a new Buffer
 * per read pushed through the stream's queue and 'data' event.
 *
 * Node's TLS delivers at most one 16 KiB record per read, so a receiver of 3.2 GB makes
 * some 200,000 reads; with 'data' each is a new Buffer, a push through the Readable
 * machinery, and garbage for the collector. Measured on this machine (2026-11-27, loopback
 * TLS 1.3, 3.2 GB in 1 MiB writes, receiver `process.cpuUsage()`): 3.05–3.50 CPU s with
 * 'data', 2.59–2.65 with a reused buffer; in the benchmark the target used 3 CPU s fewer
 * per 4 GiB of large files (docs/performance.md, session 10).
 *
 * Node offers this as the `onread` option, but only to sockets it connects itself
 * (`net.connect`, `tls.connect` without `socket`), never to one a server accepted: the
 * target's side of the data connection. The option is stored on the socket under
 * symbols that the socket's own pause(), resume() and read path consult, so this
 * installs the same two properties on an accepted socket, found by their descriptions.
 * Everything is checked first: if this Node stores them differently, nothing is touched
 * and the caller reads 'data' as before (`false`).
 *
 * `onRead(chunk)` gets a view of the shared buffer, valid only during the call: the
 * caller copies what it keeps. Its return value is ignored; pause() and resume() work as
 * on any socket (they stop and restart the reads). Data already queued in the stream
 * before the call is handed to `onRead` first.
 */
export function readIntoReusedBuffer(
  stream: Duplex,
  buffer: Buffer,
  onRead: (chunk: Buffer) => void,
): boolean {
  if (!(stream instanceof net.Socket)) return false;
  const handle = (stream as unknown as { _handle?: { useUserBuffer?: unknown } })._handle;
  if (!handle || typeof handle.useUserBuffer !== 'function') return false;
  if (stream.listenerCount('data') > 0 || stream.readableFlowing === true) return false;
  const own = Object.getOwnPropertySymbols(stream);
  const find = (d: string) => own.filter((s) => s.description === d);
  const [kBuffer, kBufferCb, kBufferGen] = [find('kBuffer'), find('kBufferCb'), find('kBufferGen')];
  if (kBuffer.length !== 1 || kBufferCb.length !== 1 || kBufferGen.length !== 1) return false;
  const slots = stream as unknown as Record<symbol, unknown>;
  // an ordinary socket holds null in all three; anything else is a layout this code does not know
  if (slots[kBuffer[0]!] !== null || slots[kBufferCb[0]!] !== null || slots[kBufferGen[0]!] !== null)
    return false;
  for (;;) {
    const queued = stream.read() as Buffer | null;
    if (queued === null) break;
    onRead(queued);
  }
  slots[kBuffer[0]!] = buffer;
  slots[kBufferCb[0]!] = (n: number, buf: Buffer) => {
    onRead(buf.subarray(0, n));
  };
  (handle.useUserBuffer as (b: Buffer) => void).call(handle, buffer);
  return true;
}

/** Bytes of the buffer `reusedBufferReads` gives each socket (TLS delivers at most 16 KiB a read). */
export const READ_BUFFER_BYTES = 64 * 1024;

/** `readIntoReusedBuffer` with a buffer of its own: what `Session`'s `readInto` option takes. */
export function reusedBufferReads(stream: Duplex, onRead: (chunk: Buffer) => void): boolean {
  return readIntoReusedBuffer(stream, Buffer.allocUnsafe(READ_BUFFER_BYTES), onRead);
}
