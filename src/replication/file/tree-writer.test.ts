import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Blake3Hasher } from '@napi-rs/blake-hash';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { duplexPair } from '../../../test/support/duplex-pair.js';
import { type EntryMessage, encodeFrame, encodePreface, FrameType, Session } from '../../protocol/index.js';
import { receivePass } from './receive.js';
import { TreeWriter } from './tree-writer.js';

let dir: string;
let root: string;
let outside: string;
const warnings: string[] = [];
const log = {
  warn: (_o: object, m: string) => warnings.push(m),
  error: (_o: object, m: string) => warnings.push(m),
};

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-writer-'));
  root = path.join(dir, 'root');
  outside = path.join(dir, 'outside');
  fs.mkdirSync(root);
  fs.mkdirSync(outside);
  fs.writeFileSync(path.join(outside, 'secret'), 'do not touch');
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const base = { mode: 0o644, uid: 0, gid: 0, mtimeNs: '1000000000000000000' };
const file = (seq: number, p: string, size: number): EntryMessage => ({
  seq,
  path: p,
  kind: 'file',
  size,
  ...base,
});
const hash = (b: Buffer) => {
  const h = new Blake3Hasher();
  h.update(b);
  return h.digest('hex');
};

function outsideUntouched() {
  expect(fs.readdirSync(outside)).toEqual(['secret']);
  expect(fs.readFileSync(path.join(outside, 'secret'), 'utf8')).toBe('do not touch');
}

describe('TreeWriter never writes outside its root', () => {
  it('refuses a file under a symlink that points out of the root', async () => {
    const w = await TreeWriter.open(root, log);
    await w.entry({ seq: 1, path: 'escape', kind: 'symlink', linkTarget: outside, ...base });
    await expect(w.entry(file(2, 'escape/secret', 3))).rejects.toMatchObject({ code: 'FERRY_UNSAFE_PATH' });
    await expect(w.entry({ seq: 3, path: 'escape/newdir', kind: 'dir', ...base })).rejects.toMatchObject({
      code: 'FERRY_UNSAFE_PATH',
    });
    await w.delete('escape/secret'); // a delete through a symlink is a no-op, not a deletion outside
    outsideUntouched();
  });

  it('refuses traversal paths', async () => {
    const w = await TreeWriter.open(root, log);
    for (const p of ['../outside/secret', '/etc/x', 'a/../../outside/x', 'a//b']) {
      await expect(w.entry(file(1, p, 1))).rejects.toMatchObject({ code: 'FERRY_UNSAFE_PATH' });
      await expect(w.delete(p)).rejects.toMatchObject({ code: 'FERRY_UNSAFE_PATH' });
    }
    outsideUntouched();
  });

  it('refuses a hard link to a file reached through a symlink', async () => {
    const w = await TreeWriter.open(root, log);
    await w.entry({ seq: 1, path: 'escape', kind: 'symlink', linkTarget: outside, ...base });
    await expect(
      w.entry({ seq: 2, path: 'stolen', kind: 'hardlink', linkTo: 'escape/secret', ...base }),
    ).rejects.toMatchObject({
      code: 'FERRY_UNSAFE_PATH',
    });
    expect(fs.existsSync(path.join(root, 'stolen'))).toBe(false);
  });

  it('replaces a symlink at the final path instead of writing through it', async () => {
    fs.symlinkSync(path.join(outside, 'secret'), path.join(root, 'victim'));
    const w = await TreeWriter.open(root, log);
    const data = Buffer.from('new');
    await w.entry(file(1, 'victim', 3));
    await w.data(0, data);
    await w.fileEnd(hash(data));
    expect(fs.lstatSync(path.join(root, 'victim')).isFile()).toBe(true);
    outsideUntouched();
  });

  it('rejects a file whose hash does not match and leaves nothing behind', async () => {
    const w = await TreeWriter.open(root, log);
    await w.entry(file(1, 'f', 3));
    await w.data(0, Buffer.from('abc'));
    await expect(w.fileEnd(hash(Buffer.from('abd')))).rejects.toMatchObject({
      code: 'FERRY_CHECKSUM_MISMATCH',
    });
    expect(fs.readdirSync(root)).toEqual([]);
  });

  it('refuses DATA beyond the announced size', async () => {
    const w = await TreeWriter.open(root, log);
    await w.entry(file(1, 'f', 2));
    await expect(w.data(0, Buffer.from('abc'))).rejects.toMatchObject({ code: 'FERRY_PROTOCOL_VIOLATION' });
    await w.abort();
    expect(fs.readdirSync(root)).toEqual([]);
  });
});

