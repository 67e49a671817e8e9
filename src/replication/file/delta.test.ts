import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { applyDelta, sumsOf } from '../../../test/support/delta.js';
import type { Message } from '../../protocol/index.js';
import { wholeFileHash } from './content-hash.js';
import { sendDelta } from './delta.js';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-delta-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

async function deltaOf(old: Buffer, now: Buffer, blockSize: number, withWeak = true) {
  const file = path.join(dir, 'f');
  fs.writeFileSync(file, now);
  const fd = fs.openSync(file, 'r');
  const frames: Message[] = [];
  try {
    const r = await sendDelta({ fd, size: now.length }, sumsOf(old, blockSize, withWeak), async (m) => {
      frames.push(m);
    });
    expect(r.hash).toBe(wholeFileHash(now));
    expect(applyDelta(old, frames, now.length).equals(now)).toBe(true);
    return { ...r, frames };
  } finally {
    fs.closeSync(fd);
  }
}

/** `old` with random insertions, deletions and overwrites, and a stretch moved. */
function edited(old: Buffer, seed: number): Buffer {
  let s = seed;
  const rnd = (n: number) => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s % n;
  };
  let b = Buffer.from(old);
  for (let k = 0; k < 6; k++) {
    const at = rnd(b.length);
    const n = 1 + rnd(3000);
    const op = rnd(3);
    if (op === 0) b = Buffer.concat([b.subarray(0, at), randomBytes(n), b.subarray(at)]);
    else if (op === 1) b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + n))]);
    else randomBytes(Math.min(n, b.length - at)).copy(b, at);
  }
  const cut = rnd(b.length);
  return Buffer.concat([b.subarray(cut), b.subarray(0, cut)]);
}

describe("sendDelta: a file as changes to the target's copy", () => {
  it('rebuilds the file exactly from any mix of inserted, removed, overwritten and moved bytes, sending little', async () => {
    const B = 4096;
    const old = randomBytes(3 << 20);
    for (const seed of [1, 2, 3, 4]) {
      const now = edited(old, seed);
      const r = await deltaOf(old, now, B);
      // six edits of at most 3000 bytes, each costing at most two blocks, plus the cut
      expect(r.sent).toBeLessThanOrEqual(16 * B + 6 * 3000);
      expect(r.copied).toBeGreaterThan(now.length - 16 * B - 6 * 3000);
    }
  });

  it('rebuilds exactly whatever the block size and wherever the edits fall (first and last bytes, block edges)', async () => {
    let seed = 7;
    const rnd = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    for (let round = 0; round < 24; round++) {
      const B = [4096, 8192, 65_536][round % 3]!;
      const old = randomBytes(B * (2 + rnd(40)) + rnd(B));
      let now = Buffer.from(old);
      for (let k = 0; k < 1 + rnd(4); k++) {
        // at a block edge, the very start or end, or anywhere
        const where = [0, now.length, Math.floor(rnd(now.length) / B) * B, rnd(now.length + 1)][rnd(4)]!;
        const n = 1 + rnd(2 * B);
        const op = rnd(3);
        if (op === 0) now = Buffer.concat([now.subarray(0, where), randomBytes(n), now.subarray(where)]);
        else if (op === 1)
          now = Buffer.concat([now.subarray(0, where), now.subarray(Math.min(now.length, where + n))]);
        else randomBytes(Math.min(n, now.length - where)).copy(now, where);
      }
      // with and without weak sums; deltaOf checks the hash and the rebuilt file
      await deltaOf(old, now, B, round % 4 !== 3);
    }
  });

  it('sends no data when nothing changed (one COPY in place), and finds the short last block', async () => {
    const old = randomBytes((1 << 20) + 1234);
    const same = await deltaOf(old, Buffer.from(old), 65_536);
    expect(same.sent).toBe(0);
    // one COPY in place, so that the target rebuilds the file as this side reads it
    expect(same.frames).toEqual([{ type: 'copy', body: { offset: 0, from: 0, length: old.length } }]);
    // the same short last block, after an insertion
    const now = Buffer.concat([Buffer.from('header!'), old]);
    const moved = await deltaOf(old, now, 65_536);
    expect(moved.sent).toBe(7);
    expect(moved.frames.filter((f) => f.type === 'copy')).toHaveLength(1);
  });

  it('without weak sums, finds blocks only in place (sent as nothing, no COPY), and still rebuilds the file', async () => {
    const B = 4096;
    const old = randomBytes(1 << 20);
    const now = Buffer.from(old);
    now.fill(9, 10_000, 10_100); // one block changed in place
    const inPlace = await deltaOf(old, now, B, false);
    expect(inPlace.sent).toBe(B);
    expect(inPlace.frames.every((f) => f.type === 'data')).toBe(true); // in place: filled by the target, no COPY
    const shifted = Buffer.concat([Buffer.from('x'), old]);
    const r = await deltaOf(old, shifted, B, false);
    expect(r.sent).toBe(shifted.length); // nothing is where it was
  });

  it('counts progress as it reads and sends, not at the end', async () => {
    const B = 65_536;
    const old = randomBytes(12 << 20);
    const now = Buffer.concat([old.subarray(0, 5 << 20), randomBytes(300_000), old.subarray(5 << 20)]);
    const file = path.join(dir, 'f');
    fs.writeFileSync(file, now);
    const fd = fs.openSync(file, 'r');
    const progress = { bytes: 0, bytesSent: 0 };
    const seen: number[] = [];
    try {
      await sendDelta(
        { fd, size: now.length },
        sumsOf(old, B, true),
        async () => {
          seen.push(progress.bytes);
        },
        { progress },
      );
    } finally {
      fs.closeSync(fd);
    }
    expect(progress.bytes).toBe(now.length);
    expect(progress.bytesSent).toBeGreaterThanOrEqual(300_000);
    expect(progress.bytesSent).toBeLessThanOrEqual(300_000 + 2 * B);
    // frames went out while the file was still being read (4 MiB at a time)
    expect(seen[0]).toBeGreaterThan(0);
    expect(seen[0]).toBeLessThan(now.length);
  });

  it('handles files of repeated blocks, empty files and old copies larger or smaller than the file', async () => {
    const B = 4096;
    const zeros = Buffer.alloc(64 * B);
    await deltaOf(zeros, Buffer.concat([Buffer.from('a'), zeros.subarray(0, 10 * B)]), B);
    await deltaOf(zeros, Buffer.alloc(0), B);
    await deltaOf(Buffer.alloc(0), randomBytes(3 * B + 5), B);
    const old = randomBytes(10 * B);
    await deltaOf(old, Buffer.concat([old, old, old.subarray(0, 100)]), B);
  });
});
