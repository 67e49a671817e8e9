import { closeSync, fstatSync, fsyncSync, openSync, readSync, writeSync } from 'node:fs';
import { Blake3Hasher } from '@napi-rs/blake-hash';
import { FerryError, toFerryError } from '../../errors/index.js';
import { MAX_DATA_BYTES, type Session } from '../../protocol/index.js';
import { guardedSend } from './guarded-send.js';

/** A partition copied block for block: its device and size (the target's may be larger). */
export interface BlockDevice {
  readonly path: string;
  readonly sizeBytes: number;
}

const BLOCK = MAX_DATA_BYTES;

const ZERO_BLOCK = Buffer.alloc(BLOCK);

function isZero(b: Buffer): boolean {
  return b.equals(b.length === ZERO_BLOCK.length ? ZERO_BLOCK : ZERO_BLOCK.subarray(0, b.length));
}

/**
 * The source side of a blocks pass: reads each device whole and sends its non-zero 1 MiB
 * blocks (RAW, DATA…, FILE_END with the BLAKE3 of every byte), then COMMIT; returns the
 * bytes sent once the target has COMMITTED.
 */
export async function runBlocksSend(opts: {
  session: Session;
  devices: readonly BlockDevice[];
  signal?: AbortSignal;
  onBytes?: (n: number) => void;
}): Promise<{ bytesSent: number }> {
  const { session } = opts;
  let committed = false;
  const reader = (async () => {
    for await (const msg of session.messages()) {
      if (msg.type === 'committed') {
        committed = true;
        session.close();
      } else if (msg.type === 'reject' || msg.type === 'error')
        throw new FerryError('FERRY_TARGET_WRITE', `target: ${msg.body.message}`);
    }
  })();
  const send = guardedSend(session, reader);
  let bytesSent = 0;
  for (const [index, dev] of opts.devices.entries()) {
    let fd: number;
    try {
      fd = openSync(dev.path, 'r');
    } catch (e) {
      throw new FerryError('FERRY_SOURCE_READ', `cannot open ${dev.path}: ${(e as Error).message}`, {
        cause: e,
      });
    }
    try {
      await send({ type: 'raw', body: { seq: index, index, size: dev.sizeBytes } });
      const whole = new Blake3Hasher();
      for (let at = 0; at < dev.sizeBytes; ) {
        if (opts.signal?.aborted) throw new FerryError('FERRY_CONNECTION_LOST', 'the pass was stopped');
        const buf = Buffer.allocUnsafe(Math.min(BLOCK, dev.sizeBytes - at));
        const n = readSync(fd, buf, 0, buf.length, at);
        if (n <= 0)
          throw new FerryError('FERRY_SOURCE_READ', `${dev.path} is shorter than ${dev.sizeBytes} bytes`);
        const chunk = n === buf.length ? buf : buf.subarray(0, n);
        whole.update(chunk);
        if (!isZero(chunk)) {
          await send({ type: 'data', offset: at, data: chunk });
          bytesSent += n;
          opts.onBytes?.(n);
        }
        at += n;
      }
      await send({ type: 'file-end', body: { seq: index, hash: whole.digest('hex') } });
    } finally {
      closeSync(fd);
    }
  }
  await send({ type: 'commit', body: { seq: opts.devices.length } });
  await reader;
  if (!committed)
    throw new FerryError('FERRY_CONNECTION_LOST', 'the target closed before the blocks were committed');
  return { bytesSent };
}

/**
 * The target side of a blocks pass: writes each RAW device's DATA at its offsets and zeros
 * in between (the partition may hold old data), checks the hash of everything written,
 * fsyncs, and answers COMMIT with COMMITTED. Writes only to the devices of `devices`
 * (the task's disk plan), never past the source partition's size.
 */
export async function receiveBlocks(session: Session, devices: readonly BlockDevice[]): Promise<void> {
  let cur: { fd: number; size: number; at: number; hasher: Blake3Hasher; seq: number } | null = null;
  const zeros = Buffer.alloc(BLOCK);
  const fillZeros = (to: number) => {
    const c = cur!;
    while (c.at < to) {
      const n = Math.min(zeros.length, to - c.at);
      const z = n === zeros.length ? zeros : zeros.subarray(0, n);
      let done = 0;
      while (done < n) done += writeSync(c.fd, z, done, n - done, c.at + done);
      c.hasher.update(z);
      c.at += n;
    }
  };
  try {
    for await (const msg of session.messages()) {
      if (msg.type === 'raw') {
        if (cur) throw new FerryError('FERRY_PROTOCOL_VIOLATION', 'RAW before the previous device ended');
        const dev = devices[msg.body.index];
        if (!dev)
          throw new FerryError(
            'FERRY_PROTOCOL_VIOLATION',
            `RAW names block copy ${msg.body.index}, which the task does not have`,
          );
        if (msg.body.size > dev.sizeBytes)
          throw new FerryError(
            'FERRY_PROTOCOL_VIOLATION',
            `RAW of ${msg.body.size} bytes is larger than ${dev.path}`,
          );
        const fd = openSync(dev.path, 'r+');
        if (!fstatSync(fd).isBlockDevice()) {
          closeSync(fd);
          throw new FerryError('FERRY_TARGET_DISK_BUSY', `${dev.path} is not a block device`);
        }
        cur = { fd, size: msg.body.size, at: 0, hasher: new Blake3Hasher(), seq: msg.body.seq };
      } else if (msg.type === 'data') {
        if (!cur) throw new FerryError('FERRY_PROTOCOL_VIOLATION', 'DATA outside a RAW device');
        if (msg.offset < cur.at || msg.offset + msg.data.length > cur.size)
          throw new FerryError(
            'FERRY_PROTOCOL_VIOLATION',
            `DATA at ${msg.offset} outside the device or going back`,
          );
        fillZeros(msg.offset);
        let done = 0;
        while (done < msg.data.length)
          done += writeSync(cur.fd, msg.data, done, msg.data.length - done, msg.offset + done);
        cur.hasher.update(msg.data);
        msg.release?.();
        cur.at = msg.offset + msg.data.length;
      } else if (msg.type === 'file-end') {
        if (!cur || msg.body.seq !== cur.seq)
          throw new FerryError('FERRY_PROTOCOL_VIOLATION', 'FILE_END for another device');
        fillZeros(cur.size);
        fsyncSync(cur.fd);
        closeSync(cur.fd);
        const ok = cur.hasher.digest('hex') === msg.body.hash;
        cur = null;
        if (!ok)
          throw new FerryError(
            'FERRY_CHECKSUM_MISMATCH',
            'a partition copied block for block does not match its hash',
          );
      } else if (msg.type === 'commit') {
        if (cur) throw new FerryError('FERRY_PROTOCOL_VIOLATION', 'COMMIT inside a device');
        await session.send({ type: 'committed', body: { seq: msg.body.seq } });
        session.close();
        return;
      } else
        throw new FerryError('FERRY_PROTOCOL_VIOLATION', `unexpected ${msg.type} frame in a blocks pass`);
    }
    throw new FerryError('FERRY_CONNECTION_LOST', 'the source closed before the blocks pass committed');
  } catch (e) {
    if (cur) closeSync(cur.fd);
    const err = toFerryError(e, 'FERRY_TARGET_WRITE');
    session.fail(err);
    throw err;
  }
}
