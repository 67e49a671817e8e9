import { expect } from 'vitest';
import { ferryFs } from '../../src/native/index.js';
import type { Message } from '../../src/protocol/index.js';
import { BLOCK_SUM_BYTES, blockSum } from '../../src/replication/file/block-sum.js';
import { type TheirSums, WEAK_SUM_BYTES } from '../../src/replication/file/delta.js';

/** The SUMS a target holding `old` answers (as TreeWriter does), with or without weak sums. */
export function sumsOf(old: Buffer, blockSize: number, withWeak = true): TheirSums {
  const blocks = Math.ceil(old.length / blockSize);
  const strong = Buffer.alloc(blocks * BLOCK_SUM_BYTES);
  const weak = Buffer.alloc(withWeak ? blocks * WEAK_SUM_BYTES : 0);
  for (let j = 0; j < blocks; j++) {
    const block = old.subarray(j * blockSize, (j + 1) * blockSize);
    blockSum(block).copy(strong, j * BLOCK_SUM_BYTES);
    if (withWeak) weak.writeUInt32BE(ferryFs.weakSum(block), j * WEAK_SUM_BYTES);
  }
  return { blockSize, size: old.length, strong, weak };
}

/**
 * What the target builds from its old copy and the frames (TreeWriter's rules: file order,
 * gaps from the same offset), after `prefix` (a kept partial file it continues).
 */
export function applyDelta(old: Buffer, frames: Message[], size: number, prefix = Buffer.alloc(0)): Buffer {
  const out = Buffer.alloc(size);
  prefix.copy(out);
  let at = prefix.length;
  const fill = (to: number) => {
    const end = Math.min(to, old.length);
    if (end > at) old.copy(out, at, at, end);
    at = Math.max(at, end);
  };
  for (const m of frames) {
    if (m.type === 'data') {
      fill(m.offset);
      expect(m.offset).toBe(at);
      m.data.copy(out, m.offset);
      at = m.offset + m.data.length;
    } else if (m.type === 'copy') {
      fill(m.body.offset);
      expect(m.body.offset).toBe(at);
      expect(m.body.from + m.body.length).toBeLessThanOrEqual(old.length);
      old.copy(out, at, m.body.from, m.body.from + m.body.length);
      at += m.body.length;
    } else throw new Error(`unexpected ${m.type}`);
  }
  fill(size);
  return out;
}
