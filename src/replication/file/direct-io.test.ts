/**
 * Direct I/O (O_DIRECT) for large files: the native calls, the agent's reader and the
 * target's writer, on a real ext4 file system (a loop device) and on ramfs, which refuses
 * direct I/O. Whether bytes went past the page cache is read from the cache itself
 * (fincore: bytes of the file resident in memory).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Blake3Hasher } from '@napi-rs/blake-hash';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyDelta, sumsOf } from '../../../test/support/delta.js';
import { LoopDisks, sh } from '../../../test/support/disks.js';
import {
  allocAligned,
  DIRECT_ALIGN,
  DIRECT_MAX_BUFFERS,
  ferryFs,
  parseDirectIo,
  readFilesLayout,
  reopenDirect,
} from '../../native/index.js';
import type { Message } from '../../protocol/index.js';
import { BatchReader } from './batch-read.js';
import { sendDelta } from './delta.js';
import { readFileRegions } from './read-file.js';
import { TreeWriter } from './tree-writer.js';

const MiB = 1 << 20;
let dir: string;
let ext4: string;
let ramfs: string;
const disks = () => new LoopDisks(dir);
let loop: LoopDisks;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-direct-'));
  loop = disks();
  ext4 = path.join(dir, 'ext4');
  ramfs = path.join(dir, 'ramfs');
  fs.mkdirSync(ext4);
  fs.mkdirSync(ramfs);
  try {
    const dev = loop.create('fs', 160);
    sh('mkfs.ext4', ['-q', '-F', dev]);
    sh('mount', [dev, ext4]);
    sh('mount', ['-t', 'ramfs', 'ramfs', ramfs]);
  } catch (e) {
    loop.cleanup();
    throw e;
  }
});
afterAll(() => {
  loop.cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Bytes of `file` in the page cache. */
function resident(file: string): number {
  return Number(
    execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', file], {
      encoding: 'utf8',
    }).trim(),
  );
}

const blake3 = (b: Buffer) => {
  const h = new Blake3Hasher();
  h.update(b);
  return h.digest('hex');
};

