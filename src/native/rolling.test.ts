import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ferryFs } from './index.js';

/** The weak sum as docs/protocol.md defines it, computed independently of the addon. */
function referenceSum(buf: Buffer): number {
  const mask = (1n << 64n) - 1n;
  let s = 0x66657272792d726fn;
  const table: number[] = [];
  for (let i = 0; i < 256; i++) {
    s = (s + 0x9e3779b97f4a7c15n) & mask;
    let z = s;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & mask;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & mask;
    table.push(Number(((z ^ (z >> 31n)) >> 16n) & 0xffffffffn));
  }
  let h = 0;
  for (const b of buf) h = (Math.imul(h, 0x01000193) + table[b]!) >>> 0;
  return h;
}

/** The set of sums rollFind searches for, as WeakSums in replication/file/delta.ts builds it. */
function setOf(sums: number[], bitCount = 1 << 16): { bits: Buffer; sorted: Buffer } {
  const values = Uint32Array.from(new Set(sums)).sort();
  const bits = Buffer.alloc(bitCount / 8);
  const shift = 32 - Math.log2(bitCount);
  for (const w of values) bits[(w >>> shift) >>> 3]! |= 1 << ((w >>> shift) & 7);
  return { bits, sorted: Buffer.from(values.buffer, values.byteOffset, values.byteLength) };
}

describe('rolling weak sums (native/rolling.c)', () => {
  it('computes the documented sum', () => {
    for (const n of [0, 1, 7, 4096, 65_537]) {
      const b = randomBytes(n);
      expect(ferryFs.weakSum(b)).toBe(referenceSum(b));
    }
    expect(ferryFs.weakSum(Buffer.alloc(4096))).not.toBe(ferryFs.weakSum(Buffer.alloc(4097)));
  });

  it('finds the first window whose sum is in the set, at any offset, rolling one byte at a time', () => {
    const B = 4096;
    const buf = randomBytes(200_000);
    for (const at of [0, 1, 12_345, 200_000 - B]) {
      const { bits, sorted } = setOf([ferryFs.weakSum(buf.subarray(at, at + B)), 12, 0xffffffff]);
      expect(ferryFs.rollFind(buf, 0, buf.length, B, bits, sorted)).toBe(at);
      // a start past it, or an end that cuts the window short, does not find it
      if (at > 0) expect(ferryFs.rollFind(buf, at + 1, buf.length, B, bits, sorted)).toBe(-1);
      expect(ferryFs.rollFind(buf, 0, at + B - 1, B, bits, sorted)).toBe(-1);
      expect(ferryFs.rollFind(buf, at, at + B, B, bits, sorted)).toBe(at);
    }
    // the earliest of several
    const { bits, sorted } = setOf([
      ferryFs.weakSum(buf.subarray(90_000, 90_000 + B)),
      ferryFs.weakSum(buf.subarray(50_000, 50_000 + B)),
    ]);
    expect(ferryFs.rollFind(buf, 0, buf.length, B, bits, sorted)).toBe(50_000);
    expect(ferryFs.rollFind(buf, 50_001, buf.length, B, bits, sorted)).toBe(90_000);
    // the search rolls over its two halves at once: the first half's match wins over the
    // second's, either half's is found alone, and so is the very last window
    const ends = setOf([
      ferryFs.weakSum(buf.subarray(10, 10 + B)),
      ferryFs.weakSum(buf.subarray(150_000, 150_000 + B)),
      ferryFs.weakSum(buf.subarray(200_000 - B)),
    ]);
    expect(ferryFs.rollFind(buf, 0, buf.length, B, ends.bits, ends.sorted)).toBe(10);
    expect(ferryFs.rollFind(buf, 11, buf.length, B, ends.bits, ends.sorted)).toBe(150_000);
    expect(ferryFs.rollFind(buf, 150_001, buf.length, B, ends.bits, ends.sorted)).toBe(200_000 - B);
    expect(ferryFs.rollFind(buf, 200_000 - B - 1, buf.length, B, ends.bits, ends.sorted)).toBe(200_000 - B);
    for (const [s0, e0] of [
      [0, 0],
      [5, 5 + B],
      [9, 10 + B],
      [10, 10 + B],
    ] as const)
      expect(ferryFs.rollFind(buf, s0, e0, B, ends.bits, ends.sorted)).toBe(s0 === 10 || s0 === 9 ? 10 : -1);
    // a bit set for a sum that is not in the set is no match
    const decoy = setOf([ferryFs.weakSum(buf.subarray(7, 7 + B)) ^ 1], 64);
    expect(ferryFs.rollFind(buf, 0, buf.length, B, decoy.bits.fill(0xff), decoy.sorted)).toBe(-1);
  });

  it('sums every block in the thread pool as weakSum does, the last one short', async () => {
    const buf = randomBytes(10 * 4096 + 123);
    const out = Buffer.alloc(11 * 4);
    expect(await ferryFs.weakSums(buf, 4096, out)).toBe(11);
    for (let k = 0; k < 11; k++)
      expect(out.readUInt32BE(4 * k)).toBe(ferryFs.weakSum(buf.subarray(k * 4096, (k + 1) * 4096)));
    expect(await ferryFs.weakSums(Buffer.alloc(0), 4096, Buffer.alloc(0))).toBe(0);
    expect(() => ferryFs.weakSums(buf, 4096, Buffer.alloc(40))).toThrow(TypeError); // room for 10, not 11
    expect(() => ferryFs.weakSums(buf, 0, out)).toThrow(TypeError);
  });

  it('refuses arguments it cannot use', () => {
    const buf = randomBytes(100);
    const { bits, sorted } = setOf([1]);
    expect(() => ferryFs.rollFind(buf, 0, 101, 10, bits, sorted)).toThrow(TypeError);
    expect(() => ferryFs.rollFind(buf, 50, 40, 10, bits, sorted)).toThrow(TypeError);
    expect(() => ferryFs.rollFind(buf, 0, 100, 0, bits, sorted)).toThrow(TypeError);
    expect(() => ferryFs.rollFind(buf, 0, 100, 10, Buffer.alloc(12), sorted)).toThrow(TypeError);
    expect(() => ferryFs.rollFind(buf, 0, 100, 10, bits, Buffer.alloc(6))).toThrow(TypeError);
    expect(ferryFs.rollFind(buf, 0, 100, 200, bits, sorted)).toBe(-1); // no whole window
  });
});
