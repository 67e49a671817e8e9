/**
 * Deterministic benchmark data sets (a seed, no randomness from the system): random
 * bytes come from a seeded pool, compressible bytes from generated log/config text.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export const DATASETS = ['small', 'large', 'mixed', 'million'] as const;
export type Dataset = (typeof DATASETS)[number];

function mulberry32(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const POOL_BYTES = 64 * 1024 * 1024;
let pool: Buffer | null = null;
function randomPool(): Buffer {
  if (pool) return pool;
  const words = new Uint32Array(POOL_BYTES / 4);
  let x = 0x9e3779b9;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  pool = Buffer.from(words.buffer);
  return pool;
}

function randomBytes(rng: () => number, n: number): Buffer {
  const p = randomPool();
  if (n <= p.length) {
    const off = Math.floor(rng() * (p.length - n));
    return p.subarray(off, off + n);
  }
  const out = Buffer.allocUnsafe(n);
  for (let o = 0; o < n; o += p.length) p.copy(out, o, 0, Math.min(p.length, n - o));
  return out;
}

const WORDS =
  'kernel daemon request service cache error warning info connection user session worker queue disk'.split(
    ' ',
  );
function textBytes(rng: () => number, n: number): Buffer {
  const parts: string[] = [];
  let len = 0;
  let line = 0;
  while (len < n) {
    const s = `2026-11-${String(1 + (line % 28)).padStart(2, '0')}T10:${String(line % 60).padStart(2, '0')}:00 host ${WORDS[Math.floor(rng() * WORDS.length)]} id=${Math.floor(rng() * 1e6)} ${WORDS[line % WORDS.length]} ok\n`;
    parts.push(s);
    len += s.length;
    line++;
  }
  return Buffer.from(parts.join('')).subarray(0, n);
}

function content(rng: () => number, n: number, compressible: boolean): Buffer {
  return compressible ? textBytes(rng, n) : randomBytes(rng, n);
}

export interface Scale {
  smallFiles: number;
  largeFileBytes: number;
  millionEntries: number;
  mixedScale: number;
}

export const FULL: Scale = {
  smallFiles: 100_000,
  largeFileBytes: 1024 ** 3,
  millionEntries: 1_000_000,
  mixedScale: 1,
};
export const QUICK: Scale = {
  smallFiles: 10_000,
  largeFileBytes: 128 * 1024 ** 2,
  millionEntries: 50_000,
  mixedScale: 0.125,
};

function smallTree(root: string, count: number, seed: number, sizes: () => number): string[] {
  const rng = mulberry32(seed);
  const files: string[] = [];
  for (let i = 0; i < count; i++) {
    const dir = path.join(
      root,
      `d${Math.floor(i / 10_000)}`,
      `d${Math.floor(i / 500) % 20}`,
      `d${Math.floor(i / 100) % 5}`,
    );
    if (i % 100 === 0) fs.mkdirSync(dir, { recursive: true });
    const f = path.join(dir, `f${i}.${i % 3 === 0 ? 'so' : 'txt'}`);
    fs.writeFileSync(f, content(rng, sizes(), i % 2 === 0));
    files.push(f);
  }
  return files;
}

/** Generates a data set under `root`; returns the paths of the regular files made. */
export function generate(name: Dataset, root: string, scale: Scale): string[] {
  fs.mkdirSync(root, { recursive: true });
  if (name === 'small') {
    const rng = mulberry32(7);
    return smallTree(root, scale.smallFiles, 1, () => 1024 + Math.floor(rng() * 63 * 1024));
  }
  if (name === 'million') return smallTree(root, scale.millionEntries, 3, () => 0);
  if (name === 'large') {
    const rng = mulberry32(11);
    const files: string[] = [];
    for (let i = 0; i < 4; i++) {
      const f = path.join(root, `large-${i}.bin`);
      const fd = fs.openSync(f, 'w');
      for (let off = 0; off < scale.largeFileBytes; off += 8 * 1024 * 1024) {
        fs.writeSync(fd, content(rng, Math.min(8 * 1024 * 1024, scale.largeFileBytes - off), i < 2));
      }
      fs.closeSync(fd);
      files.push(f);
    }
    return files;
  }
  // mixed: a system-like tree
  const s = scale.mixedScale;
  const rng = mulberry32(13);
  const files: string[] = [];
  const put = (rel: string, data: Buffer) => {
    const f = path.join(root, rel);
    fs.mkdirSync(path.dirname(f), { recursive: true });
    fs.writeFileSync(f, data);
    files.push(f);
  };
  for (let i = 0; i < 40; i++)
    put(`usr/bin/tool${i}`, randomBytes(rng, Math.floor((256 + rng() * 4096) * 1024 * s)));
  for (let i = 0; i < Math.floor(4000 * s); i++)
    put(`usr/lib/x86_64-linux-gnu/lib${i}.so.1`, randomBytes(rng, 2048 + Math.floor(rng() * 200_000)));
  for (let i = 0; i < Math.floor(2000 * s); i++)
    put(`etc/conf.d/item${i}.conf`, textBytes(rng, 200 + Math.floor(rng() * 4000)));
  for (let i = 0; i < 10; i++) put(`var/log/app${i}.log`, textBytes(rng, Math.floor(20 * 1024 * 1024 * s)));
  put('var/lib/db/data.db', content(rng, Math.floor(256 * 1024 * 1024 * s), false));
  const sparse = path.join(root, 'var/lib/images/disk.img');
  fs.mkdirSync(path.dirname(sparse), { recursive: true });
  const fd = fs.openSync(sparse, 'w');
  for (let i = 0; i < 10; i++)
    fs.writeSync(
      fd,
      randomBytes(rng, 1024 * 1024),
      0,
      1024 * 1024,
      Math.floor((i * 100 * 1024 * 1024 * s) / 1),
    );
  fs.ftruncateSync(fd, Math.floor(1024 * 1024 * 1024 * s));
  fs.closeSync(fd);
  for (let i = 0; i < 200; i++)
    fs.symlinkSync(`../lib/x86_64-linux-gnu/lib${i}.so.1`, path.join(root, `usr/bin/link${i}`));
  for (let i = 0; i < 100; i++)
    fs.linkSync(path.join(root, `usr/bin/tool${i % 40}`), path.join(root, `usr/bin/hard${i}`));
  return files;
}