describe('native writeDirect / readDirect', () => {
  it('write the aligned part of an unaligned buffer past the cache, and read it back exactly', async () => {
    const file = path.join(ext4, 'native.bin');
    const fd = fs.openSync(file, 'w+');
    const direct = reopenDirect(fd, 'write');
    expect(direct).toBeDefined();
    const content = randomBytes(3 * MiB + 100);
    const src = Buffer.concat([Buffer.alloc(3), content]).subarray(3); // not aligned in memory
    const n = await ferryFs.writeDirect(direct!, src, 0);
    expect(n).toBe(3 * MiB); // the aligned prefix; the last 100 bytes are the caller's
    fs.writeSync(fd, src, n, src.length - n, n);
    fs.closeSync(direct!);
    fs.closeSync(fd);
    expect(resident(file)).toBeLessThanOrEqual(DIRECT_ALIGN); // only the buffered tail
    expect(blake3(fs.readFileSync(file))).toBe(blake3(content));
    sh('sh', ['-c', `echo 1 > /proc/sys/vm/drop_caches`]);

    const rfd = fs.openSync(file, 'r');
    const rdirect = reopenDirect(rfd, 'read')!;
    const back = Buffer.alloc(content.length);
    let at = 0;
    for (;;) {
      const piece = back.subarray(at, Math.min(at + MiB, back.length));
      if (!piece.length) break;
      const got = await ferryFs.readDirect(rdirect, piece, at);
      expect(got).toBe(piece.length);
      at += got;
    }
    // at the end of the file a read is short, and a read past it is empty
    expect(await ferryFs.readDirect(rdirect, Buffer.alloc(MiB), 3 * MiB)).toBe(100);
    expect(await ferryFs.readDirect(rdirect, Buffer.alloc(MiB), 4 * MiB)).toBe(0);
    expect(back.equals(content)).toBe(true);
    expect(resident(file)).toBe(0);
    fs.closeSync(rdirect);
    fs.closeSync(rfd);
  });

  it('write an aligned buffer from itself (alignedOffset finds where it starts)', async () => {
    const file = path.join(ext4, 'aligned.bin');
    const fd = fs.openSync(file, 'w+');
    const direct = reopenDirect(fd, 'write')!;
    const room = Buffer.allocUnsafeSlow(2 * MiB + DIRECT_ALIGN);
    const k = ferryFs.alignedOffset(room, 0);
    expect(k).toBeLessThan(DIRECT_ALIGN);
    expect(ferryFs.alignedOffset(room, k)).toBe(0);
    expect(ferryFs.alignedOffset(room.subarray(k + 1), 0)).toBe(DIRECT_ALIGN - 1);
    const src = room.subarray(k, k + 2 * MiB);
    randomBytes(2 * MiB).copy(src);
    expect(await ferryFs.writeDirect(direct, src, 4096)).toBe(2 * MiB);
    fs.closeSync(direct);
    fs.closeSync(fd);
    const back = fs.readFileSync(file);
    expect(back.length).toBe(4096 + 2 * MiB);
    expect(back.subarray(4096).equals(src)).toBe(true);
    expect(back.subarray(0, 4096).every((b) => b === 0)).toBe(true); // never written: a hole
  });

  it('write an array of buffers as one: in one request when aligned, buffer by buffer when not', async () => {
    const file = path.join(ext4, 'vector.bin');
    const fd = fs.openSync(file, 'w+');
    const direct = reopenDirect(fd, 'write')!;
    const alignedPiece = (n: number) => {
      const room = Buffer.allocUnsafeSlow(n + DIRECT_ALIGN);
      const k = ferryFs.alignedOffset(room, 0);
      const piece = room.subarray(k, k + n);
      randomBytes(n).copy(piece);
      return piece;
    };
    // aligned, whole blocks, then a last one with a tail: the aligned prefix in one pwritev
    const pieces = [alignedPiece(MiB), alignedPiece(MiB), alignedPiece(MiB + 4096 + 100)];
    const all = Buffer.concat(pieces);
    const n = await ferryFs.writeDirect(direct, pieces, 0);
    expect(n).toBe(3 * MiB + 4096);
    fs.writeSync(fd, all, n, all.length - n, n);
    expect(resident(file)).toBeLessThanOrEqual(DIRECT_ALIGN);
    expect(fs.readFileSync(file).equals(all)).toBe(true);
    // one buffer at an odd address in the middle: written through the aligned buffer, in order
    const odd = Buffer.concat([Buffer.alloc(1), randomBytes(MiB)]).subarray(1);
    const mixed = [alignedPiece(MiB), odd, alignedPiece(MiB)];
    expect(await ferryFs.writeDirect(direct, mixed, 8 * MiB)).toBe(3 * MiB);
    const back = Buffer.alloc(3 * MiB);
    fs.readSync(fd, back, 0, back.length, 8 * MiB);
    expect(back.equals(Buffer.concat(mixed))).toBe(true);
    // what is not an array of 1 to 64 buffers is refused before any I/O
    expect(() => ferryFs.writeDirect(direct, [], 0)).toThrow(/array of 1 to 64/);
    // the writer's limit is the addon's: DIRECT_MAX_BUFFERS go, one more is refused
    const blocks = Array.from({ length: DIRECT_MAX_BUFFERS }, () => alignedPiece(4096));
    expect(await ferryFs.writeDirect(direct, blocks, 16 * MiB)).toBe(DIRECT_MAX_BUFFERS * 4096);
    expect(() => ferryFs.writeDirect(direct, [...blocks, alignedPiece(4096)], 0)).toThrow(/array of 1 to 64/);
    expect(() => ferryFs.writeDirect(direct, [Buffer.alloc(4096), 'x' as never], 0)).toThrow(
      /array of 1 to 64/,
    );
    fs.closeSync(direct);
    fs.closeSync(fd);
  });

  it('refuse an unaligned position before any I/O, and report a failed write as -errno', async () => {
    const fd = fs.openSync(path.join(ext4, 'args.bin'), 'w');
    const direct = reopenDirect(fd, 'write')!;
    expect(() => ferryFs.writeDirect(direct, Buffer.alloc(8192), 100)).toThrow(/multiple of 4096/);
    expect(() => ferryFs.readDirect(direct, Buffer.alloc(8192), -4096)).toThrow(/multiple of 4096/);
    // reading through a write-only descriptor fails in the kernel: EBADF comes back as -errno
    expect(await ferryFs.readDirect(direct, Buffer.alloc(8192), 0)).toBe(-os.constants.errno.EBADF);
    fs.closeSync(direct);
    fs.closeSync(fd);
  });

  it('are not offered on a file system without direct I/O (ramfs)', () => {
    const fd = fs.openSync(path.join(ramfs, 'f'), 'w');
    expect(reopenDirect(fd, 'write')).toBeUndefined();
    expect(reopenDirect(fd, 'read')).toBeUndefined();
    fs.closeSync(fd);
  });

  it('--direct-io takes on or off only', () => {
    expect(parseDirectIo(undefined)).toBe(true);
    expect(parseDirectIo('on')).toBe(true);
    expect(parseDirectIo('off')).toBe(false);
    expect(() => parseDirectIo('yes')).toThrow(expect.objectContaining({ code: 'FERRY_CONFIG' }));
  });
});

