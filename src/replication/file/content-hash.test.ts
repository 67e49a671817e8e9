import os from 'node:os';
import { blake3 } from '@napi-rs/blake-hash';
import { afterEach, describe, expect, it } from 'vitest';
import { isFerryError } from '../../errors/index.js';
import {
  configureHashing,
  contentHash,
  hashingStats,
  hashingThreads,
  resolveHashThreads,
  stopHashingThread,
  wholeFileHash,
  wholeFileHashes,
} from './content-hash.js';

const MiB = 1024 * 1024;

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
  return b;
}

afterEach(() => {
  configureHashing(0);
});

describe('content hash', () => {
  it('hashes whole small files one after another, each on its own (the shared hasher starts afresh)', () => {
    // the published BLAKE3 of no input
    const empty = 'af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262';
    expect(wholeFileHash(Buffer.alloc(0))).toBe(empty);
    const files = [pattern(5, 1), pattern(64 * 1024, 2), Buffer.alloc(0), pattern(1025, 3).subarray(1)];
    for (const f of files) expect(wholeFileHash(f)).toBe(blake3(f).toString('hex'));
    expect(wholeFileHash(Buffer.alloc(0))).toBe(empty);
  });

  it('hashes a file and its first bytes in one pass, each as BLAKE3 of those bytes alone', () => {
    const grown = pattern(41_000, 4);
    for (const prefix of [0, 1, 1024, 40_000, 41_000])
      expect(wholeFileHashes(grown, prefix)).toEqual({
        hash: blake3(grown).toString('hex'),
        prefixHash: blake3(grown.subarray(0, prefix)).toString('hex'),
      });
    expect(wholeFileHash(pattern(5, 1))).toBe(blake3(pattern(5, 1)).toString('hex')); // starts afresh after
  });

  for (const threads of [0, 1] as const) {
    const where = threads ? 'in a worker thread' : 'on the event loop';
    it(`gives the BLAKE3 of everything fed, ${where}, whatever memory the chunks are in`, async () => {
      configureHashing(threads);
      expect(hashingThreads()).toBe(threads);
      const before = hashingStats().threadBytes;
      const parts: Buffer[] = [];
      const h = contentHash();
      // a chunk larger than a slot of the thread's ring, a view into the middle of a buffer,
      // an empty chunk, and a buffer reused once update() has taken it
      const big = pattern(3 * MiB + 5, 1);
      await h.update(big);
      parts.push(big);
      const view = pattern(2 * MiB, 2).subarray(1000, MiB + 17);
      await h.update(view);
      parts.push(Buffer.from(view));
      await h.update(Buffer.alloc(0));
      const reused = Buffer.allocUnsafe(64 * 1024);
      for (let i = 0; i < 20; i++) {
        pattern(reused.length, 10 + i).copy(reused);
        await h.update(reused);
        parts.push(Buffer.from(reused));
      }
      const want = blake3(Buffer.concat(parts)).toString('hex');
      expect(await h.digest()).toBe(want);
      if (threads) expect(hashingStats().threadBytes - before).toBe(Buffer.concat(parts).length);
      else expect(hashingStats().threadBytes).toBe(before);
    });

    it(`keeps files apart when their hashes are fed in turns, ${where}`, async () => {
      configureHashing(threads);
      const a = contentHash();
      const b = contentHash();
      const empty = contentHash();
      const pa: Buffer[] = [];
      const pb: Buffer[] = [];
      for (let i = 0; i < 8; i++) {
        const x = pattern(300_000 + i, i);
        const y = pattern(200_000 + i, 100 + i);
        await a.update(x);
        await b.update(y);
        pa.push(x);
        pb.push(y);
      }
      const [da, db, de] = await Promise.all([b.digest(), a.digest(), empty.digest()]);
      expect(db).toBe(blake3(Buffer.concat(pa)).toString('hex'));
      expect(da).toBe(blake3(Buffer.concat(pb)).toString('hex'));
      expect(de).toBe(blake3(Buffer.alloc(0)).toString('hex'));
      // a hash is digested once and fed only before that
      await expect(a.digest()).rejects.toThrow(/digested twice/);
      expect(() => a.update(Buffer.from('x'))).toThrow(/after its digest/);
      a.discard(); // harmless afterwards
    });
  }

  it('makes the caller wait when the hashing thread falls behind, and catches up', async () => {
    configureHashing(1);
    const h = contentHash();
    const parts: Buffer[] = [];
    let waitedAt = -1;
    let wait: Promise<void> | undefined;
    // fed without yielding: the thread cannot give slots back, so the ring fills up
    for (let i = 0; i < 48 && !wait; i++) {
      const c = Buffer.alloc(MiB, i);
      parts.push(c);
      wait = h.update(c);
      if (wait) waitedAt = i;
    }
    expect(waitedAt).toBe(32); // 32 slots of 1 MiB taken; the 33rd chunk waits uncopied
    await wait;
    expect(await h.digest()).toBe(blake3(Buffer.concat(parts)).toString('hex'));
  });

  it('hashes any amount in a thread without holding more memory than its ring', async () => {
    configureHashing(1);
    const chunk = pattern(MiB, 3);
    const h = contentHash();
    await h.update(chunk); // the thread and its ring now exist
    const before = process.memoryUsage().arrayBuffers;
    let most = before;
    for (let i = 1; i < 512; i++) {
      await h.update(chunk);
      if (i % 64 === 0) most = Math.max(most, process.memoryUsage().arrayBuffers);
    }
    await h.digest();
    expect(most - before).toBeLessThan(16 * MiB);
  });

  it('fails the digest (FERRY_INTERNAL) when the hashing thread stops under it', async () => {
    configureHashing(1);
    const h = contentHash();
    const zeros = Buffer.alloc(MiB);
    for (let i = 0; i < 64; i++) void h.update(zeros);
    const digest = h.digest();
    configureHashing(0); // terminates the thread with 64 MiB still queued before the digest
    const err = await digest.then(
      () => null,
      (e: unknown) => e,
    );
    expect(isFerryError(err) && err.code === 'FERRY_INTERNAL').toBe(true);
    // hashing goes on, on the event loop
    const again = contentHash();
    await again.update(Buffer.from('abc'));
    expect(await again.digest()).toBe(blake3(Buffer.from('abc')).toString('hex'));
  });

  it('starts a new thread for the next file when the thread dies under a hash', async () => {
    configureHashing(1);
    const doomed = contentHash();
    const early = contentHash(); // opened before the crash, fed after it
    const zeros = Buffer.alloc(MiB);
    for (let i = 0; i < 64; i++) void doomed.update(zeros);
    const digest = doomed.digest();
    await stopHashingThread();
    const err = await digest.then(
      () => null,
      (e: unknown) => e,
    );
    expect(isFerryError(err) && err.code === 'FERRY_INTERNAL').toBe(true);
    expect(hashingThreads()).toBe(1);
    // a file begun before the crash but never fed, and a new one: both hashed in a new thread
    const before = hashingStats().threadBytes;
    const fresh = contentHash();
    const data = pattern(3 * MiB, 9);
    await fresh.update(data);
    await early.update(data);
    expect(await fresh.digest()).toBe(blake3(data).toString('hex'));
    expect(await early.digest()).toBe(blake3(data).toString('hex'));
    expect(hashingStats().threadBytes - before).toBe(2 * data.length);
    // the dead thread's hash cannot be fed any more
    expect(() => doomed.update(zeros)).toThrow(/after its digest/);
  });

  it('accepts auto, 0 and 1 only, as numbers or as given on the command line', () => {
    expect(resolveHashThreads('auto')).toBe(os.availableParallelism() >= 4 ? 1 : 0);
    expect(resolveHashThreads(0)).toBe(0);
    expect(resolveHashThreads(1)).toBe(1);
    expect(resolveHashThreads('0')).toBe(0);
    expect(resolveHashThreads('1')).toBe(1);
    for (const bad of [2, -1, '2', 'many', '', ' 1'])
      expect(() => resolveHashThreads(bad), String(bad)).toThrow(/--hash-threads must be auto, 0 or 1/);
  });
});
