import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BatchReader, type WholeFile } from './batch-read.js';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-batch-read-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** `count` files of `size` random bytes; their contents. */
function files(prefix: string, count: number, size: number): { paths: string[]; contents: Buffer[] } {
  const paths: string[] = [];
  const contents: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const p = path.join(dir, `${prefix}${i}`);
    const c = randomBytes(size);
    fs.writeFileSync(p, c);
    paths.push(p);
    contents.push(c);
  }
  return { paths, contents };
}

async function readBatch(reader: BatchReader, paths: string[], size: number): Promise<WholeFile[]> {
  const got = paths.map((p) => reader.read(p, size));
  reader.flush();
  return (await Promise.all(got)).map((w) => w!);
}

describe('BatchReader', () => {
  it('reuses a batch buffer only once every file of it has been released', async () => {
    const reader = new BatchReader({ direct: false });
    const a = files('a', 4, 100_000);
    const b = files('b', 4, 100_000);
    const c = files('c', 4, 100_000);
    const first = await readBatch(reader, a.paths, 100_000);
    // the first batch is still held: the second gets a buffer of its own
    const second = await readBatch(reader, b.paths, 100_000);
    expect(reader.stats).toEqual({ allocated: 2, reused: 0 });
    expect(first.map((w) => w.data.toString('hex'))).toEqual(a.contents.map((c) => c.toString('hex')));
    // released twice but one file still held: the buffer stays in use
    first[0]!.release();
    first[0]!.release();
    first[1]!.release();
    first[2]!.release();
    const third = await readBatch(reader, c.paths, 100_000);
    expect(reader.stats).toEqual({ allocated: 3, reused: 0 });
    expect(first[3]!.data.equals(a.contents[3]!)).toBe(true);
    first[3]!.release();
    for (const w of second) w.release();
    // now both are free: the next batches take them, and read their own bytes into them
    const again = await readBatch(reader, a.paths, 100_000);
    expect(reader.stats).toEqual({ allocated: 3, reused: 1 });
    expect(again.map((w) => w.data.toString('hex'))).toEqual(a.contents.map((c) => c.toString('hex')));
    expect(third.map((w) => w.data.toString('hex'))).toEqual(c.contents.map((c) => c.toString('hex')));
  });

  it('gives a batch of tiny files a buffer of its own, never pooled', async () => {
    const reader = new BatchReader({ direct: false });
    const tiny = files('t', 3, 10);
    const got = await readBatch(reader, tiny.paths, 10);
    expect(got.map((w) => w.data.toString('hex'))).toEqual(tiny.contents.map((c) => c.toString('hex')));
    for (const w of got) w.release();
    expect(reader.stats).toEqual({ allocated: 0, reused: 0 });
  });
});