describe('whole small files are read past the page cache in batches', () => {
  const sizes = [0, 1, 4095, 4096, 4097, 70_000, 1 << 20];
  const make = (root: string) => {
    fs.mkdirSync(root, { recursive: true });
    return sizes.map((n, i) => {
      const file = path.join(root, `f${i}`);
      fs.writeFileSync(file, randomBytes(n));
      return file;
    });
  };

  it('reads each file exactly, cut at its cap, and leaves none of it cached', async () => {
    const files = make(path.join(ext4, 'small'));
    sh('sh', ['-c', 'sync && echo 1 > /proc/sys/vm/drop_caches']);
    const caps = [...sizes];
    caps[5] = 5000; // a file that grew since the scan is read up to its scanned size
    const { offsets: at, bytes } = readFilesLayout(caps, true);
    const slab = allocAligned(bytes).fill(0xaa);
    const got = await ferryFs.readFiles(files, caps, slab, false, true);
    expect(Array.from(got.sizes)).toEqual(caps);
    files.forEach((f, i) => {
      expect(ferryFs.alignedOffset(slab.subarray(at[i]!), 0)).toBe(0); // each slot at an aligned address
      expect(slab.subarray(at[i]!, at[i]! + caps[i]!).equals(fs.readFileSync(f).subarray(0, caps[i]!))).toBe(
        true,
      );
    });
    // read in place, in whole blocks: the rest of the grown file's last block is in its slot
    // too (through the thread's aligned buffer it would not be: the slot would keep 0xaa)
    const grown = fs.readFileSync(files[5]!);
    expect(slab.subarray(at[5]! + 5000, at[5]! + 8192).equals(grown.subarray(5000, 8192))).toBe(true);
    sh('sh', ['-c', 'sync && echo 1 > /proc/sys/vm/drop_caches']);
    const reader = new BatchReader(); // direct by default
    const whole = files.map((f, i) => reader.read(f, sizes[i]!));
    expect(whole.some((r) => r.ready)).toBe(false);
    reader.flush();
    await Promise.all(whole.map((r) => r.done));
    expect(new Set(whole.map((r) => r.done)).size).toBe(1); // one batch, one promise
    for (const [i, f] of files.entries()) {
      expect(whole[i]!.ready).toBe(true);
      expect(whole[i]!.result!.data.equals(fs.readFileSync(f))).toBe(true);
    }
    // fs.readFileSync above cached them: drop, read through the batch again, nothing cached
    sh('sh', ['-c', 'sync && echo 1 > /proc/sys/vm/drop_caches']);
    const again = new BatchReader();
    const p = files.map((f, i) => again.read(f, sizes[i]!));
    again.flush();
    await Promise.all(p.map((r) => r.done));
    for (const f of files) expect(resident(f)).toBe(0);
    const buffered = new BatchReader({ direct: false });
    const q = files.map((f, i) => buffered.read(f, sizes[i]!));
    buffered.flush();
    await Promise.all(q.map((r) => r.done));
    expect(resident(files[6]!)).toBe(1 << 20);
  });

  it('reads them buffered where the file system refuses direct I/O (ramfs)', async () => {
    const files = make(path.join(ramfs, 'small'));
    const { offsets: at, bytes } = readFilesLayout(sizes, true);
    const slab = allocAligned(bytes);
    const got = await ferryFs.readFiles(files, sizes, slab, false, true);
    expect(Array.from(got.sizes)).toEqual(sizes);
    // direct reads need an aligned slab: one that is not is refused before any I/O
    const off = Buffer.allocUnsafeSlow(bytes + DIRECT_ALIGN + 1);
    const unaligned = off.subarray(ferryFs.alignedOffset(off, 0) + 1);
    expect(() => ferryFs.readFiles(files, sizes, unaligned, false, true)).toThrow(/aligned/);
    for (const [i, f] of files.entries())
      expect(slab.subarray(at[i]!, at[i]! + sizes[i]!).equals(fs.readFileSync(f))).toBe(true);
  });
});