describe('changed-block transfers with COPY frames', () => {
  const B = 4096;
  const old = Buffer.concat([
    Buffer.alloc(B, 1),
    Buffer.alloc(B, 2),
    Buffer.alloc(B, 3),
    Buffer.from('tail'),
  ]);
  const delta = (seq: number, size: number): EntryMessage => ({
    ...file(seq, 'db', size),
    deltaBlockSize: B,
  });

  it('sums the copy it holds (strong and weak) and builds the new file from COPY, gaps and DATA', async () => {
    fs.writeFileSync(path.join(root, 'db'), old);
    const w = await TreeWriter.open(root, log);
    // new: block 2 moved to the front, 5 new bytes, block 1 shifted by those 5 (its old tail left out)
    const want = Buffer.concat([Buffer.alloc(B, 3), Buffer.from('12345'), Buffer.alloc(B, 2)]);
    const sums = await w.entry(delta(1, want.length));
    expect(sums).toMatchObject({ seq: 1, blockSize: B, size: old.length });
    expect(Buffer.from(sums!.hashes, 'base64').length).toBe(4 * 16);
    expect(Buffer.from(sums!.weak!, 'base64').length).toBe(4 * 4);
    await w.copy({ offset: 0, from: 2 * B, length: B });
    await w.data(B, Buffer.from('12345'));
    await w.copy({ offset: B + 5, from: B, length: B });
    await w.fileEnd(hash(want));
    await w.commit();
    expect(fs.readFileSync(path.join(root, 'db')).equals(want)).toBe(true);
  });

  it('refuses a COPY outside either file, out of order, or without a previous copy, and writes nothing', async () => {
    fs.writeFileSync(path.join(root, 'db'), old);
    const bad = [
      { offset: 0, from: old.length - 10, length: 11 }, // past the previous copy
      { offset: 3 * B, from: 0, length: B + 1 }, // past the new file's size
      { offset: 2 * B, from: 0, length: B }, // then one before it
    ];
    for (const [i, c] of bad.entries()) {
      const w = await TreeWriter.open(root, log);
      await w.entry(delta(1, 4 * B));
      if (i === 2) await w.copy(c);
      const again = i === 2 ? { offset: B, from: 0, length: B } : c;
      await expect(w.copy(again)).rejects.toMatchObject({ code: 'FERRY_PROTOCOL_VIOLATION' });
      await w.abort();
      w.close();
    }
    // a file sent whole has no previous copy to take from
    const w = await TreeWriter.open(root, log);
    await w.entry(file(1, 'db', 2 * B));
    await expect(w.copy({ offset: 0, from: 0, length: B })).rejects.toMatchObject({
      code: 'FERRY_PROTOCOL_VIOLATION',
    });
    await w.abort();
    w.close();
    // nor a file sent as bytes appended to its copy: that copy fills what precedes them, no more
    const a = await TreeWriter.open(root, log);
    await a.entry({ ...file(1, 'db', old.length + 10), appendFrom: old.length });
    await expect(a.copy({ offset: 0, from: 0, length: B })).rejects.toMatchObject({
      code: 'FERRY_PROTOCOL_VIOLATION',
    });
    await a.abort();
    a.close();
    expect(fs.readdirSync(root)).toEqual(['db']);
    expect(fs.readFileSync(path.join(root, 'db')).equals(old)).toBe(true);
    outsideUntouched();
  });
});

