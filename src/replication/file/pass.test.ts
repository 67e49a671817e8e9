import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { denyOpens, removeDenyOpenProgram, stopDenyingOpens } from '../../../test/support/deny-open.js';
import { duplexPair } from '../../../test/support/duplex-pair.js';
import { buildSampleTree, compareTrees } from '../../../test/support/trees.js';
import { SqliteSyncState } from '../../agent/sync-state.js';
import { FerryError } from '../../errors/index.js';
import { encodePath, ferryFs } from '../../native/index.js';
import { FrameDecoder, FrameType, Session } from '../../protocol/index.js';
import { configureHashing, hashingStats } from './content-hash.js';
import { type PassProgress, runSendPass, type SyncRecord } from './pass.js';
import { readBuffers } from './read-buffers.js';
import { xattrsOf } from './read-file.js';
import { receivePass } from './receive.js';
import { TreeWriter } from './tree-writer.js';
import { receiveVerify, runVerifySend } from './verify.js';

/** Why the target REJECTed what it did, in order (the `err` of each warning it logged). */
const rejections: string[] = [];
const log = { warn: (o: { err?: string }) => void rejections.push(o.err ?? ''), error: () => {} };
let dir: string;

beforeEach(() => {
  rejections.length = 0;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-pass-'));
});
afterEach(async () => {
  await stopDenyingOpens();
  configureHashing(0);
  fs.rmSync(dir, { recursive: true, force: true });
});
afterAll(removeDenyOpenProgram);

const HASHING = [
  [0, 'large files hashed on the event loop'],
  [1, 'large files hashed in a worker thread'],
] as const;

/** Empty source and target directories for one test. */
function emptyTrees(): { src: string; dst: string } {
  const src = path.join(dir, 'src');
  const dst = path.join(dir, 'dst');
  fs.mkdirSync(src);
  fs.mkdirSync(dst);
  return { src, dst };
}

/** `n` bytes (a multiple of 4) in which no 4-byte word repeats within 4 GiB. */
function distinctBytes(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let at = 0; at < n; at += 4) b.writeUInt32LE(Math.imul(at, 2654435761) >>> 0, at);
  return b;
}

/**
 * Pass progress that runs `midPass` once, when the pass first counts bytes sent: while the
 * first file's content is going out, after the scan has seen what follows. `ran()` says
 * whether it did.
 */
function progressThatChanges(midPass: () => void): { progress: PassProgress; ran: () => boolean } {
  let bytesSent = 0;
  let done = false;
  const progress = { bytes: 0, files: 0 } as PassProgress;
  Object.defineProperty(progress, 'bytesSent', {
    get: () => bytesSent,
    set: (v: number) => {
      bytesSent = v;
      if (done || v === 0) return;
      done = true;
      midPass();
    },
  });
  return { progress, ran: () => done };
}

/** A source holding one file of `bytes` distinct bytes, copied once to the target. */
async function copiedOnce(name: string, bytes: number) {
  const { src, dst } = emptyTrees();
  const original = distinctBytes(bytes);
  const file = path.join(src, name);
  fs.writeFileSync(file, original);
  const state = new SqliteSyncState(path.join(dir, 'state.db'));
  await pass(src, dst, state);
  return { src, dst, file, original, state };
}

/** `b` with 1000 bytes inserted at 100,000: every block after them moved by 1000 bytes. */
const inserted1000 = (b: Buffer) =>
  Buffer.concat([b.subarray(0, 100_000), Buffer.alloc(1000, 0x41), b.subarray(100_000)]);

async function pass(
  src: string,
  dst: string,
  state: SqliteSyncState,
  excludes: string[] = [],
  keep: string[] = [],
  maxUnacked?: number,
  progress: PassProgress = { bytes: 0, files: 0, bytesSent: 0 },
  sessionOpts: { compress?: boolean } = {},
) {
  // reads of at most 16 KiB, as TLS delivers them: large frames span reads
  const [a, b] = duplexPair({ pieceBytes: 16 * 1024 });
  const writer = await TreeWriter.open(dst, log);
  const receiver = new Session(b);
  // what crossed the connection, frame type by frame type
  const frames = new Map<number, number>();
  const tap = new FrameDecoder();
  b.on('data', (chunk: Buffer) => {
    for (const item of tap.push(chunk))
      if (item.kind === 'frame') frames.set(item.type, (frames.get(item.type) ?? 0) + 1);
  });
  const [sent, received] = await Promise.all([
    runSendPass({
      session: new Session(a, sessionOpts),
      root: src,
      excludes,
      keep,
      state,
      progress,
      detectRenames: true,
      ...(maxUnacked ? { maxUnacked } : {}),
    }),
    receivePass(receiver, writer, log),
  ]);
  expect(received.committed).toBe(true);
  // every pooled frame buffer was given back once its write had completed
  expect(receiver.framePool.stats.outstanding).toBe(0);
  return { sent, progress, pool: receiver.framePool.stats, frames, writer };
}