async function readAll(file: string, direct: boolean): Promise<{ data: Buffer; hash: string }> {
  const { regions, done } = await readFileRegions(file, false, { direct });
  const parts: Buffer[] = [];
  for await (const r of regions) parts.push(Buffer.from(r.data));
  return { data: Buffer.concat(parts), hash: (await done()).hash };
}

describe('the source reads large files past its page cache', () => {
  it('reads every byte and hashes it, leaving nothing cached; buffered with --direct-io off', async () => {
    const file = path.join(ext4, 'source.bin');
    const content = randomBytes(12 * MiB + 4097);
    fs.writeFileSync(file, content);
    sh('sh', ['-c', 'sync && echo 1 > /proc/sys/vm/drop_caches']);
    const d = await readAll(file, true);
    expect(d.data.equals(content)).toBe(true);
    expect(resident(file)).toBe(0);
    const b = await readAll(file, false);
    expect(b.hash).toBe(d.hash);
    expect(resident(file)).toBeGreaterThanOrEqual(12 * MiB);
  });

  it('reads a changed large file past the cache too (sync by blocks), from its start or from a resumed offset between two blocks', async () => {
    const file = path.join(ext4, 'delta.bin');
    const old = randomBytes(10 * MiB);
    const now = Buffer.concat([old.subarray(0, 3 * MiB), randomBytes(5000), old.subarray(3 * MiB)]);
    fs.writeFileSync(file, now);
    for (const from of [0, 1_000_003]) {
      sh('sh', ['-c', 'sync && echo 1 > /proc/sys/vm/drop_caches']);
      const fd = fs.openSync(file, 'r');
      const frames: Message[] = [];
      try {
        const r = await sendDelta(
          { fd, size: now.length },
          sumsOf(old, 64 * 1024),
          async (m) => {
            frames.push(m);
          },
          { direct: true, from },
        );
        expect(r.hash).toBe(blake3(now));
        expect(r.sent).toBeLessThanOrEqual(5000 + 2 * 64 * 1024);
      } finally {
        fs.closeSync(fd);
      }
      expect(applyDelta(old, frames, now.length, now.subarray(0, from)).equals(now)).toBe(true);
      // only the few KiB up to the first block boundary after a resumed offset went through the cache
      expect(resident(file)).toBeLessThanOrEqual(from ? 4096 : 0);
    }
  });

  it('reads a file on ramfs (no direct I/O) the buffered way', async () => {
    const file = path.join(ramfs, 'source.bin');
    const content = randomBytes(9 * MiB + 1);
    fs.writeFileSync(file, content);
    const d = await readAll(file, true);
    expect(d.data.equals(content)).toBe(true);
  });
});

const entry = (seq: number, p: string, size: number) => ({
  seq,
  path: p,
  kind: 'file' as const,
  size,
  mode: 0o640,
  uid: 0,
  gid: 0,
  mtimeNs: '1000000000000000000',
});
const log = { warn: () => {}, error: () => {} };

async function writeLarge(
  root: string,
  name: string,
  content: Buffer,
  directIo: boolean,
): Promise<TreeWriter> {
  const w = await TreeWriter.open(root, log, { directIo });
  await w.entry(entry(1, name, content.length));
  for (let at = 0; at < content.length; at += MiB) {
    // each chunk a copy at an odd address, as frames arrive: the writer must not rely on alignment
    const chunk = Buffer.concat([Buffer.alloc(5), content.subarray(at, at + MiB)]).subarray(5);
    await w.data(at, chunk);
  }
  await w.fileEnd(blake3(content));
  await w.commit();
  return w;
}