describe('TreeWriter after a crash', () => {
  it('removes the temporary file an interrupted transfer left in the tree', async () => {
    const inflight = path.join(dir, 'inflight');
    const w = await TreeWriter.open(root, log, { inflightFile: inflight });
    await w.entry(file(1, 'big', 10));
    await w.data(0, Buffer.from('12345'));
    // the process dies here: no fileEnd, no abort
    expect(fs.readdirSync(root).some((n) => n.startsWith('.ferry-tmp-'))).toBe(true);
    await TreeWriter.open(root, log, { inflightFile: inflight });
    expect(fs.readdirSync(root)).toEqual([]);
  });

  it('never removes a file outside the root named in a tampered in-flight record', async () => {
    const inflight = path.join(dir, 'inflight');
    fs.writeFileSync(inflight, path.join(outside, 'secret'));
    await TreeWriter.open(root, log, { inflightFile: inflight });
    outsideUntouched();
  });

  it('never follows a symlink in the tree to a file named in the in-flight record', async () => {
    // a directory of the tree that became a symlink out of it after its file was listed
    const realRoot = fs.realpathSync(root);
    fs.symlinkSync(outside, path.join(root, 'was-a-dir'));
    for (const name of ['unfinished', '.ferry-tmp-1-2-abc']) {
      fs.writeFileSync(path.join(outside, name), 'not ours');
      fs.chmodSync(path.join(outside, name), 0);
    }
    const inflight = path.join(dir, 'inflight');
    fs.writeFileSync(
      inflight,
      `+${JSON.stringify(`${realRoot}/was-a-dir/unfinished`)}\n${JSON.stringify(`${realRoot}/was-a-dir/.ferry-tmp-1-2-abc`)}\n`,
    );
    await TreeWriter.open(root, log, { inflightFile: inflight });
    for (const name of ['unfinished', '.ferry-tmp-1-2-abc']) {
      expect(fs.readFileSync(path.join(outside, name), 'utf8')).toBe('not ours');
      fs.rmSync(path.join(outside, name));
    }
    outsideUntouched();
  });
});

describe('receivePass against a hostile source', () => {
  it('answers a traversal path with an ERROR frame, closes, and writes nothing', async () => {
    const [a, b] = duplexPair();
    const w = await TreeWriter.open(root, log);
    const receiving = receivePass(new Session(b), w, log);
    const entry = Buffer.from(JSON.stringify(file(1, '../outside/secret', 4)));
    a.write(Buffer.concat([encodePreface(), encodeFrame(FrameType.ENTRY, entry)]));
    const frames: Buffer[] = [];
    a.on('data', (c: Buffer) => frames.push(c));
    await expect(receiving).rejects.toMatchObject({ code: 'FERRY_UNSAFE_PATH' });
    await new Promise((r) => setTimeout(r, 20));
    expect(Buffer.concat(frames).includes(Buffer.from('FERRY_UNSAFE_PATH'))).toBe(true);
    expect(warnings.some((m) => m.includes('unsafe path'))).toBe(true);
    outsideUntouched();
    expect(fs.readdirSync(root)).toEqual([]);
  });
});

describe('a sparse file whose holes are left out of its hash (holesUnhashed)', () => {
  const MiB = 1 << 20;
  const size = 64 * MiB;
  const chunks = [
    { offset: 0, data: Buffer.alloc(4096, 1) },
    { offset: 32 * MiB, data: Buffer.alloc(MiB, 2) },
    { offset: size - 4096, data: Buffer.alloc(4096, 3) },
  ];
  /** The hash as the source makes it: offset, length and bytes of each chunk, then the size; written out here rather than with the helpers under test. */
  const sentHash = (parts: { offset: number; data: Buffer }[], total: number) => {
    const h = new Blake3Hasher();
    for (const c of parts) {
      const head = Buffer.alloc(16);
      head.writeBigUInt64BE(BigInt(c.offset), 0);
      head.writeBigUInt64BE(BigInt(c.data.length), 8);
      h.update(head);
      h.update(c.data);
    }
    const tail = Buffer.alloc(8);
    tail.writeBigUInt64BE(BigInt(total), 0);
    h.update(tail);
    return h.digest('hex');
  };
  const send = async (w: TreeWriter, seq: number, rel: string, parts: typeof chunks, digest: string) => {
    await w.entry({ ...file(seq, rel, size), holesUnhashed: true });
    for (const c of parts) await w.data(c.offset, c.data);
    await w.fileEnd(digest);
  };

  it('writes the chunks at their offsets, hashes none of the holes, and refuses a chunk moved or a hash of the holes', async () => {
    const w = await TreeWriter.open(root, log);
    await send(w, 1, 'disk.img', chunks, sentHash(chunks, size));
    const got = fs.readFileSync(path.join(root, 'disk.img'));
    expect(got.length).toBe(size);
    for (const c of chunks)
      expect(got.subarray(c.offset, c.offset + c.data.length).equals(c.data)).toBe(true);
    expect(got.subarray(4096, 32 * MiB).equals(Buffer.alloc(32 * MiB - 4096))).toBe(true);
    expect(w.holeBytes).toEqual({ hashed: 0, skipped: size - MiB - 8192 });
    // the same bytes one block further on: the content differs, and so does the hash
    const moved = [chunks[0]!, { ...chunks[1]!, offset: 32 * MiB + 4096 }, chunks[2]!];
    await expect(send(w, 2, 'moved.img', moved, sentHash(chunks, size))).rejects.toMatchObject({
      code: 'FERRY_CHECKSUM_MISMATCH',
    });
    // the whole content's hash (holes as zeros) is not what this mode compares
    await expect(send(w, 3, 'whole.img', chunks, hash(got))).rejects.toMatchObject({
      code: 'FERRY_CHECKSUM_MISMATCH',
    });
    await w.commit();
    expect(fs.readdirSync(root)).toEqual(['disk.img']);
  });
});

