import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ferryFs } from '../../native/index.js';
import { BatchReader } from './batch-read.js';
import { ReadBuffers } from './read-buffers.js';
import { readFileRegions } from './read-file.js';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-read-buffers-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Whether two views share their memory (the same pooled buffer). */
const same = (a: Buffer, b: Buffer) => a.buffer === b.buffer && a.byteOffset === b.byteOffset;

describe('ReadBuffers', () => {
  it('hands a buffer out again only once it has been given back, once, within what it may keep', () => {
    const pool = new ReadBuffers(256 << 10);
    const a = pool.take(100_000);
    expect(a.buf.length).toBe(100_000);
    expect(ferryFs.alignedOffset(a.buf, 0)).toBe(0); // ready for direct reads
    const b = pool.take(120_000); // the same size class (128 KiB), a itself still in use
    expect(same(a.buf, b.buf)).toBe(false);
    a.release();
    a.release(); // twice: kept once, not handed to two users
    const c = pool.take(131_072);
    const d = pool.take(70_000);
    expect(same(c.buf, a.buf)).toBe(true);
    expect(same(d.buf, a.buf)).toBe(false);
    expect(pool.stats).toEqual({ reused: 1, allocated: 3 });
    // another class does not take it; more than keepBytes waiting are left to the collector
    b.release();
    c.release();
    d.release(); // 3 × 128 KiB > 256 KiB: this one is not kept
    expect(same(pool.take(1000).buf, a.buf)).toBe(false); // 64 KiB class: new
    const kept = [pool.take(128 << 10), pool.take(128 << 10), pool.take(128 << 10)];
    expect(kept.filter((k) => same(k.buf, b.buf) || same(k.buf, c.buf)).length).toBe(2);
    expect(kept.some((k) => same(k.buf, d.buf))).toBe(false);
    for (const k of kept) k.release();
    expect(pool.keptBytes).toBe(256 << 10);
    pool.trim(); // what a pass leaves behind is not kept between passes
    expect(pool.keptBytes).toBe(0);
    expect(kept.some((k) => same(k.buf, pool.take(128 << 10).buf))).toBe(false);
  });

  it('reads a batch of small files into one buffer, reused only after every file of it is released', async () => {
    const pool = new ReadBuffers(64 << 20);
    const files = [3000, 0, 70_000].map((n, i) => {
      const p = path.join(dir, `small-${i}`);
      fs.writeFileSync(p, Buffer.alloc(n, i + 1));
      return p;
    });
    const reader = new BatchReader({ direct: false, buffers: pool });
    const reads = files.map((p) => reader.read(p, fs.statSync(p).size));
    reader.flush();
    await reads[0]!.done;
    expect(reads.map((r) => r.result?.data.length)).toEqual([3000, 0, 70_000]);
    expect(reads[2]!.result!.data.equals(Buffer.alloc(70_000, 3))).toBe(true);
    const slab = reads[0]!.result!.data;
    reads[0]!.release();
    reads[0]!.release(); // counts once
    reads[1]!.release();
    const other = pool.take(slab.buffer.byteLength - 8192); // the slab's class, the slab still read
    expect(other.buf.buffer === slab.buffer).toBe(false);
    reads[2]!.release();
    expect(pool.take(other.buf.length).buf.buffer === slab.buffer).toBe(true);
  });

  it("gives a large file's chunks back once released, so reading it again reuses them", async () => {
    const pool = new ReadBuffers(64 << 20);
    const p = path.join(dir, 'large');
    fs.writeFileSync(p, Buffer.alloc(5 << 20, 7));
    const readAll = async (release: boolean) => {
      const { regions, done } = await readFileRegions(p, false, { direct: false, buffers: pool });
      let bytes = 0;
      for await (const r of regions) {
        bytes += r.data.length;
        if (release) r.release();
      }
      expect((await done()).size).toBe(bytes);
    };
    await readAll(false);
    const first = pool.stats.allocated;
    expect(first).toBeGreaterThanOrEqual(5);
    await readAll(true); // chunks released as they come: a handful for the whole file
    await readAll(true);
    expect(pool.stats.allocated - first).toBeLessThanOrEqual(5);
    expect(pool.stats.reused).toBeGreaterThanOrEqual(5);
  });

  it('gets back the chunks read ahead when the reader stops early', async () => {
    const pool = new ReadBuffers(64 << 20);
    const p = path.join(dir, 'stopped');
    fs.writeFileSync(p, Buffer.alloc(12 << 20, 9));
    const { regions } = await readFileRegions(p, false, { direct: false, buffers: pool });
    const first = await regions.next();
    if (first.done) throw new Error('expected a region');
    first.value.release();
    await regions.return(undefined); // e.g. the pass was stopped: the reads ahead are abandoned
    // the chunk sent and the three still being read ahead of it are back for reuse
    expect(pool.keptBytes).toBe(4 << 20);
  });
});