describe('the target writes large files past its page cache', () => {
  it('writes every byte, the last partial block buffered, and with --direct-io off through the cache', async () => {
    const root = path.join(ext4, 'root');
    fs.mkdirSync(root, { recursive: true });
    const content = randomBytes(10 * MiB + 777);
    await writeLarge(root, 'direct.bin', content, true);
    const got = path.join(root, 'direct.bin');
    expect(resident(got)).toBeLessThanOrEqual(DIRECT_ALIGN);
    expect(fs.readFileSync(got).equals(content)).toBe(true);
    expect(fs.statSync(got).mode & 0o7777).toBe(0o640);

    await writeLarge(root, 'buffered.bin', content, false);
    expect(resident(path.join(root, 'buffered.bin'))).toBeGreaterThanOrEqual(10 * MiB);
  });

  it('rebuilds a changed large file from its previous copy past the cache too, all but its first MiB and last block', async () => {
    const root = path.join(ext4, 'rebuilt');
    fs.mkdirSync(root, { recursive: true });
    const old = randomBytes(40 * MiB + 777);
    await writeLarge(root, 'db.bin', old, true);
    // 5000 bytes inserted at the start: every byte of the old copy moves to an unaligned offset
    const now = Buffer.concat([randomBytes(5000), old]);
    const w = await TreeWriter.open(root, log, { directIo: true });
    const sums = await w.entry({ ...entry(2, 'db.bin', now.length), deltaBlockSize: 64 * 1024 });
    expect(sums!.size).toBe(old.length);
    await w.data(0, now.subarray(0, 5000));
    await w.copy({ offset: 5000, from: 0, length: old.length });
    await w.fileEnd(blake3(now));
    await w.commit();
    const got = path.join(root, 'db.bin');
    expect(resident(got)).toBeLessThanOrEqual(MiB + 2 * DIRECT_ALIGN);
    expect(fs.readFileSync(got).equals(now)).toBe(true);
    // the copied MiBs were written together, not one request each
    expect(w.largeWrites.chunks).toBeGreaterThanOrEqual(41);
    expect(w.largeWrites.requests).toBeLessThan(w.largeWrites.chunks);
    // read into buffers used again once written: the write-behind's worth of them, not 41
    const { allocated, reused } = w.rebuildBuffers.stats;
    expect(allocated + reused).toBe(41);
    expect(allocated).toBeLessThanOrEqual(16);
  });

  it('writes the chunks that arrive while a write is in flight together, in one request', async () => {
    const root = path.join(ext4, 'together');
    fs.mkdirSync(root, { recursive: true });
    const content = randomBytes(24 * MiB);
    const w = await writeLarge(root, 'together.bin', content, true);
    expect(fs.readFileSync(path.join(root, 'together.bin')).equals(content)).toBe(true);
    expect(w.largeWrites.chunks).toBe(24); // every chunk once
    expect(w.largeWrites.requests).toBeLessThan(24);
    expect(w.largeWrites.mostChunks).toBeGreaterThan(1);
    expect(w.largeWrites.mostChunks).toBeLessThanOrEqual(4); // 4 MiB per request at most
  });

  it('reports a full disk on a direct write as ENOSPC with the file, as a buffered one', async () => {
    const small = path.join(dir, 'full');
    fs.mkdirSync(small);
    const dev = loop.create('full', 24);
    sh('mkfs.ext4', ['-q', '-F', dev]);
    sh('mount', [dev, small]);
    const content = randomBytes(40 * MiB);
    for (const directIo of [true, false]) {
      const w = await TreeWriter.open(small, log, { directIo });
      const attempt = (async () => {
        await w.entry(entry(1, `big-${directIo}.bin`, content.length));
        for (let at = 0; at < content.length; at += MiB) await w.data(at, content.subarray(at, at + MiB));
        await w.fileEnd(blake3(content));
      })();
      await expect(attempt).rejects.toMatchObject({ code: 'ENOSPC' });
      await w.abort();
      expect(fs.readdirSync(small).filter((n) => n !== 'lost+found')).toEqual([]); // nothing left behind
    }
  });

  it('writes through the cache on a file system without direct I/O (ramfs)', async () => {
    const root = path.join(ramfs, 'root');
    fs.mkdirSync(root, { recursive: true });
    const content = randomBytes(9 * MiB + 3);
    await writeLarge(root, 'big.bin', content, true);
    expect(fs.readFileSync(path.join(root, 'big.bin')).equals(content)).toBe(true);
  });
});