describe('TreeWriter keeps a checkpointed large file for resuming', () => {
  const MiB = 1 << 20;
  const content = Buffer.alloc(24 * MiB);
  for (let i = 0; i < content.length; i += 4) content.writeUInt32LE((i * 2654435761) >>> 0, i);
  const opts = () => ({ inflightFile: path.join(dir, 'inflight'), journalFile: path.join(dir, 'partial') });
  const tmpFiles = () => fs.readdirSync(root).filter((n) => n.startsWith('.ferry-tmp-'));

  async function writeUntilCheckpoint(w: TreeWriter, upTo: number) {
    await w.entry(file(1, 'big.bin', content.length));
    for (let at = 0; at < upTo; at += MiB) await w.data(at, content.subarray(at, at + MiB));
    // the checkpoint runs in the background; the next DATA frames give it time to finish
    for (let i = 0; i < 50 && !fs.readFileSync(path.join(dir, 'partial'), 'utf8').includes('offset'); i++)
      await new Promise((r) => setTimeout(r, 20));
  }

  it('continues from the journaled offset after the connection was lost, and the hash covers the whole file', async () => {
    const w1 = await TreeWriter.open(root, log, opts());
    await writeUntilCheckpoint(w1, 14 * MiB);
    await w1.abort();
    w1.close();
    expect(tmpFiles()).toHaveLength(1);

    const w2 = await TreeWriter.open(root, log, opts());
    const r = w2.resumable();
    expect(r).toMatchObject({ path: 'big.bin', size: content.length, mtimeNs: base.mtimeNs });
    expect(r!.offset).toBeGreaterThanOrEqual(4 * MiB);
    expect(r!.offset).toBeLessThanOrEqual(14 * MiB);
    await w2.entry({ ...file(1, 'big.bin', content.length), resumeFrom: r!.offset });
    for (let at = r!.offset; at < content.length; at += MiB)
      await w2.data(at, content.subarray(at, Math.min(content.length, at + MiB)));
    await w2.fileEnd(hash(content));
    await w2.commit();
    w2.close();
    expect(fs.readFileSync(path.join(root, 'big.bin')).equals(content)).toBe(true);
    expect(tmpFiles()).toEqual([]);
    const w3 = await TreeWriter.open(root, log, opts());
    expect(w3.resumable()).toBeUndefined();
    w3.close();
  });

  it('keeps the partial file across a crash (no abort) and drops it when the source does not continue it', async () => {
    const w1 = await TreeWriter.open(root, log, opts());
    await writeUntilCheckpoint(w1, 10 * MiB); // then the process "dies": no abort, no close
    const w2 = await TreeWriter.open(root, log, opts());
    expect(w2.resumable()?.path).toBe('big.bin');
    await w2.entry(file(1, 'other', 3));
    await w2.data(0, Buffer.from('abc'));
    await w2.fileEnd(hash(Buffer.from('abc')));
    await w2.commit(); // big.bin was not continued: its partial copy goes
    w2.close();
    expect(tmpFiles()).toEqual([]);
    expect(fs.readdirSync(root)).toEqual(['other']);
  });

  it('refuses a resumeFrom that does not match the kept file', async () => {
    const w1 = await TreeWriter.open(root, log, opts());
    await writeUntilCheckpoint(w1, 10 * MiB);
    await w1.abort();
    w1.close();
    const w2 = await TreeWriter.open(root, log, opts());
    const r = w2.resumable()!;
    await expect(
      w2.entry({ ...file(1, 'big.bin', content.length + 1), resumeFrom: r.offset }),
    ).rejects.toMatchObject({ code: 'FERRY_PROTOCOL_VIOLATION' });
    await expect(
      w2.entry({ ...file(2, 'big.bin', content.length), resumeFrom: r.offset + 1 }),
    ).rejects.toMatchObject({
      code: 'FERRY_PROTOCOL_VIOLATION',
    });
    w2.close();
  });
});