describe('file-level pass over an in-memory connection', () => {
  it.each(HASHING)(
    'copies every kind of entry, then syncs changes, deletions and renames (%i: %s)',
    async (threads) => {
      configureHashing(threads);
      const threadBytes = hashingStats().threadBytes;
      const src = path.join(dir, 'src');
      const dst = path.join(dir, 'dst');
      buildSampleTree(src, { sparseBytes: 64 * 1024 * 1024 });
      // a large file of more 1 MiB frames than can be received before any of them is written,
      // however slow the writes (the writer queues 8 MiB of them, the session 4 MiB more before
      // it stops reading): with 8 MiB, a loaded machine received the whole file first
      fs.writeFileSync(path.join(src, 'srv/data/big.bin'), distinctBytes(16 << 20));
      fs.mkdirSync(dst);
      const state = new SqliteSyncState(path.join(dir, 'state.db'));
      const first = await pass(src, dst, state);
      expect(compareTrees(src, dst)).toEqual([]);
      // the large files' 1 MiB frames were assembled in reused buffers
      expect(first.pool.reused).toBeGreaterThan(0);
      // the sparse file's holes were not sent, nor hashed as zeros by the target (the rest
      // is ~3.3 MiB of the sample and the 16 MiB file)
      expect(first.sent.bytesSent).toBeLessThan(26 * 1024 * 1024);
      expect(first.writer.holeBytes.hashed).toBe(0);
      expect(first.writer.holeBytes.skipped).toBeGreaterThan(63 * 1024 * 1024); // all but whole blocks of data

      const again = await pass(src, dst, state);
      expect(again.sent.entriesSent).toBe(0);
      expect(again.sent.deleted).toBe(0);

      fs.appendFileSync(path.join(src, 'var/log/app.log'), 'more\n');
      fs.writeFileSync(path.join(src, 'etc/hostname'), 'changed\n');
      fs.rmSync(path.join(src, 'home/alice/owned'));
      fs.renameSync(path.join(src, 'srv/data/blob.bin'), path.join(src, 'srv/data/blob-renamed.bin'));
      fs.rmSync(path.join(src, 'opt'), { recursive: true });
      fs.mkdirSync(path.join(src, 'new/deep/dir'), { recursive: true });
      fs.writeFileSync(path.join(src, 'new/deep/dir/file'), 'new');
      const sync = await pass(src, dst, state);
      expect(sync.sent.deleted).toBeGreaterThan(0);
      expect(compareTrees(src, dst)).toEqual([]);
      // with a thread, both sides hashed the large files there, and neither the sparse
      // file's 64 MiB of holes (less than one side's share of them was hashed in all)
      if (threads) {
        const hashed = hashingStats().threadBytes - threadBytes;
        expect(hashed).toBeGreaterThan(2 * 3 * 1024 * 1024);
        expect(hashed).toBeLessThan(64 * 1024 * 1024);
      } else expect(hashingStats().threadBytes).toBe(threadBytes);
      state.close();
    },
  );

  it.each(HASHING)(
    'reuses frame buffers only once their writes are done: a 48 MiB file arrives intact (%i: %s)',
    async (threads) => {
      configureHashing(threads);
      const { src, dst } = emptyTrees();
      // distinct bytes in every MiB: a buffer reused while its write was still queued
      // would leave another frame's bytes in the file
      const big = distinctBytes(48 << 20);
      fs.writeFileSync(path.join(src, 'big.bin'), big);
      const state = new SqliteSyncState(path.join(dir, 'state.db'));
      const first = await pass(src, dst, state);
      expect(compareTrees(src, dst)).toEqual([]);
      expect(fs.readFileSync(path.join(dst, 'big.bin')).equals(big)).toBe(true);
      expect(first.pool.reused + first.pool.allocated).toBeGreaterThanOrEqual(48);
      expect(first.pool.allocated).toBeLessThanOrEqual(24);
      state.close();
    },
  );

  it('sends a tree of small files in FILES frames of up to 1 MiB, and a file too big to share one in its own frame', async () => {
    const { src, dst } = emptyTrees();
    for (let i = 0; i < 300; i++)
      fs.writeFileSync(path.join(src, `s${String(i).padStart(3, '0')}`), distinctBytes(8 << 10));
    fs.writeFileSync(path.join(src, 't-alone'), distinctBytes(1 << 20)); // a whole MiB: no room for its entry
    fs.writeFileSync(path.join(src, 'u-after'), 'after the big one');
    const state = new SqliteSyncState(path.join(dir, 'state.db'));
    const first = await pass(src, dst, state);
    expect(compareTrees(src, dst)).toEqual([]);
    // 300 × 8 KiB in frames of at most 1 MiB, entries included, and of at least 256 KiB
    // when the reads are behind (~8.7 KiB counted per file): 3 to 12 frames
    expect(first.frames.get(FrameType.FILES)).toBeGreaterThanOrEqual(3);
    expect(first.frames.get(FrameType.FILES)).toBeLessThanOrEqual(12);
    expect(first.frames.get(FrameType.FILE)).toBe(1); // the big one, alone
    expect(first.frames.get(FrameType.ENTRY) ?? 0).toBe(0);
    state.close();
  });

  it('reads into buffers it gets back once they are sent, and keeps none after the pass', async () => {
    const { src, dst } = emptyTrees();
    for (let i = 0; i < 1600; i++) fs.writeFileSync(path.join(src, `s${i}`), distinctBytes(4 << 10));
    fs.writeFileSync(path.join(src, 'large'), distinctBytes(12 << 20)); // twelve 1 MiB chunks
    const state = new SqliteSyncState(path.join(dir, 'state.db'));
    const before = { ...readBuffers.stats };
    await pass(src, dst, state);
    // distinct bytes everywhere: a buffer read into again before its frame was written would show
    expect(compareTrees(src, dst)).toEqual([]);
    const allocated = readBuffers.stats.allocated - before.allocated;
    const reused = readBuffers.stats.reused - before.reused;
    // 100 batches of 16 small files and 12 chunks: most of them in a buffer used before
    expect(allocated + reused).toBeGreaterThanOrEqual(112);
    expect(reused).toBeGreaterThan(allocated);
    expect(readBuffers.keptBytes).toBe(0); // forgotten when the pass ended
    state.close();
  });

  it('reuses the frame buffers of whole files only once their batch is written: 40 files of 300-900 KiB arrive intact', async () => {
    const { src, dst } = emptyTrees();
    const words = distinctBytes(40 * 900 * 1024);
    for (let i = 0; i < 40; i++) {
      const size = (300 + ((i * 37) % 600)) * 1024;
      fs.writeFileSync(path.join(src, `f${i}`), words.subarray(i * 900 * 1024, i * 900 * 1024 + size));
    }
    const state = new SqliteSyncState(path.join(dir, 'state.db'));
    const first = await pass(src, dst, state);
    // a buffer handed back before its batch job wrote it would leave another file's bytes
    expect(compareTrees(src, dst)).toEqual([]);
    expect(first.pool.reused).toBeGreaterThan(0);
    state.close();
  });

  it('keeps at most maxUnacked entries waiting for their ACK, and still copies everything', async () => {
    const src = path.join(dir, 'src');
    const dst = path.join(dir, 'dst');
    for (let d = 0; d < 20; d++) {
      fs.mkdirSync(path.join(src, `d${d}`), { recursive: true });
      for (let f = 0; f < 100; f++) fs.writeFileSync(path.join(src, `d${d}`, `f${f}`), '');
    }
    fs.mkdirSync(dst);
    const state = new SqliteSyncState(path.join(dir, 'state.db'));
    const first = await pass(src, dst, state, [], [], 50);
    expect(compareTrees(src, dst)).toEqual([]);
    expect(first.sent.entriesSent).toBe(2020);
    // the files went in FILES frames of several each (ACKs come back for every 64 entries, so
    // with 50 unacknowledged at most, a frame is sent before the pass waits for room)
    expect(first.frames.get(FrameType.FILE) ?? 0).toBe(0);
    expect(first.frames.get(FrameType.FILES)).toBeGreaterThanOrEqual(2000 / 50);
    expect(first.frames.get(FrameType.FILES)).toBeLessThan(2000 / 5);
    expect(first.writer.smallWrites).toEqual({ inPlace: 2000, renamed: 0 });
    expect(first.sent.peakUnacked).toBeGreaterThan(0);
    expect(first.sent.peakUnacked).toBeLessThanOrEqual(50);
    // deletions wait for room the same way
    fs.rmSync(path.join(src, 'd3'), { recursive: true });
    for (let f = 0; f < 100; f++) fs.rmSync(path.join(src, 'd4', `f${f}`));
    const sync = await pass(src, dst, state, [], [], 50);
    expect(sync.sent.deleted).toBeGreaterThan(50);
    expect(sync.sent.peakUnacked).toBeLessThanOrEqual(50);
    expect(compareTrees(src, dst)).toEqual([]);
    state.close();
  });

  it('looks nothing up in a store that starts empty, and recognises everything on the next pass', async () => {
    const { src, dst } = emptyTrees();
    for (let f = 0; f < 50; f++) fs.writeFileSync(path.join(src, `f${f}`), `content ${f}`);
    const lookups = { n: 0 };
    class Counting extends SqliteSyncState {
      override lookup(p: string) {
        lookups.n++;
        return super.lookup(p);
      }
      override markSeenIfUnchanged(r: SyncRecord, gen: number) {
        lookups.n++;
        return super.markSeenIfUnchanged(r, gen);
      }
    }
    const state = new Counting(path.join(dir, 'state.db'));
    expect(state.isEmpty()).toBe(true);
    const first = await pass(src, dst, state);
    expect(first.sent.entriesSent).toBe(50);
    expect(lookups.n).toBe(0);
    expect(state.isEmpty()).toBe(false);
    fs.writeFileSync(path.join(src, 'f7'), 'changed content');
    const again = await pass(src, dst, state);
    expect(again.sent.entriesSent).toBe(1); // the changed file
    expect(again.sent.unchanged).toBe(49);
    expect(lookups.n).toBeGreaterThanOrEqual(50);
    expect(compareTrees(src, dst)).toEqual([]);
    state.close();
  });

  it('never reads through a symlink swapped in for a file after the scan: the target drops its copy instead', async () => {
    const { src, dst } = emptyTrees();
    const secret = path.join(dir, 'secret');
    fs.writeFileSync(secret, 'SECRET '.repeat(300_000)); // root's file outside the tree
    fs.mkdirSync(path.join(src, 'home'));
    for (const name of ['a', 'b', 'c'])
      fs.writeFileSync(path.join(src, 'home', name), distinctBytes(2 << 20));
    const state = new SqliteSyncState(path.join(dir, 'state.db'));
    await pass(src, dst, state);
    for (const name of ['a', 'b', 'c']) fs.appendFileSync(path.join(src, 'home', name), 'more');
    fs.writeFileSync(path.join(src, 'home/d'), distinctBytes(2 << 20)); // new: sent whole, not by blocks
    fs.symlinkSync('a', path.join(src, 'home/e-link'));
    // While `a` is sent, its owner swaps `b` and `d` for symlinks to the secret and removes
    // `c`: all were scanned as regular files, and none is read once gone.
    const { progress, ran } = progressThatChanges(() => {
      fs.rmSync(path.join(src, 'home/b'));
      fs.symlinkSync(secret, path.join(src, 'home/b'));
      fs.rmSync(path.join(src, 'home/c'));
      fs.rmSync(path.join(src, 'home/d'));
      fs.symlinkSync(secret, path.join(src, 'home/d'));
      fs.rmSync(path.join(src, 'home/e-link')); // a symlink removed before its readlink
    });
    const sync = await pass(src, dst, state, [], [], undefined, progress);
    expect(ran()).toBe(true);
    expect(sync.sent.changedSinceScan).toBe(4);
    expect(fs.readFileSync(path.join(dst, 'home/a')).subarray(-4).toString()).toBe('more');
    // the target's stale copies are gone, and no byte of the secret arrived
    expect(fs.existsSync(path.join(dst, 'home/b'))).toBe(false);
    expect(fs.existsSync(path.join(dst, 'home/c'))).toBe(false);
    expect(fs.existsSync(path.join(dst, 'home/d'))).toBe(false);
    expect(fs.existsSync(path.join(dst, 'home/e-link'))).toBe(false);
    expect(sync.sent.bytesSent).toBeLessThan(3 << 20);
    // the next pass sends what is there now: the symlink itself
    const next = await pass(src, dst, state);
    expect(next.sent.changedSinceScan).toBe(0);
    expect(fs.readlinkSync(path.join(dst, 'home/b'))).toBe(secret);
    expect(compareTrees(src, dst)).toEqual([]);
    state.close();
  });

  it('copies everything else when the source refuses some files and a directory, keeps what the target has of them, and sends them once they can be read', async () => {
    const { src, dst } = emptyTrees();
    for (const d of ['etc', 'var', 'srv/locked']) fs.mkdirSync(path.join(src, d), { recursive: true });
    for (let i = 0; i < 40; i++)
      fs.writeFileSync(path.join(src, `etc/f${i}`), `etc file ${i}\n`.repeat(i + 1));
    fs.writeFileSync(path.join(src, 'var/big.bin'), distinctBytes(3 << 20)); // large: opened at its turn
    fs.writeFileSync(path.join(src, 'var/h1'), 'linked twice');
    fs.linkSync(path.join(src, 'var/h1'), path.join(src, 'var/h2'));
    for (const name of ['a', 'b']) fs.writeFileSync(path.join(src, 'srv/locked', name), name);
    const refused = ['etc/f7', 'var/big.bin', 'var/h1', 'srv/locked'];
    const state = new SqliteSyncState(path.join(dir, 'state.db'));

    // a first copy while an on-access scanner refuses them (EPERM on open)
    let allow = await denyOpens(refused.map((r) => path.join(src, r)));
    const first = await pass(src, dst, state);
    await allow();
    // the hard link's other path is the same refused file
    expect(first.sent.unreadable).toBe(5);
    expect(first.sent.unreadableEntries.map((u) => `${u.path} ${u.code}`).sort()).toEqual(
      ['etc/f7', 'srv/locked', 'var/big.bin', 'var/h1', 'var/h2'].map((p) => `${p} EPERM`),
    );
    expect(fs.existsSync(path.join(dst, 'etc/f7'))).toBe(false);
    expect(fs.existsSync(path.join(dst, 'var/big.bin'))).toBe(false);
    expect(fs.existsSync(path.join(dst, 'var/h2'))).toBe(false);
    expect(fs.readdirSync(path.join(dst, 'srv/locked'))).toEqual([]);
    expect(fs.readFileSync(path.join(dst, 'etc/f8'), 'utf8')).toBe('etc file 8\n'.repeat(9));
    expect(compareTrees(src, dst).length).toBeGreaterThan(0);

    // readable again: the next pass sends exactly what was missing
    const second = await pass(src, dst, state);
    expect(second.sent.unreadable).toBe(0);
    expect(second.sent.entriesSent).toBe(6); // the four files, and the two in the directory
    expect(compareTrees(src, dst)).toEqual([]);
    expect(fs.statSync(path.join(dst, 'var/h2')).ino).toBe(fs.statSync(path.join(dst, 'var/h1')).ino);

    // changed on the source and refused again: the target keeps its copies, nothing under
    // the directory it cannot list is deleted, and the records stay as they were
    fs.writeFileSync(path.join(src, 'etc/f7'), 'changed');
    fs.appendFileSync(path.join(src, 'var/big.bin'), 'more');
    fs.writeFileSync(path.join(src, 'srv/locked/c'), 'c');
    allow = await denyOpens(refused.map((r) => path.join(src, r)));
    const third = await pass(src, dst, state);
    await allow();
    expect(third.sent.unreadable).toBe(3);
    expect(third.sent.deleted).toBe(0);
    expect(fs.readFileSync(path.join(dst, 'etc/f7'), 'utf8')).toBe('etc file 7\n'.repeat(8));
    expect(fs.readFileSync(path.join(dst, 'var/big.bin')).equals(distinctBytes(3 << 20))).toBe(true);
    expect(fs.readdirSync(path.join(dst, 'srv/locked')).sort()).toEqual(['a', 'b']);

    const fourth = await pass(src, dst, state);
    expect(fourth.sent.unreadable).toBe(0);
    expect(compareTrees(src, dst)).toEqual([]);
    state.close();
  });

  it('drops a file whose reads fail part way (FILE_ABORT): the target keeps its copy, whole files and changed blocks alike', async () => {
    const { src, dst } = emptyTrees();
    fs.mkdirSync(path.join(src, 'var'));
    fs.writeFileSync(path.join(src, 'var/old.bin'), distinctBytes(8 << 20));
    fs.writeFileSync(path.join(src, 'var/log'), 'kept');
    const state = new SqliteSyncState(path.join(dir, 'state.db'));
    await pass(src, dst, state);
    /** What the target's var holds: no half-written file may be left behind. */
    const held = () => fs.readdirSync(path.join(dst, 'var')).sort();

    // new files: a large one whose disk fails after three 1 MiB reads, a small one at once
    fs.writeFileSync(path.join(src, 'var/new.bin'), distinctBytes(6 << 20).reverse());
    fs.writeFileSync(path.join(src, 'var/small'), 'x'.repeat(10_000));
    let allowLarge = await denyOpens([path.join(src, 'var/new.bin')], { readsAfter: 3 });
    const allowSmall = await denyOpens([path.join(src, 'var/small')], { readsAfter: 0 });
    const first = await pass(src, dst, state);
    await allowLarge();
    await allowSmall();
    expect(first.sent.unreadableEntries.map((u) => `${u.path} ${u.code}`).sort()).toEqual([
      'var/new.bin EPERM',
      'var/small EPERM',
    ]);
    expect(first.frames.get(FrameType.FILE_ABORT)).toBe(2);
    expect(held()).toEqual(['log', 'old.bin']);

    // a changed file sent by blocks, failing part way: the target's copy stays as it was
    const changed = distinctBytes(8 << 20);
    changed.fill(7, 5 << 20, 6 << 20);
    fs.writeFileSync(path.join(src, 'var/old.bin'), changed);
    // (read in windows of a few MiB: the first read succeeds, the second fails)
    allowLarge = await denyOpens([path.join(src, 'var/old.bin')], { readsAfter: 1 });
    const sync = await pass(src, dst, state);
    await allowLarge();
    expect(sync.sent.unreadableEntries).toEqual([{ path: 'var/old.bin', code: 'EPERM' }]);
    expect(fs.readFileSync(path.join(dst, 'var/old.bin')).equals(distinctBytes(8 << 20))).toBe(true);
    expect(held()).toEqual(['log', 'new.bin', 'old.bin', 'small']);

    // readable again: all of it arrives
    const last = await pass(src, dst, state);
    expect(last.sent.unreadable).toBe(0);
    expect(compareTrees(src, dst)).toEqual([]);
    state.close();
  });

  it('migrates names that are not valid UTF-8 byte for byte: files, directories, symlinks and their targets, hard links; then syncs, renames and deletes them', async () => {
    const { src, dst } = emptyTrees();
    const raw = (...parts: (string | number[])[]) =>
      Buffer.concat(parts.map((x) => (typeof x === 'string' ? Buffer.from(x) : Buffer.from(x))));
    const at = (root: string, ...parts: (string | number[])[]) => raw(`${root}/`, ...parts);
    const latin1Dir = [0x72, 0xe9, 0x73, 0x75, 0x6d, 0xe9]; // "résumé" in Latin-1
    fs.mkdirSync(at(src, latin1Dir));
    fs.writeFileSync(at(src, latin1Dir, '/caf', [0xe9]), 'small'); // and its UTF-8 twin, another file
    fs.writeFileSync(at(src, latin1Dir, '/caf\u00e9'), 'twin');
    fs.writeFileSync(at(src, latin1Dir, '/big', [0xff, 0xfe]), distinctBytes(3 << 20)); // large
    fs.writeFileSync(at(src, 'a', [0xe9]), 'one');
    fs.writeFileSync(at(src, 'a', [0xe8]), 'two'); // differs only in the invalid byte
    fs.writeFileSync(at(src, 'a\ufffd'), 'three'); // U+FFFD itself: what a lossy decoder makes of both
    fs.symlinkSync(raw('caf', [0xe9]), at(src, latin1Dir, '/link', [0xe9]));
    fs.linkSync(at(src, 'a', [0xe9]), at(src, 'hard', [0xe9]));
    ferryFs.setXattr(path.join(src, 'a\udce9'), 'user.k', Buffer.from('v')); // named as ferry carries it
    const state = new SqliteSyncState(path.join(dir, 'state.db'));
    const first = await pass(src, dst, state);
    expect(first.sent.entriesSent).toBe(9);
    expect(compareTrees(src, dst)).toEqual([]);
    expect(fs.readFileSync(at(dst, latin1Dir, '/caf', [0xe9]), 'utf8')).toBe('small');
    expect(fs.readlinkSync(at(dst, latin1Dir, '/link', [0xe9]), { encoding: 'buffer' })).toEqual(
      raw('caf', [0xe9]),
    );
    expect(fs.statSync(at(dst, 'hard', [0xe9])).ino).toBe(fs.statSync(at(dst, 'a', [0xe9])).ino);

    // nothing changed: each is recognised in the sync state, none sent again
    expect((await pass(src, dst, state)).sent.entriesSent).toBe(0);
    // changed, renamed and removed
    fs.appendFileSync(at(src, latin1Dir, '/big', [0xff, 0xfe]), 'more');
    fs.renameSync(at(src, 'a', [0xe8]), at(src, 'moved', [0xe8]));
    fs.rmSync(at(src, 'a\ufffd'));
    const sync = await pass(src, dst, state);
    expect(sync.sent.deleted).toBe(2); // the renamed file's old name and the removed one
    expect(compareTrees(src, dst)).toEqual([]);
    state.close();
  });

  it('migrates extended attribute names that are not valid UTF-8 byte for byte, next to their U+FFFD twin: files small and large, directories, symlinks', async () => {
    const { src, dst } = emptyTrees();
    const latin1 = 'user.caf\udce9'; // "café" in Latin-1, as ferry carries such a byte
    const twin = 'user.caf\ufffd'; // what a lossy decoder would have made of it
    fs.mkdirSync(path.join(src, 'd'));
    fs.writeFileSync(path.join(src, 'd/small'), 'small');
    fs.writeFileSync(path.join(src, 'd/large'), distinctBytes(3 << 20));
    fs.symlinkSync('small', path.join(src, 'd/link'));
    for (const rel of ['d', 'd/small', 'd/large']) {
      ferryFs.setXattr(path.join(src, rel), latin1, Buffer.from('latin-1'));
      ferryFs.setXattr(path.join(src, rel), twin, Buffer.from('twin'));
    }
    ferryFs.setXattr(path.join(src, 'd/link'), 'trusted.\udcff', Buffer.from('link'));
    const state = new SqliteSyncState(path.join(dir, 'state.db'));
    await pass(src, dst, state);
    expect(compareTrees(src, dst)).toEqual([]);
    for (const rel of ['d', 'd/small', 'd/large']) {
      const names = ferryFs.listXattr(path.join(dst, rel)).sort();
      expect(names).toEqual([latin1, twin].sort());
      expect(encodePath(names.find((n) => n === latin1)!)).toEqual(
        Buffer.from([...Buffer.from('user.caf'), 0xe9]),
      );
      expect(ferryFs.getXattr(path.join(dst, rel), latin1).toString()).toBe('latin-1');
    }
    expect(ferryFs.getXattr(path.join(dst, 'd/link'), 'trusted.\udcff').toString()).toBe('link');
    // a verify in full mode compares them as bytes: identical, then one differs
    const check = async () => {
      const [a, b] = duplexPair();
      const [, got] = await Promise.all([
        runVerifySend({ session: new Session(a), root: src, excludes: [], mode: 'full' }),
        receiveVerify(new Session(b), dst, 'full', { ignore: [] }),
      ]);
      return got;
    };
    expect((await check()).identical).toBe(true);
    ferryFs.setXattr(path.join(dst, 'd/small'), latin1, Buffer.from('other'));
    expect((await check()).examples).toEqual([{ path: '/d/small', problem: 'extended attributes differ' }]);
    state.close();
  });

  it("gives the target's root the source root's owner, mode, extended attributes and time", async () => {
    const { src, dst } = emptyTrees();
    fs.writeFileSync(path.join(src, 'a'), 'a');
    const same = () => {
      const [a, b] = [fs.lstatSync(src, { bigint: true }), fs.lstatSync(dst, { bigint: true })];
      expect([b.mode, b.uid, b.gid, b.mtimeNs]).toEqual([a.mode, a.uid, a.gid, a.mtimeNs]);
      expect(ferryFs.getXattr(dst, 'user.root').toString()).toBe('yes');
    };
    fs.chmodSync(src, 0o750);
    fs.chownSync(src, 1234, 5678);
    ferryFs.setXattr(src, 'user.root', Buffer.from('yes'));
    fs.utimesSync(src, 1_000_000, 1_000_000.5);
    const state = new SqliteSyncState(path.join(dir, 'state.db'));
    await pass(src, dst, state);
    same();
    // a file added at the root changes its time on both sides; the sync carries it
    fs.writeFileSync(path.join(src, 'b'), 'b');
    await pass(src, dst, state);
    same();
    state.close();
  });

  it("copies the extended attributes of symlinks, fifos and device nodes (a symlink's SELinux label), and a changed one in a sync", async () => {
    const { src, dst } = emptyTrees();
    const label = (s: string) => Buffer.from(`system_u:object_r:${s}:s0\0`);
    fs.mkdirSync(path.join(src, 'usr/bin'), { recursive: true });
    fs.writeFileSync(path.join(src, 'usr/bin/tool'), 'tool');
    ferryFs.setXattr(path.join(src, 'usr/bin/tool'), 'user.kind', Buffer.from('file'));
    fs.symlinkSync('usr/bin', path.join(src, 'bin'));
    fs.symlinkSync('tool', path.join(src, 'usr/bin/alias'));
    ferryFs.setXattr(path.join(src, 'bin'), 'security.selinux', label('bin_t'));
    ferryFs.setXattr(path.join(src, 'usr/bin/alias'), 'trusted.note', Buffer.from([0, 1, 255]));
    execFileSync('mkfifo', [path.join(src, 'fifo')]);
    ferryFs.setXattr(path.join(src, 'fifo'), 'trusted.fifo', Buffer.from('f')); // user.* is for files and directories only
    ferryFs.mknod(path.join(src, 'null'), fs.constants.S_IFCHR | 0o666, 1, 3);
    ferryFs.setXattr(path.join(src, 'null'), 'security.selinux', label('null_device_t'));
    const state = new SqliteSyncState(path.join(dir, 'state.db'));
    await pass(src, dst, state);
    expect(compareTrees(src, dst)).toEqual([]);
    // each symlink has its own attributes, not those of what it points to
    expect(ferryFs.listXattr(path.join(dst, 'usr/bin/alias'))).toEqual(['trusted.note']);
    expect(ferryFs.getXattr(path.join(dst, 'bin'), 'security.selinux')).toEqual(label('bin_t'));
    expect(ferryFs.getXattr(path.join(dst, 'null'), 'security.selinux')).toEqual(label('null_device_t'));
    // relabelled on the source (as restorecon does): the sync carries the new label
    ferryFs.setXattr(path.join(src, 'bin'), 'security.selinux', label('usr_t'));
    ferryFs.removeXattr(path.join(src, 'usr/bin/alias'), 'trusted.note');
    await pass(src, dst, state);
    expect(compareTrees(src, dst)).toEqual([]);
    expect(ferryFs.getXattr(path.join(dst, 'bin'), 'security.selinux')).toEqual(label('usr_t'));
    expect(ferryFs.listXattr(path.join(dst, 'usr/bin/alias'))).toEqual([]);
    state.close();
  });

  it("never gives a directory another one's extended attributes, nor a symlink another one's target, through a parent swapped for a symlink mid-pass", async () => {
    const { src, dst } = emptyTrees();
    // root's directory elsewhere, with an attribute of its own, and a symlink, under the same names
    const secret = path.join(dir, 'secret');
    fs.mkdirSync(path.join(secret, 'z'), { recursive: true });
    ferryFs.setXattr(path.join(secret, 'z'), 'user.secret', Buffer.from('root only'));
    fs.symlinkSync('/root/secret-target', path.join(secret, 'l'));
    // and a fifo with a label of its own: a node's attributes come through no symlink either
    execFileSync('mkfifo', [path.join(secret, 'f')]);
    ferryFs.setXattr(path.join(secret, 'f'), 'trusted.secret', Buffer.from('root only'));
    fs.mkdirSync(path.join(src, 'y/z'), { recursive: true });
    fs.symlinkSync('mine', path.join(src, 'y/l'));
    execFileSync('mkfifo', [path.join(src, 'y/f')]);
    fs.writeFileSync(path.join(src, 'y/a'), distinctBytes(3 << 20)); // large: sent before y/z
    const { progress, ran } = progressThatChanges(() => {
      // y, listed already, becomes a symlink to the secret's parent
      fs.renameSync(path.join(src, 'y'), path.join(dir, 'y-moved'));
      fs.symlinkSync(secret, path.join(src, 'y'));
    });
    const state = new SqliteSyncState(path.join(dir, 'state.db'));
    const first = await pass(src, dst, state, [], [], undefined, progress);
    expect(ran()).toBe(true);
    expect(first.sent.changedSinceScan).toBeGreaterThan(0);
    // y/l and y/z were dropped, not created with the secret's target and attribute
    expect(fs.existsSync(path.join(dst, 'y/z'))).toBe(false);
    expect(fs.lstatSync(path.join(dst, 'y/l'), { throwIfNoEntry: false })).toBeUndefined();
    expect(fs.lstatSync(path.join(dst, 'y/f'), { throwIfNoEntry: false })).toBeUndefined();
    for (const d of [dst, path.join(dst, 'y')]) expect(ferryFs.listXattr(d)).not.toContain('user.secret');
    state.close();
  });

  it('sends a hard link as the file itself when the path it would link to was removed mid-pass', async () => {
    const { src, dst } = emptyTrees();
    fs.writeFileSync(path.join(src, 'a'), distinctBytes(2 << 20));
    fs.writeFileSync(path.join(src, 'x'), distinctBytes(3 << 20)); // large: read at its turn, not ahead
    fs.linkSync(path.join(src, 'x'), path.join(src, 'y'));
    fs.linkSync(path.join(src, 'x'), path.join(src, 'z'));
    const { progress } = progressThatChanges(() => fs.rmSync(path.join(src, 'x'))); // while `a` is sent
    const state = new SqliteSyncState(path.join(dir, 'state.db'));
    const first = await pass(src, dst, state, [], [], undefined, progress);
    expect(first.sent.changedSinceScan).toBe(1);
    expect(fs.existsSync(path.join(dst, 'x'))).toBe(false);
    expect(fs.readFileSync(path.join(dst, 'y')).equals(distinctBytes(3 << 20))).toBe(true);
    expect(fs.statSync(path.join(dst, 'z')).ino).toBe(fs.statSync(path.join(dst, 'y')).ino);
    expect(compareTrees(src, dst)).toEqual([]);
    state.close();
  });

  it('copies a large file that grows or shrinks between the scan and its read, as it is when read', async () => {
    const { src, dst } = emptyTrees();
    fs.writeFileSync(path.join(src, 'a'), distinctBytes(2 << 20));
    fs.writeFileSync(path.join(src, 'grows.log'), distinctBytes(3 << 20));
    fs.writeFileSync(path.join(src, 'shrinks.log'), distinctBytes(3 << 20));
    const { progress } = progressThatChanges(() => {
      // while `a` is sent: a log appended to, another truncated
      fs.appendFileSync(path.join(src, 'grows.log'), 'appended line\n'.repeat(5000));
      fs.truncateSync(path.join(src, 'shrinks.log'), 1 << 20);
    });
    const state = new SqliteSyncState(path.join(dir, 'state.db'));
    await pass(src, dst, state, [], [], undefined, progress);
    const same = (f: string) => fs.readFileSync(path.join(dst, f)).equals(fs.readFileSync(path.join(src, f)));
    expect(same('grows.log') && same('shrinks.log')).toBe(true);
    // a sync sends the changed log block by block: appended to again after the scan
    fs.appendFileSync(path.join(src, 'a'), 'a changed too');
    fs.appendFileSync(path.join(src, 'grows.log'), 'x'.repeat(100_000));
    let appended = false;
    const during = { bytes: 0, files: 0 } as PassProgress;
    let sent = 0;
    Object.defineProperty(during, 'bytesSent', {
      get: () => sent,
      set: (v: number) => {
        if (!appended && v > 0) {
          appended = true;
          fs.appendFileSync(path.join(src, 'grows.log'), 'y'.repeat(300_000));
        }
        sent = v;
      },
    });
    const sync = await pass(src, dst, state, [], [], undefined, during);
    expect(appended).toBe(true);
    expect(same('grows.log')).toBe(true);
    expect(sync.sent.bytesSent).toBeLessThan(2 << 20); // by blocks, not whole
    // the next pass sees what changed since the scans it recorded, and leaves the trees equal
    await pass(src, dst, state);
    expect(compareTrees(src, dst)).toEqual([]);
    state.close();
  });

  it('closes the file it opened for a changed-block transfer when the target goes away before its sums', async () => {
    const { src, dst } = emptyTrees();
    fs.writeFileSync(path.join(src, 'big'), distinctBytes(3 << 20));
    const state = new SqliteSyncState(path.join(dir, 'state.db'));
    await pass(src, dst, state);
    fs.appendFileSync(path.join(src, 'big'), 'changed');
    const fds = () => fs.readdirSync('/proc/self/fd').length;
    const before = fds();
    const [a, b] = duplexPair();
    const target = new Session(b);
    const gone = (async () => {
      for await (const m of target.messages())
        if (m.type === 'entry' && m.body.deltaBlockSize) {
          b.destroy(); // no SUMS will come
          return;
        }
    })();
    const sync = runSendPass({
      session: new Session(a),
      root: src,
      excludes: [],
      state,
      progress: { bytes: 0, files: 0, bytesSent: 0 },
      detectRenames: true,
    });
    await expect(sync).rejects.toThrow();
    await gone;
    expect(fds()).toBe(before);
    state.close();
  });

  it("takes a large file's extended attributes from the descriptor its content is read from", async () => {
    const { src, dst } = emptyTrees();
    const big = path.join(src, 'big');
    fs.writeFileSync(big, distinctBytes(3 << 20));
    ferryFs.setXattr(big, 'user.tag', Buffer.from('mine'));
    const state = new SqliteSyncState(path.join(dir, 'state.db'));
    await pass(src, dst, state);
    expect(ferryFs.getXattr(path.join(dst, 'big'), 'user.tag').toString()).toBe('mine');
    // the descriptor's attributes, even once another file has taken the path
    const fd = ferryFs.openSource(big);
    const other = path.join(src, 'other');
    fs.writeFileSync(other, 'x');
    ferryFs.setXattr(other, 'user.tag', Buffer.from('other'));
    fs.renameSync(other, big);
    expect(xattrsOf(fd)).toEqual([{ name: 'user.tag', value: Buffer.from('mine').toString('base64') }]);
    fs.closeSync(fd);
    // changed by blocks in a sync: the attributes travel with the entry as read from its descriptor
    fs.writeFileSync(big, distinctBytes(3 << 20));
    ferryFs.setXattr(big, 'user.tag', Buffer.from('changed'));
    await pass(src, dst, state);
    expect(ferryFs.getXattr(path.join(dst, 'big'), 'user.tag').toString()).toBe('changed');
    expect(compareTrees(src, dst)).toEqual([]);
    state.close();
  });

  it('copies a tree whose root is given through a symlink (resolved once, not refused as a swapped path)', async () => {
    const { src, dst } = emptyTrees();
    fs.mkdirSync(path.join(src, 'etc'));
    fs.writeFileSync(path.join(src, 'etc/small'), 'small');
    fs.writeFileSync(path.join(src, 'etc/large'), distinctBytes(3 << 20));
    fs.symlinkSync(src, path.join(dir, 'src-link'));
    const state = new SqliteSyncState(path.join(dir, 'state.db'));
    const first = await pass(path.join(dir, 'src-link'), dst, state);
    expect(first.sent.changedSinceScan).toBe(0);
    expect(compareTrees(src, dst)).toEqual([]);
    state.close();
  });

  it('replaces a directory by a file and a file by a directory', async () => {
    const src = path.join(dir, 'src');
    const dst = path.join(dir, 'dst');
    fs.mkdirSync(path.join(src, 'x/y'), { recursive: true });
    fs.writeFileSync(path.join(src, 'x/y/z'), 'z');
    fs.writeFileSync(path.join(src, 'f'), 'f');
    fs.mkdirSync(dst);
    const state = new SqliteSyncState(path.join(dir, 'state.db'));
    await pass(src, dst, state);
    fs.rmSync(path.join(src, 'x'), { recursive: true });
    fs.writeFileSync(path.join(src, 'x'), 'now a file');
    fs.rmSync(path.join(src, 'f'));
    fs.mkdirSync(path.join(src, 'f'));
    fs.writeFileSync(path.join(src, 'f/inside'), 'i');
    await pass(src, dst, state);
    expect(compareTrees(src, dst)).toEqual([]);
    state.close();
  });

  it('leaves sync-only exclusions as the full copy made them: not updated, not deleted', async () => {
    const src = path.join(dir, 'src');
    const dst = path.join(dir, 'dst');
    fs.mkdirSync(path.join(src, 'var/log'), { recursive: true });
    fs.mkdirSync(path.join(src, 'var/log-other'), { recursive: true });
    fs.writeFileSync(path.join(src, 'var/log/a.log'), 'first');
    fs.writeFileSync(path.join(src, 'var/log/b.log'), 'second');
    fs.writeFileSync(path.join(src, 'var/log-other/c'), 'c');
    fs.mkdirSync(dst);
    const state = new SqliteSyncState(path.join(dir, 'state.db'));
    await pass(src, dst, state);
    fs.appendFileSync(path.join(src, 'var/log/a.log'), ' and more');
    fs.rmSync(path.join(src, 'var/log/b.log'));
    fs.writeFileSync(path.join(src, 'var/log-other/c'), 'changed');
    const sync = await pass(src, dst, state, [], ['/var/log']);
    expect(fs.readFileSync(path.join(dst, 'var/log/a.log'), 'utf8')).toBe('first');
    expect(fs.readFileSync(path.join(dst, 'var/log/b.log'), 'utf8')).toBe('second');
    expect(fs.readFileSync(path.join(dst, 'var/log-other/c'), 'utf8')).toBe('changed');
    expect(sync.sent.deleted).toBe(0);
    // without the exclusion the next sync catches up
    await pass(src, dst, state);
    expect(compareTrees(src, dst)).toEqual([]);
    state.close();
  });

  it('leaves excluded paths out of the copy', async () => {
    const src = path.join(dir, 'src');
    const dst = path.join(dir, 'dst');
    fs.mkdirSync(path.join(src, 'keep'), { recursive: true });
    fs.mkdirSync(path.join(src, 'var/cache'), { recursive: true });
    fs.writeFileSync(path.join(src, 'var/cache/big'), 'x');
    fs.writeFileSync(path.join(src, 'keep/a'), 'a');
    fs.mkdirSync(dst);
    const state = new SqliteSyncState(path.join(dir, 'state.db'));
    await pass(src, dst, state, ['/var/cache']);
    expect(fs.existsSync(path.join(dst, 'keep/a'))).toBe(true);
    expect(fs.existsSync(path.join(dst, 'var'))).toBe(true);
    expect(fs.existsSync(path.join(dst, 'var/cache'))).toBe(false);
    state.close();
  });

  it('sends renamed files and directories as links to what the target holds, not their content', async () => {
    const src = path.join(dir, 'src');
    const dst = path.join(dir, 'dst');
    fs.mkdirSync(path.join(src, 'data/old-dir'), { recursive: true });
    fs.mkdirSync(dst);
    const big = Buffer.alloc(3 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
    fs.writeFileSync(path.join(src, 'data/db.bin'), big);
    for (let i = 0; i < 20; i++)
      fs.writeFileSync(path.join(src, `data/old-dir/f${i}`), big.subarray(i * 1000, i * 1000 + 50_000));
    const state = new SqliteSyncState(path.join(dir, 'state.db'));
    await pass(src, dst, state);
    fs.renameSync(path.join(src, 'data/db.bin'), path.join(src, 'data/db-2026.bin'));
    fs.renameSync(path.join(src, 'data/old-dir'), path.join(src, 'data/new-dir'));
    const renamed = await pass(src, dst, state);
    expect(compareTrees(src, dst)).toEqual([]);
    expect(renamed.sent.bytesSent).toBe(0); // 4 MiB of content moved without being sent
    expect(renamed.sent.deleted).toBe(22); // the old names: 20 files, the old directory, db.bin

    // the target lost the old copy meanwhile: the link is refused, the next pass sends content
    fs.renameSync(path.join(src, 'data/db-2026.bin'), path.join(src, 'data/db-final.bin'));
    fs.rmSync(path.join(dst, 'data/db-2026.bin'));
    const refused = await pass(src, dst, state);
    expect(refused.sent.rejected).toBe(1);
    const full = await pass(src, dst, state);
    expect(full.sent.bytesSent).toBe(big.length);
    expect(compareTrees(src, dst)).toEqual([]);
    state.close();
  });

  it.each(HASHING)(
    'sends only the changed blocks of a large file, against the copy the target holds (%i: %s)',
    async (threads) => {
      configureHashing(threads);
      const { src, dst } = emptyTrees();
      const MiB = 1024 * 1024;
      const data = distinctBytes(8 * MiB);
      const file = path.join(src, 'db.bin');
      fs.writeFileSync(file, data);
      const state = new SqliteSyncState(path.join(dir, 'state.db'));
      await pass(src, dst, state);
      // two pages rewritten in place, then 100 KiB appended
      const fd = fs.openSync(file, 'r+');
      fs.writeSync(fd, Buffer.alloc(4096, 0xaa), 0, 4096, 3 * MiB + 10);
      fs.writeSync(fd, Buffer.alloc(4096, 0xbb), 0, 4096, 6 * MiB);
      fs.writeSync(fd, Buffer.alloc(100 * 1024, 0xcc), 0, 100 * 1024, 8 * MiB);
      fs.closeSync(fd);
      const changed = await pass(src, dst, state);
      expect(compareTrees(src, dst)).toEqual([]);
      expect(changed.sent.entriesSent).toBeGreaterThanOrEqual(1);
      expect(changed.sent.bytesSent).toBeLessThanOrEqual(3 * 64 * 1024 + 100 * 1024);
      // shrinking works too
      fs.truncateSync(file, 5 * MiB + 7);
      const shrunk = await pass(src, dst, state);
      expect(compareTrees(src, dst)).toEqual([]);
      expect(shrunk.sent.bytesSent).toBeLessThanOrEqual(64 * 1024);
      // the target's copy vanished: everything is sent, still right
      fs.rmSync(path.join(dst, 'db.bin'));
      fs.appendFileSync(file, 'x');
      const whole = await pass(src, dst, state);
      expect(whole.sent.bytesSent).toBe(5 * MiB + 8);
      expect(compareTrees(src, dst)).toEqual([]);
      state.close();
    },
  );

  it("continues an interrupted changed-block transfer from the target's kept partial file, still by blocks", async () => {
    const MiB = 1024 * 1024;
    const { src, dst, file, original, state } = await copiedOnce('db.bin', 48 * MiB);
    // 1000 bytes inserted near the start: the rest of the 48 MiB goes as COPY frames
    fs.writeFileSync(file, inserted1000(original));
    const files = { inflightFile: path.join(dir, 'inflight'), journalFile: path.join(dir, 'partial') };
    const syncWith = async (writer: TreeWriter, resume?: ReturnType<TreeWriter['resumable']>) => {
      const [a, b] = duplexPair({ pieceBytes: 16 * 1024 });
      const progress = { bytes: 0, files: 0, bytesSent: 0 };
      const [sent, received] = await Promise.allSettled([
        runSendPass({
          session: new Session(a),
          root: src,
          excludes: [],
          state,
          progress,
          detectRenames: true,
          ...(resume ? { resume } : {}),
        }),
        receivePass(new Session(b), writer, log),
      ]);
      writer.close();
      return { sent, received, progress };
    };
    // the target fails in its fourth COPY (of 64 KiB, then three of up to 16 MiB), once the
    // checkpoint of the new file the third one started is on disk (as a target killed there
    // would have left it)
    const first = await TreeWriter.open(dst, log, files);
    const copy = first.copy.bind(first);
    let copies = 0;
    first.copy = async (c) => {
      if (++copies === 4) {
        const journaled = () =>
          fs.existsSync(files.journalFile) && fs.readFileSync(files.journalFile, 'utf8').includes('"offset"');
        for (let i = 0; i < 1000 && !journaled(); i++) await new Promise((r) => setTimeout(r, 10));
        throw new FerryError('FERRY_CONNECTION_LOST', 'the target went away');
      }
      return copy(c);
    };
    const cut = await syncWith(first);
    expect(cut.sent.status).toBe('rejected');
    expect(cut.received.status).toBe('rejected');
    // the next target process finds the partial file and the agent continues it
    const second = await TreeWriter.open(dst, log, files);
    const resume = second.resumable();
    expect(resume).toMatchObject({ path: 'db.bin', size: 48 * MiB + 1000 });
    expect(resume!.offset).toBeGreaterThanOrEqual(4 * MiB);
    const resumed = await syncWith(second, resume);
    expect(resumed.sent.status).toBe('fulfilled');
    expect(compareTrees(src, dst)).toEqual([]);
    // what follows the kept part was found in the old copy: not resent (it was 40+ MiB)
    expect(resumed.progress.bytesSent).toBeLessThanOrEqual(64 * 1024);
    state.close();
  });

  it("finds the target's blocks where inserted or removed bytes shifted them, and sends little more than the change", async () => {
    const MiB = 1024 * 1024;
    const { src, dst, file, original, state } = await copiedOnce('dump.sql', 12 * MiB);
    // 1000 bytes inserted near the start: every block after them has moved by 1000 bytes
    const inserted = inserted1000(original);
    fs.writeFileSync(file, inserted);
    const shifted = await pass(src, dst, state);
    expect(compareTrees(src, dst)).toEqual([]);
    // the block before it goes as a COPY in place, the 190 blocks after it as one more
    // (runs of blocks join, up to 16 MiB a frame)
    expect(shifted.frames.get(FrameType.COPY)).toBe(2);
    // the block holding the insertion and the short tail, not 12 MiB
    expect(shifted.sent.bytesSent).toBeLessThanOrEqual(2 * 64 * 1024 + 1000);
    expect(shifted.sent.bytesMatched).toBeGreaterThan(12 * MiB - 2 * 64 * 1024);
    // 5000 bytes removed in the middle and a 3 MiB stretch moved to the end
    const removed = Buffer.concat([inserted.subarray(0, 6 * MiB), inserted.subarray(6 * MiB + 5000)]);
    const moved = Buffer.concat([
      removed.subarray(0, 2 * MiB),
      removed.subarray(5 * MiB),
      removed.subarray(2 * MiB, 5 * MiB),
    ]);
    fs.writeFileSync(file, moved);
    const again = await pass(src, dst, state);
    expect(compareTrees(src, dst)).toEqual([]);
    expect(again.sent.bytesSent).toBeLessThanOrEqual(6 * 64 * 1024);
    // nothing in common: all of it goes as DATA, none as COPY, and still arrives whole
    fs.writeFileSync(file, distinctBytes(12 * MiB).reverse());
    const fresh = await pass(src, dst, state);
    expect(compareTrees(src, dst)).toEqual([]);
    expect(fresh.frames.get(FrameType.COPY) ?? 0).toBe(0);
    expect(fresh.sent.bytesSent).toBe(12 * MiB);
    state.close();
  });
});

describe.each([
  ['in FILES frames', false],
  ['with compressed DATA: in frames of their own', true],
])('small files grown by appends (%s)', (_how, compress) => {
  it('sends a small file that only grew by appends as its new bytes, and anything else that changed whole', async () => {
    const { src, dst, file: log, original, state } = await copiedOnce('app.log', 40_000);
    const tiny = path.join(src, 'tiny.log'); // below APPEND_FROM_BYTES: always whole
    const rewritten = path.join(src, 'rewritten.log');
    fs.writeFileSync(tiny, distinctBytes(4000));
    fs.writeFileSync(rewritten, original);
    await pass(src, dst, state, [], [], undefined, undefined, { compress });
    fs.appendFileSync(log, Buffer.alloc(1000, 0x61));
    fs.appendFileSync(tiny, Buffer.alloc(1000, 0x62));
    // grown, but its first bytes changed too
    fs.writeFileSync(
      rewritten,
      Buffer.concat([Buffer.alloc(4096, 0x63), original.subarray(4096), Buffer.alloc(1000)]),
    );
    const grown = await pass(src, dst, state, [], [], undefined, undefined, { compress });
    expect(compareTrees(src, dst)).toEqual([]);
    expect(grown.sent.appended).toBe(1);
    expect(grown.sent.bytesSent).toBe(1000 + 5000 + 41_000);
    expect(grown.sent.bytesMatched).toBe(40_000);
    if (compress) {
      // with DATA compressed, each file in frames of its own: the grown one's DATA holds its new bytes
      expect(grown.frames.get(FrameType.ENTRY)).toBe(3);
      expect(grown.frames.get(FrameType.FILE_END)).toBe(3);
    } else {
      // the appended bytes in the FILES frame with the other files, no frame of their own
      expect(grown.frames.get(FrameType.FILES)).toBe(1);
      expect(grown.frames.get(FrameType.ENTRY) ?? 0).toBe(0);
    }
    expect(grown.sent.rejected).toBe(0);
    // what was recorded is the grown file's: the next appends go the same way
    fs.appendFileSync(log, Buffer.alloc(700, 0x64));
    const again = await pass(src, dst, state, [], [], undefined, undefined, { compress });
    expect(compareTrees(src, dst)).toEqual([]);
    expect(again.sent).toMatchObject({ appended: 1, bytesSent: 700, bytesMatched: 41_000, rejected: 0 });
    // a file renamed keeps what is known of its content
    fs.renameSync(log, path.join(src, 'app.log.1'));
    await pass(src, dst, state, [], [], undefined, undefined, { compress });
    fs.appendFileSync(path.join(src, 'app.log.1'), Buffer.alloc(300, 0x65));
    const renamed = await pass(src, dst, state, [], [], undefined, undefined, { compress });
    expect(compareTrees(src, dst)).toEqual([]);
    expect(renamed.sent).toMatchObject({ appended: 1, bytesSent: 300 });
    state.close();
  });

  it("completes 40 appended files of 600 KB in one frame from more of the target's copies than it reads at once", async () => {
    const { src, dst } = emptyTrees();
    const state = new SqliteSyncState(path.join(dir, 'state.db'));
    const logs = Array.from({ length: 40 }, (_, i) => path.join(src, `app${i}.log`));
    for (const [i, f] of logs.entries()) fs.writeFileSync(f, distinctBytes(600_000).fill(i, 0, 1));
    await pass(src, dst, state, [], [], undefined, undefined, { compress });
    for (const [i, f] of logs.entries()) fs.appendFileSync(f, Buffer.alloc(1000 + i, i));
    const grown = await pass(src, dst, state, [], [], undefined, undefined, { compress });
    expect(compareTrees(src, dst)).toEqual([]);
    expect(grown.sent).toMatchObject({ appended: 40, rejected: 0, bytesMatched: 40 * 600_000 });
    expect(grown.sent.bytesSent).toBe(40 * 1000 + (39 * 40) / 2);
    if (!compress) expect(grown.frames.get(FrameType.FILES)).toBe(1);
    state.close();
  });

  it.each([
    [
      'holds other bytes of the same length',
      (f: string) => fs.writeFileSync(f, Buffer.alloc(40_000, 0x78)),
      /content hash of app\.log does not match/,
    ],
    [
      'is shorter',
      (f: string) => fs.truncateSync(f, 39_000),
      /appended to: it holds 39000 bytes, not 40000$/,
    ],
    ['is longer', (f: string) => fs.appendFileSync(f, 'x'), /appended to: it holds more than 40000 bytes$/],
    ['is gone', (f: string) => fs.rmSync(f), /appended to: it cannot be (read|opened) \(ENOENT\)$/],
    [
      'is a symlink now',
      (f: string) => {
        fs.rmSync(f);
        fs.symlinkSync('/etc/passwd', f);
      },
      // never followed: refused as it is
      /appended to: it (cannot be (read|opened) \((ELOOP|EINVAL)\)|is not a regular file)$/,
    ],
  ])("sends a grown file whole, a pass later, when the target's copy %s", async (what, spoil, why) => {
    const { src, dst, file, state } = await copiedOnce('app.log', 40_000);
    const copy = path.join(dst, 'app.log');
    spoil(copy);
    const spoiled = () =>
      fs.lstatSync(copy, { throwIfNoEntry: false })?.isSymbolicLink()
        ? fs.readlinkSync(copy)
        : fs.existsSync(copy)
          ? fs.readFileSync(copy)
          : null;
    const before = spoiled();
    fs.appendFileSync(file, Buffer.alloc(1000, 0x61));
    const refused = await pass(src, dst, state, [], [], undefined, undefined, { compress });
    expect(refused.sent).toMatchObject({ appended: 1, rejected: 1 });
    expect(rejections).toEqual([expect.stringMatching(why)]);
    // nothing of the file was placed: the spoiled copy is as it was, nothing beside it
    expect(fs.readdirSync(dst)).toEqual(what === 'is gone' ? [] : ['app.log']);
    expect(spoiled()).toEqual(before);
    const whole = await pass(src, dst, state, [], [], undefined, undefined, { compress });
    expect(whole.sent).toMatchObject({ appended: 0, rejected: 0, bytesSent: 41_000 });
    expect(compareTrees(src, dst)).toEqual([]);
    state.close();
  });
});