/** Changes 1% of the files deterministically: half rewritten in place, half appended to. */
export function changeOnePercent(files: readonly string[], seed = 99): number {
  const rng = mulberry32(seed);
  let changed = 0;
  const step = 100;
  for (let i = Math.floor(rng() * step); i < files.length; i += step) {
    const f = files[i]!;
    if (changed % 2 === 0) {
      const size = fs.statSync(f).size;
      const fd = fs.openSync(f, 'r+');
      fs.writeSync(
        fd,
        randomBytes(rng, Math.min(4096, Math.max(1, size))),
        0,
        Math.min(4096, Math.max(1, size)),
        0,
      );
      fs.closeSync(fd);
    } else {
      fs.appendFileSync(f, textBytes(rng, 1000));
    }
    changed++;
  }
  return changed;
}

/**
 * Changes every large file the way a database dump, a log or an archive changes: 4 KiB
 * inserted into the first file and 4 KiB removed from the second (ext4 moves the rest of the
 * file without copying it: `fallocate --insert-range` / `--collapse-range`, then the new
 * bytes written in), 1 MiB rewritten in place in the third, 1 MiB appended to the fourth.
 * Everything after the insertion or removal is shifted: a tool that compares blocks only at
 * their old offsets resends it. Returns the bytes written.
 */
export function changeLargeFiles(files: readonly string[], seed = 99): number {
  const rng = mulberry32(seed);
  const big = files.filter((f) => fs.statSync(f).size >= 16 << 20).sort();
  let written = 0;
  /** A 4 KiB-aligned offset at about `fraction` of the file. */
  const at = (f: string, fraction: number) =>
    Math.floor((fs.statSync(f).size * fraction + rng() * 2 ** 20) / 4096) * 4096;
  const writeAt = (f: string, data: Buffer, offset: number) => {
    const fd = fs.openSync(f, 'r+');
    try {
      fs.writeSync(fd, data, 0, data.length, offset);
    } finally {
      fs.closeSync(fd);
    }
    written += data.length;
  };
  big.forEach((f, i) => {
    if (i % 4 === 0) {
      const o = at(f, 0.1);
      execFileSync('fallocate', ['--insert-range', '-o', String(o), '-l', '4096', f]);
      writeAt(f, randomBytes(rng, 4096), o);
    } else if (i % 4 === 1) {
      execFileSync('fallocate', ['--collapse-range', '-o', String(at(f, 0.5)), '-l', '4096', f]);
    } else if (i % 4 === 2) writeAt(f, randomBytes(rng, 1 << 20), at(f, 0.7));
    else writeAt(f, randomBytes(rng, 1 << 20), fs.statSync(f).size);
  });
  return written;
}