describe('whole small files written in batches (FILE frames)', () => {
  const whole = (seq: number, p: string, content: string, extra: Partial<EntryMessage> = {}) => {
    const data = Buffer.from(content);
    return {
      type: 'file' as const,
      body: { ...file(seq, p, data.length), ...extra, hash: hash(data) },
      data,
    };
  };

  /** Queues one file; what comes back when it was accepted. */
  const queueOne = async (w: TreeWriter, m: ReturnType<typeof whole>) => {
    const [q, ...more] = await w.queueFiles([m]);
    if (!q || 'mismatch' in q || more.length) throw new Error('expected the file queued');
    return q;
  };

  it.each([
    ['FILE', 1],
    ['FILES', 7],
  ])(
    'places every file, acknowledges in order only what is in place, and rejects a corrupt one alone (%s frames)',
    async (_, perFrame) => {
      const [a, b] = duplexPair();
      const w = await TreeWriter.open(root, log, { inflightFile: path.join(dir, 'inflight') });
      fs.mkdirSync(path.join(root, 'was-a-dir', 'child'), { recursive: true });
      const receiving = receivePass(new Session(b), w, log);
      const source = new Session(a);
      await source.send({ type: 'entry', body: { seq: 1, path: 'd', kind: 'dir', ...base, mode: 0o755 } });
      const bad = whole(102, 'd/corrupt', 'what was read');
      const all = [
        ...Array.from({ length: 100 }, (_, i) => whole(2 + i, `d/f${i}`, `content ${i}`)),
        { ...bad, body: { ...bad.body, hash: hash(Buffer.from('something else')) } },
        whole(103, 'was-a-dir', 'a file replaces a directory'),
      ];
      for (let i = 0; i < all.length; i += perFrame) {
        const group = all.slice(i, i + perFrame);
        if (perFrame === 1) await source.send(group[0]!);
        else await source.send({ type: 'files', files: group.map(({ body, data }) => ({ body, data })) });
      }
      // a hard link to a file that may still be queued: the writer finishes the batch first
      await source.send({
        type: 'entry',
        body: { seq: 104, path: 'd/link', kind: 'hardlink', linkTo: 'd/f99', ...base },
      });
      await source.send({ type: 'commit', body: { seq: 105 } });
      const replies: { type: string; seq: number }[] = [];
      for await (const m of source.messages()) {
        if (m.type === 'ack' || m.type === 'reject' || m.type === 'committed')
          replies.push({ type: m.type, seq: m.body.seq });
        if (m.type === 'committed') break;
      }
      source.close(); // as the agent does once the pass committed
      await receiving;
      expect(replies.filter((r) => r.type === 'reject')).toEqual([{ type: 'reject', seq: 102 }]);
      const acks = replies.filter((r) => r.type === 'ack').map((r) => r.seq);
      expect(acks).toEqual([...acks].sort((x, y) => x - y));
      // the rejection left before any acknowledgement that covers it
      const rejectAt = replies.findIndex((r) => r.type === 'reject');
      expect(replies.slice(0, rejectAt).every((r) => r.type !== 'ack' || r.seq < 102)).toBe(true);
      expect(replies.at(-1)).toEqual({ type: 'committed', seq: 105 });
      for (let i = 0; i < 100; i++)
        expect(fs.readFileSync(path.join(root, `d/f${i}`), 'utf8')).toBe(`content ${i}`);
      expect(fs.existsSync(path.join(root, 'd/corrupt'))).toBe(false);
      expect(fs.readFileSync(path.join(root, 'was-a-dir'), 'utf8')).toBe('a file replaces a directory');
      expect(fs.statSync(path.join(root, 'd/link')).ino).toBe(fs.statSync(path.join(root, 'd/f99')).ino);
      expect(fs.statSync(path.join(root, 'd')).mode & 0o7777).toBe(0o755);
      const tmps = (d: string) => fs.readdirSync(d).filter((n) => n.startsWith('.ferry-tmp-'));
      expect([...tmps(root), ...tmps(path.join(root, 'd'))]).toEqual([]);
    },
  );

  it('names every file of the running batches, so that a crash leaves no temporary or unfinished file behind', async () => {
    const inflight = path.join(dir, 'inflight');
    const w = await TreeWriter.open(root, log, { inflightFile: inflight });
    const placed: Promise<void>[] = [];
    const namedNow = () => {
      const lines = fs
        .readFileSync(inflight, 'utf8')
        .split('\n')
        .map((l) => l.trim())
        .filter(Boolean);
      return {
        tmps: lines.filter((l) => !l.startsWith('+')).map((l) => JSON.parse(l) as string),
        inPlace: lines.filter((l) => l.startsWith('+')).map((l) => JSON.parse(l.slice(1)) as string),
      };
    };
    fs.writeFileSync(path.join(root, 'f3'), 'an older copy');
    for (let i = 0; i < 40; i++) {
      const m = whole(i + 1, `f${i}`, `x${i}`);
      placed.push((await queueOne(w, m)).placed);
      if (i === 31) {
        // the 32nd file filled the first batch, which started: all 32 are named before any is written
        const { tmps, inPlace } = namedNow();
        const seqs = tmps.map((n) => Number(/\.ferry-tmp-(\d+)-/.exec(path.basename(n))?.[1]));
        expect(seqs.sort((x, y) => x - y)).toEqual(Array.from({ length: 32 }, (_, k) => k + 1));
        expect(inPlace.sort()).toEqual(
          Array.from({ length: 32 }, (_, k) => path.join(w.root, `f${k}`)).sort(),
        );
      }
    }
    await Promise.all(placed);
    // f3 was there: through a temporary file; every other one written in place
    expect(w.smallWrites).toEqual({ inPlace: 39, renamed: 1 });
    expect(fs.readFileSync(path.join(root, 'f3'), 'utf8')).toBe('x3');
    const { tmps, inPlace } = namedNow();
    expect(tmps.length).toBeGreaterThanOrEqual(8);
    expect(tmps.every((n) => path.dirname(n) === w.root && path.basename(n).startsWith('.ferry-tmp-'))).toBe(
      true,
    );
    // as if the process died before those renames, and in the middle of writing one file in
    // place (its permission bits still 0000): the next writer removes those, keeps the rest
    for (const n of tmps) fs.writeFileSync(n, 'left behind');
    const unfinished = inPlace[0]!;
    fs.chmodSync(unfinished, 0);
    fs.writeFileSync(path.join(outside, 'unfinished-looking'), 'not ours');
    fs.chmodSync(path.join(outside, 'unfinished-looking'), 0);
    fs.appendFileSync(
      inflight,
      `\n${path.join(outside, 'secret')}\n${w.root}/../outside/secret\n+${JSON.stringify(path.join(outside, 'unfinished-looking'))}\n+${JSON.stringify(`${w.root}/../outside/unfinished-looking`)}\n`,
    );
    await TreeWriter.open(root, log, { inflightFile: inflight });
    expect(fs.readdirSync(root).filter((n) => n.startsWith('.ferry-tmp-'))).toEqual([]);
    expect(fs.existsSync(unfinished)).toBe(false);
    expect(fs.readdirSync(root)).toHaveLength(39);
    expect(fs.readFileSync(path.join(outside, 'unfinished-looking'), 'utf8')).toBe('not ours');
    fs.rmSync(path.join(outside, 'unfinished-looking'));
    outsideUntouched();
  });

  it('gives a frame its buffer back once, after its last file is written, whatever happened to the others', async () => {
    const w = await TreeWriter.open(root, log);
    let released = 0;
    // 70 files: three batches; the 21st's content differs from its hash
    const frame = Array.from({ length: 70 }, (_, i) => whole(i + 1, `g${i}`, `file ${i}`));
    frame[20] = { ...frame[20]!, body: { ...frame[20]!.body, hash: hash(Buffer.from('other')) } };
    const queued = await w.queueFiles(frame, () => released++);
    expect(queued.map((q) => ('mismatch' in q ? `x${q.seq}` : `${q.lastSeq}/${q.count}`))).toEqual([
      '20/20',
      'x21',
      '70/49',
    ]);
    const mismatch = queued[1] as { mismatch: { code: string } };
    expect(mismatch.mismatch.code).toBe('FERRY_CHECKSUM_MISMATCH');
    await Promise.all(queued.map((q) => ('placed' in q ? q.placed : undefined)));
    await w.drain();
    expect(released).toBe(1);
    expect(fs.existsSync(path.join(root, 'g20'))).toBe(false);
    expect(fs.readFileSync(path.join(root, 'g69'), 'utf8')).toBe('file 69');
    // a refused path stops the frame: the files before it are still written, the buffer given back once
    fs.symlinkSync(outside, path.join(root, 'out'));
    const stopped = [whole(71, 'h1', 'one'), whole(72, 'out/secret', 'no'), whole(73, 'h3', 'three')];
    await expect(w.queueFiles(stopped, () => released++)).rejects.toMatchObject({
      code: 'FERRY_UNSAFE_PATH',
    });
    await w.drain();
    expect(released).toBe(2);
    expect(fs.readFileSync(path.join(root, 'h1'), 'utf8')).toBe('one');
    expect(fs.existsSync(path.join(root, 'h3'))).toBe(false);
    outsideUntouched();
  });

  it('leaves no rejection unobserved when nobody waits for a failed batch (a pass that stopped early)', async () => {
    const w = await TreeWriter.open(root, log);
    fs.mkdirSync(path.join(root, 'gone'));
    const queued = await w.queueFiles([whole(1, 'gone/a', 'x'), whole(2, 'gone/b', 'y')]);
    fs.rmSync(path.join(root, 'gone'), { recursive: true }); // before the batch starts
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      await w.drain();
      await new Promise((r) => setTimeout(r, 50));
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    expect(unhandled).toEqual([]);
    expect(queued).toHaveLength(1);
    await expect((queued[0] as { placed: Promise<void> }).placed).rejects.toMatchObject({
      code: 'FERRY_TARGET_WRITE',
    });
  });

  it('sets modification times before 1970 and with every nanosecond digit', async () => {
    const w = await TreeWriter.open(root, log);
    const times = ['-1500000000', '0', '999999999', '1700000000123456789', '-86400000000001'];
    const frame = times.map((t, i) => whole(i + 1, `t${i}`, 'x', { mtimeNs: t }));
    for (const q of await w.queueFiles(frame)) if ('placed' in q) await q.placed;
    for (const [i, t] of times.entries())
      expect(fs.statSync(path.join(root, `t${i}`), { bigint: true }).mtimeNs).toBe(BigInt(t));
  });

  it('refuses a file whose parent is a symlink out of the root, before anything is queued', async () => {
    const w = await TreeWriter.open(root, log);
    await w.entry({ seq: 1, path: 'escape', kind: 'symlink', linkTarget: outside, ...base });
    const m = whole(2, 'escape/secret', 'overwrite');
    await expect(w.queueFiles([m])).rejects.toMatchObject({
      code: 'FERRY_UNSAFE_PATH',
    });
    await w.drain();
    outsideUntouched();
  });

  it('fails the pass with the path and the reason when the disk refuses a write', async () => {
    const w = await TreeWriter.open(root, log);
    const m = whole(1, 'ro/file', 'data');
    fs.mkdirSync(path.join(root, 'ro'));
    const { placed } = await queueOne(w, m);
    fs.rmSync(path.join(root, 'ro'), { recursive: true }); // the directory vanished under the writer
    await w.drain();
    await expect(placed).rejects.toMatchObject({
      code: 'FERRY_TARGET_WRITE',
      message: expect.stringContaining('ro/file (open): ENOENT'),
    });
  });
});
