import { closeSync } from 'node:fs';
import path from 'node:path';
import { FerryError, isErrorCode } from '../../errors/index.js';
import { lstatSync } from '../../native/fs-bytes.js';
import {
  type CommitMessage,
  type EntryMessage,
  MAX_DATA_BYTES,
  type ResumableFile,
  type Session,
  type SumsMessage,
  type WholeFileMessage,
} from '../../protocol/index.js';
import { BatchReader, type SmallRead } from './batch-read.js';
import { wholeFileHash, wholeFileHashes } from './content-hash.js';
import { sendDelta } from './delta.js';
import { changedAtRead, directoryXattrs, entryFromRecord, entryFromScan, isSparse } from './entry.js';
import { guardedSend } from './guarded-send.js';
import { readBuffers } from './read-buffers.js';
import { changedSinceScan, openScannedFile, readFileRegions, type ScannedFile } from './read-file.js';
import { canonicalRoot, normalizeExcludes, type ScannedEntry, scanTree, unreadableCode } from './scan.js';

/** What the source remembers of an entry the target has acknowledged. */
export interface SyncRecord {
  readonly path: string;
  readonly kind: string;
  readonly size: number;
  readonly mtimeNs: string;
  readonly ctimeNs: string;
  readonly ino: string;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /**
   * The first 16 bytes of the BLAKE3 of what the target was sent, in hex: kept for files of
   * APPEND_FROM_BYTES up to PREFETCH_FILE_BYTES sent whole, so that once such a file has
   * grown, a sync can tell from its first `size` bytes alone whether only appends changed it.
   */
  readonly hash?: string;
}

/**
 * The source's memory of what the target holds, per task. Contract:
 * - `beginPass()` returns a generation greater than any before;
 * - `markSeen(path, gen)` on an existing record keeps its values and only stamps `gen`;
 * - `record(rec, gen)` is called only after the target acknowledged the entry;
 * - `unseen(gen)` lists records not stamped with `gen`, children before their parents.
 */
export interface SyncStateStore {
  beginPass(): number;
  lookup(path: string): SyncRecord | undefined;
  markSeen(path: string, gen: number): void;
  /**
   * When the store holds exactly `rec` (every field equal), stamps `gen` on it and returns
   * true: how a pass recognises an unchanged entry, in one step.
   */
  markSeenIfUnchanged(rec: SyncRecord, gen: number): boolean;
  record(rec: SyncRecord, gen: number): void;
  remove(path: string): void;
  unseen(gen: number): Iterable<string>;
  /** Stamps `gen` on `prefix` and everything under it (paths a sync leaves as they are). */
  markSeenUnder(prefix: string, gen: number): void;
  /** Holds no record at all (optional; a pass that starts on an empty store skips its lookups). */
  isEmpty?(): boolean;
  /** Groups writes; called around batches for speed. */
  flush(): void;
  /** Records with this inode number (rename detection); optional. */
  byInode?(ino: string): SyncRecord[];
  /** Drops a record's content hash (the target refused what relied on it); optional. */
  forgetHash?(path: string): void;
}

export interface PassProgress {
  /** Bytes of file content handled (sent, or found unchanged). */
  bytes: number;
  files: number;
  bytesSent: number;
}

export interface PassResult {
  readonly entriesSent: number;
  readonly deleted: number;
  readonly rejected: number;
  readonly bytesSent: number;
  /**
   * Bytes of changed files found in the target's copies, not sent: blocks of large files
   * (COPY frames), and what a grown small file held before its appends (`appended`).
   */
  readonly bytesMatched: number;
  /** Files that grew by appends only, sent as their new bytes (`appendFrom` in FILE and FILES frames). */
  readonly appended: number;
  readonly unchanged: number;
  /** The most entries that were waiting for their ACK at once (at most maxUnacked). */
  readonly peakUnacked: number;
  /** Files gone, or no longer regular files, between the scan and their read (sent as DELETEs). */
  readonly changedSinceScan: number;
  /**
   * Files and directories that are there but could not be read (see unreadableCode): left
   * as the target has them, not recorded, so every later pass tries them again.
   */
  readonly unreadable: number;
  /** The first UNREADABLE_REPORTED of them, with the errno code each failed with. */
  readonly unreadableEntries: readonly UnreadableEntry[];
}

/** A source entry a pass could not read: its path under the root and the errno code. */
export interface UnreadableEntry {
  path: string;
  code: string;
}

/** Unreadable entries a pass names in its result, at most (it counts them all). */
export const UNREADABLE_REPORTED = 20;

/** The tree root's own owner, mode, extended attributes and time, for COMMIT (the root is no entry). */
function rootMeta(root: string): NonNullable<CommitMessage['root']> {
  const real = canonicalRoot(root);
  const st = lstatSync(real, { bigint: true });
  const xattrs = directoryXattrs(real);
  return {
    mode: Number(st.mode & 0o7777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
    mtimeNs: st.mtimeNs.toString(),
    ...(xattrs ? { xattrs } : {}),
  };
}

/** What the sync state records of a scanned entry. */
export function toRecord(e: ScannedEntry): SyncRecord {
  const st = e.stat;
  return {
    path: e.path,
    kind: e.kind,
    size: Number(st.size),
    mtimeNs: st.mtimeNs.toString(),
    ctimeNs: st.ctimeNs.toString(),
    ino: st.ino.toString(),
    mode: Number(st.mode),
    uid: Number(st.uid),
    gid: Number(st.gid),
  };
}

type Pending = { kind: 'put'; rec: SyncRecord; dir: boolean } | { kind: 'delete'; path: string };

/**
 * Whole files from this size have their content hash kept (SyncRecord.hash), to be sent
 * as their appended bytes once they grow: below it, a file costs little more to send whole.
 */
export const APPEND_FROM_BYTES = 8192;

/** What the sync state keeps of a content hash (wholeFileHash's hex): its first 16 bytes. */
const keptHash = (hash: string) => hash.slice(0, 32);

/**
 * A small file read whole (`data`): its hash, and where it continues the copy the target
 * holds when only appends changed it (`from`: the recorded size, if the copy's kept hash is
 * the hash of `data`'s first that many bytes; else 0, and the file goes whole). Both hashes
 * come from one pass over the bytes.
 */
function hashAndAppend(prev: SyncRecord | undefined, data: Buffer): { hash: string; from: number } {
  if (prev?.kind !== 'file' || !prev.hash || prev.size < APPEND_FROM_BYTES || data.length <= prev.size)
    return { hash: wholeFileHash(data), from: 0 };
  const { hash, prefixHash } = wholeFileHashes(data, prev.size);
  return { hash, from: keptHash(prefixHash) === prev.hash ? prev.size : 0 };
}

/** An entry the pass will send, with the content of a small file already being read. */
interface Planned {
  e: ScannedEntry;
  cur: SyncRecord;
  firstPath?: string;
  /** The file was renamed from this record's path, which the target holds: sent as a link, not content. */
  renamedFrom?: SyncRecord;
  /** What the target holds at this path, when a previous pass sent it. */
  prev?: SyncRecord;
  /** A small file's content, being read in a batch. */
  content?: SmallRead;
}

const DELTA_FROM = 1 << 20;
/** Blocks of one file in a changed-block transfer, at most: its SUMS (strong and weak sums) must fit in one frame. */
const MAX_BLOCKS = 32_768;

/** Block size for a changed-block transfer of this file, or 0 when it is sent whole. */
function deltaBlockSize(e: ScannedEntry): number {
  const size = Number(e.stat.size);
  if (e.kind !== 'file' || size < DELTA_FROM || isSparse(e)) return 0;
  let b = 64 * 1024;
  while (size / b > MAX_BLOCKS && b < 1 << 24) b *= 2;
  return size / b > MAX_BLOCKS ? 0 : b;
}

/**
 * Files up to this size are read whole, ahead of their turn, in batches (at most 256
 * files / 32 MiB ahead: enough batches in flight that a cold disk sees several requests
 * at once, which nearly halves the time to read a tree of small files).
 */
const PREFETCH_FILE_BYTES = 1 << 20;
const PREFETCH_FILES = 256;
/**
 * Entries sent and not yet acknowledged, at most. Bytes in flight are bounded by the
 * session's queue, but a tree of empty files puts tens of thousands of entries in a few
 * MiB: this keeps the records waiting for their ACK bounded whatever the speeds.
 */
const MAX_UNACKED = 8192;
const PREFETCH_BYTES = 32 << 20;
/** Content and entries of one FILES frame, at most (the frame limit is a little more). */
const FILES_FRAME_BYTES = MAX_DATA_BYTES;
const FILES_PER_FRAME = 256;

/**
 * At least the bytes of a whole file's entry as JSON: a character takes at most 6 (\u00XX),
 * and the fields other than path and xattrs fit in 512.
 */
function entryJsonBound(e: WholeFileMessage): number {
  let n = 512 + 6 * e.path.length;
  for (const x of e.xattrs ?? []) n += 32 + 6 * x.name.length + x.value.length;
  return n;
}

/**
 * Sends one replication pass over an established session: every entry that differs
 * from the sync state (all of them the first time), then deletions, then COMMIT; returns
 * when the target has COMMITTED. Entries the target rejects stay unrecorded, so the next
 * pass sends them again. Unchanged files are recognised from their stat alone.
 */
export function runSendPass(opts: SendPassOptions): Promise<PassResult> {
  // the buffers kept for reuse go when the pass ends: none held between syncs
  return sendPass(opts).finally(() => readBuffers.trim());
}

interface SendPassOptions {
  session: Session;
  root: string;
  excludes: readonly string[];
  emptyDirs?: readonly string[];
  state: SyncStateStore;
  progress: PassProgress;
  signal?: AbortSignal;
  /** Called for each file gone, or no longer a regular file, between the scan and its read. */
  onChangedSinceScan?: (rel: string) => void;
  /** Called for each file or directory there but unreadable (left as the target has it; see PassResult.unreadable). */
  onUnreadable?: (rel: string, code: string, message: string) => void;
  /**
   * Paths this pass leaves exactly as the target has them: neither sent nor deleted
   * (sync-only exclusions: copied by the full replication, not kept in step afterwards).
   */
  keep?: readonly string[];
  /** A partly received file the target kept: continued from its offset if it is still the same file. */
  resume?: ResumableFile;
  /**
   * Sync passes: look for renamed files (a new path whose inode the target already holds
   * elsewhere), and send changed large files block by block against the target's copy.
   */
  detectRenames?: boolean;
  /** Entries sent and not yet acknowledged, at most (default MAX_UNACKED). */
  maxUnacked?: number;
  /** Read files past the page cache where the file system allows it: small ones in batches, larger ones chunk by chunk (default on; see BatchReader, readFileRegions). */
  directIo?: boolean;
}

async function sendPass(opts: SendPassOptions): Promise<PassResult> {
  const { session, state, progress } = opts;
  const gen = state.beginPass();
  // A first full replication: nothing is recorded, and each path comes once per pass, so
  // no entry of this pass can be found in the store (two statements saved per entry).
  const fresh = state.isEmpty?.() ?? false;
  const keep = normalizeExcludes(opts.keep ?? []);
  for (const k of keep) state.markSeenUnder(k, gen);
  const pending = new Map<number, Pending>();
  let seq = 0;
  let rejected = 0;
  let sent = 0;
  let deleted = 0;
  let vanished = 0;
  let matched = 0;
  let appended = 0;
  const unreadable: UnreadableEntry[] = [];
  let unreadableCount = 0;
  let unchangedCount = 0;
  let commitSeq = -1;
  let settle!: () => void;
  let fail!: (e: unknown) => void;
  const committed = new Promise<void>((res, rej) => {
    settle = res;
    fail = rej;
  });
  committed.catch(() => {});

  // The target applies a directory's metadata only at COMMIT: a directory is recorded as
  // done when the pass commits, so an interrupted pass sends it again.
  const dirsAcked: SyncRecord[] = [];
  let wakeSender: (() => void) | null = null;
  const wake = () => {
    wakeSender?.();
    wakeSender = null;
  };
  const maxUnacked = opts.maxUnacked ?? MAX_UNACKED;
  let peakUnacked = 0;
  /** Waits while maxUnacked entries await their ACK (throws when the pass fails). */
  const roomForAck = async () => {
    while (pending.size >= maxUnacked)
      await Promise.race([
        new Promise<void>((resolve) => {
          wakeSender = resolve;
        }),
        committed,
      ]);
  };
  /** Notes an entry as awaiting its ACK; call roomForAck() first when pending.size >= maxUnacked. */
  const expectAck = (s: number, p: Pending) => {
    pending.set(s, p);
    if (pending.size > peakUnacked) peakUnacked = pending.size;
  };
  const acknowledge = (upTo: number) => {
    for (const [s, p] of pending) {
      if (s > upTo) break;
      if (p.kind === 'put' && p.dir) dirsAcked.push(p.rec);
      else if (p.kind === 'put') state.record(p.rec, gen);
      else state.remove(p.path);
      pending.delete(s);
    }
    wake();
  };

  const sumsWaiters = new Map<number, (s: SumsMessage) => void>();
  const reader = (async () => {
    for await (const msg of session.messages()) {
      if (msg.type === 'sums') sumsWaiters.get(msg.body.seq)?.(msg.body);
      else if (msg.type === 'ack') acknowledge(msg.body.seq);
      else if (msg.type === 'reject') {
        rejected++;
        // what the target refused may have relied on the copy it was thought to hold (an
        // append): the file goes whole next time
        const p = pending.get(msg.body.seq);
        if (p?.kind === 'put' && p.rec.hash) state.forgetHash?.(p.rec.path);
        pending.delete(msg.body.seq);
        wake();
      } else if (msg.type === 'committed' && msg.body.seq === commitSeq) {
        acknowledge(commitSeq);
        for (const rec of dirsAcked) state.record(rec, gen);
        settle();
        session.close();
      } else if (msg.type === 'error') {
        const code = isErrorCode(msg.body.code) ? msg.body.code : 'FERRY_TARGET_WRITE';
        throw new FerryError(code, `target: ${msg.body.message}`);
      }
    }
    if (commitSeq < 0 || pending.size > 0) {
      throw new FerryError(
        'FERRY_CONNECTION_LOST',
        'the target closed the data connection before the pass committed',
      );
    }
  })();
  // When the target reports an error or goes away, stop sending at once: the next send
  // fails, and the reader's error is the one reported.
  const send = guardedSend(session, reader);
  reader.catch(fail);

  const firstPathOfInode = new Map<string, string>();
  /** Paths dropped by dropChanged → the path sent since in place of each as its inode's first (null: none yet). */
  const droppedFirst = new Map<string, string | null>();
  const smallFiles = new BatchReader({ direct: opts.directIo ?? true });
  /**
   * The path the target holds a renamed file's content at: a recorded file with the same
   * inode, size, mtime, mode and owner whose path no longer exists on the source (so
   * nothing in this pass writes it; its DELETE comes after every entry).
   */
  const renameSource = (cur: SyncRecord): SyncRecord | undefined => {
    for (const old of state.byInode?.(cur.ino) ?? []) {
      if (old.path === cur.path || old.kind !== 'file') continue;
      if (old.size !== cur.size || old.mtimeNs !== cur.mtimeNs || old.mode !== cur.mode) continue;
      if (old.uid !== cur.uid || old.gid !== cur.gid) continue;
      if (lstatSync(path.join(opts.root, old.path), { throwIfNoEntry: false })) continue;
      return old;
    }
    return undefined;
  };
  const noteUnreadable = (rel: string, code: string, message: string) => {
    unreadableCount++;
    if (unreadable.length < UNREADABLE_REPORTED) unreadable.push({ path: rel, code });
    opts.onUnreadable?.(rel, code, message);
  };
  const abortIfAsked = () => {
    if (opts.signal?.aborted) throw new FerryError('FERRY_CONNECTION_LOST', 'the pass was stopped');
  };

  // Decides in scan order what must be sent; starts reading small files in the thread
  // pool so that disk latency overlaps with sending the files before them.
  async function* planned(): AsyncGenerator<Planned> {
    const scanOpts = {
      excludes: [...opts.excludes, ...keep],
      emptyDirs: opts.emptyDirs ?? [],
      // a directory that cannot be listed: what the target holds under it stays as it is
      onUnreadableDir: (rel: string, err: NodeJS.ErrnoException) => {
        state.markSeenUnder(rel, gen);
        noteUnreadable(rel, err.code!, err.message);
      },
    };
    for await (const e of scanTree(opts.root, scanOpts)) {
      abortIfAsked();
      const cur = toRecord(e);
      const inodeKey = e.kind !== 'dir' && e.stat.nlink > 1n ? `${e.stat.dev}:${e.stat.ino}` : undefined;
      const firstPath = inodeKey ? firstPathOfInode.get(inodeKey) : undefined;
      if (inodeKey && !firstPath) firstPathOfInode.set(inodeKey, e.path);
      if (!fresh && state.markSeenIfUnchanged(cur, gen)) {
        unchangedCount++;
        if (e.kind === 'file') {
          progress.bytes += cur.size;
          progress.files++;
        }
        continue;
      }
      const prev = fresh ? undefined : state.lookup(e.path);
      if (prev) state.markSeen(e.path, gen); // changed, still there: not to be deleted
      const renamedFrom =
        !prev && opts.detectRenames && e.kind === 'file' && !inodeKey ? renameSource(cur) : undefined;
      if (renamedFrom) {
        yield { e, cur, renamedFrom };
        continue;
      }
      const small = e.kind === 'file' && !firstPath && cur.size <= PREFETCH_FILE_BYTES && !isSparse(e);
      const item: Planned = { e, cur, ...(prev ? { prev } : {}), ...(firstPath ? { firstPath } : {}) };
      if (small) item.content = smallFiles.read(e.abs, cur.size);
      yield item;
    }
  }
  const source = planned();
  const window: Planned[] = [];
  let windowBytes = 0;
  let scanDone = false;
  const refill = async () => {
    while (!scanDone && window.length < PREFETCH_FILES && windowBytes < PREFETCH_BYTES) {
      const r = await source.next();
      if (r.done) scanDone = true;
      else {
        window.push(r.value);
        if (r.value.content) windowBytes += r.value.cur.size;
      }
    }
  };

  // Whole small files leave together, in FILES frames of up to FILES_FRAME_BYTES; anything
  // else sent goes after them (sendAfterFiles), so the target sees every entry in order.
  let files: { body: WholeFileMessage; data: Buffer }[] = [];
  // what the files' contents were read into: reused once the frame has been written
  let reads: SmallRead[] = [];
  let filesBytes = 0;
  const sendFiles = async () => {
    if (files.length === 0) return;
    const out = files;
    const read = reads;
    files = [];
    reads = [];
    filesBytes = 0;
    await send({
      type: 'files',
      files: out,
      release: () => {
        for (const r of read) r.release();
      },
    });
  };
  const sendAfterFiles = async (m: Parameters<Session['send']>[0]) => {
    await sendFiles();
    await send(m);
  };
  /**
   * The file (or symlink) at `rel` is gone since the scan, or is no longer what the scan
   * found (a symlink swapped in for a file is never read through): instead of its ENTRY, seq `s` becomes
   * a DELETE of the target's copy, so no stale content stays under that name; the next pass
   * sends whatever is there then.
   */
  const dropChanged = async (s: number, rel: string) => {
    if (!pending.has(s) && pending.size >= maxUnacked) {
      await sendFiles();
      await roomForAck();
    }
    pending.set(s, { kind: 'delete', path: rel });
    droppedFirst.set(rel, null);
    vanished++;
    opts.onChangedSinceScan?.(rel);
    await sendAfterFiles({ type: 'delete', body: { seq: s, path: rel } });
  };

  for (;;) {
    await refill();
    const p = window.shift();
    if (!p) break;
    if (p.content) windowBytes -= p.cur.size;
    const { e, cur } = p;
    seq++;
    if (p.content && !p.content.ready) {
      smallFiles.flush(); // a no-op unless this file's batch is still being filled
      // the disk is behind: what is ready goes meanwhile, once it is worth a frame
      if (filesBytes >= FILES_FRAME_BYTES / 4) await sendFiles();
      await p.content.done;
    }
    // a hard link whose first path was dropped (gone since the scan): the first of its
    // other paths sent since takes its place; if none was, this one is sent as the file
    while (p.firstPath !== undefined && droppedFirst.has(p.firstPath)) {
      const now = droppedFirst.get(p.firstPath);
      if (now) p.firstPath = now;
      else {
        droppedFirst.set(p.firstPath, e.path);
        delete p.firstPath;
      }
    }
    const whole = p.content ? p.content.result : null;
    let entry: EntryMessage;
    try {
      entry = p.renamedFrom
        ? {
            // a link to the target's copy: its attributes are that copy's
            ...(await entryFromScan(e, seq, undefined, { fileXattrs: false })),
            kind: 'hardlink',
            linkTo: p.renamedFrom.path,
            renamed: true,
          }
        : whole
          ? entryFromRecord(cur, seq, whole.xattrs)
          : await entryFromScan(e, seq, p.firstPath, { fileXattrs: false });
    } catch (err) {
      // a symlink removed, or replaced by something else, since the scan (readlink)
      if (!changedAtRead(err)) throw err;
      await dropChanged(seq, e.path);
      continue;
    }
    if (p.renamedFrom) delete entry.size;
    const data = whole?.data ?? null;
    if (data) entry.size = data.length; // what was read is what is sent and hashed
    if (pending.size >= maxUnacked) {
      await sendFiles(); // their ACKs are what the pass waits for
      await roomForAck();
    }
    // a small file's hash, kept with its record (SyncRecord.hash) where it may grow by appends;
    // a renamed file keeps the hash of the content it was renamed with
    // (small: on the event loop); grown by appends only, `from` is where its new bytes start
    const { hash, from } =
      entry.kind === 'file' && data
        ? hashAndAppend(opts.detectRenames ? p.prev : undefined, data)
        : { hash: undefined, from: 0 };
    const kept =
      hash && data!.length === cur.size && cur.size >= APPEND_FROM_BYTES
        ? keptHash(hash)
        : p.renamedFrom?.hash;
    expectAck(seq, { kind: 'put', rec: kept ? { ...cur, hash: kept } : cur, dir: entry.kind === 'dir' });
    // a small file travels in a FILES frame with the ones around it; a large file's ENTRY
    // is sent below, as it may carry resumeFrom or deltaBlockSize
    if (entry.kind !== 'file') await sendAfterFiles({ type: 'entry', body: entry });
    sent++;
    if (entry.kind === 'file' && data) {
      // grown by appends only: the target keeps its copy's bytes, and only the new ones travel
      const body = { ...entry, hash: hash!, ...(from > 0 ? { appendFrom: from } : {}) };
      const content = from > 0 ? data.subarray(from) : data;
      const room = content.length + entryJsonBound(body);
      const read = p.content!;
      if (room > FILES_FRAME_BYTES)
        await sendAfterFiles({ type: 'file', body, data: content, release: () => read.release() });
      else {
        if (filesBytes + room > FILES_FRAME_BYTES || files.length >= FILES_PER_FRAME) await sendFiles();
        files.push({ body, data: content });
        reads.push(read);
        filesBytes += room;
      }
      if (from > 0) {
        appended++;
        matched += from;
      }
      progress.bytes += data.length;
      progress.bytesSent += content.length;
      progress.files++;
    } else if (entry.kind === 'file') {
      let file: ScannedFile | undefined;
      let handedOver = false; // to readFileRegions, which closes it
      let entrySent = false;
      try {
        // Opened before its ENTRY goes, through no symlink: the ENTRY gives the file as it
        // is now (a log appended to since the scan), with the attributes of the very file read.
        file = openScannedFile(e.abs, { xattrs: true });
        entry.size = file.size;
        if (file.xattrs) entry.xattrs = file.xattrs;
        const r0 = opts.resume;
        // The target holds the beginning already: read and hash it (the end-to-end hash covers
        // the whole file) but send only what follows.
        const from =
          r0 && r0.path === entry.path && r0.size === entry.size && r0.mtimeNs === entry.mtimeNs
            ? r0.offset
            : 0;
        if (from > 0) entry.resumeFrom = from;
        const blockSize = opts.detectRenames && p.prev?.kind === 'file' ? deltaBlockSize(e) : 0;
        if (blockSize > 0) {
          // changed-block transfer: only the blocks that differ from the target's copy travel
          // (continuing a kept partial file too: what follows its end is found in the old copy)
          entry.deltaBlockSize = blockSize;
          const sums = new Promise<SumsMessage>((resolve, reject) => {
            sumsWaiters.set(seq, resolve);
            committed.catch(reject);
          });
          await sendAfterFiles({ type: 'entry', body: entry });
          entrySent = true;
          const s = await sums;
          sumsWaiters.delete(seq);
          const { hash, copied } = await sendDelta(
            file,
            {
              blockSize,
              size: s.size,
              strong: Buffer.from(s.hashes, 'base64'),
              weak: Buffer.from(s.weak ?? '', 'base64'),
            },
            send,
            // bytes read and sent counted as they go; read past the cache as a full copy reads
            { from, progress, direct: opts.directIo ?? true },
          );
          matched += copied;
          progress.files++;
          await send({ type: 'file-end', body: { seq, hash } });
          continue;
        }
        // a sparse file sent whole: its holes are hashed by neither side (see feedBeforeChunk)
        const sparse = isSparse(e);
        if (sparse && from === 0) entry.holesUnhashed = true;
        const { regions, done } = await readFileRegions(file, sparse, {
          direct: opts.directIo ?? true,
          hashHoles: entry.holesUnhashed !== true,
        });
        handedOver = true;
        await sendAfterFiles({ type: 'entry', body: entry });
        entrySent = true;
        let dataBytes = 0;
        for await (const r of regions) {
          const end = r.offset + r.data.length;
          if (end > from) {
            const skip = Math.max(0, from - r.offset);
            const part = skip > 0 ? r.data.subarray(skip) : r.data;
            await send({ type: 'data', offset: r.offset + skip, data: part, release: r.release });
            progress.bytesSent += part.length;
          } else r.release();
          dataBytes += r.data.length;
          progress.bytes += r.data.length;
          abortIfAsked();
        }
        const { hash, size } = await done();
        progress.bytes += Math.max(0, size - dataBytes); // holes count as done
        progress.files++;
        await send({ type: 'file-end', body: { seq, hash } });
      } catch (err) {
        // gone, or no longer a regular file, when it came to be opened
        if (changedSinceScan(err)) {
          await dropChanged(seq, entry.path);
          continue;
        }
        // There, but it cannot be opened or read to its end (refused, an I/O error): the
        // target keeps the copy it has and nothing is recorded, so the next pass tries
        // again; its other hard links are sent as the file. Once its ENTRY went, FILE_ABORT
        // tells the target to drop what came; before, its seq goes to the next entry.
        const code = unreadableCode(err);
        if (!code) throw err;
        pending.delete(seq);
        droppedFirst.set(entry.path, null);
        noteUnreadable(entry.path, code, (err as Error).message);
        if (entrySent) await send({ type: 'file-abort', body: { seq, code } });
        else seq--;
      } finally {
        // also when the pass fails while it waits for the target's sums
        if (file && !handedOver) closeSync(file.fd);
      }
    } else if (entry.kind === 'hardlink') {
      progress.files++;
      progress.bytes += cur.size;
    }
  }
  await sendFiles();
  state.flush();
  for (const path of state.unseen(gen)) {
    abortIfAsked();
    seq++;
    if (pending.size >= maxUnacked) await roomForAck();
    expectAck(seq, { kind: 'delete', path });
    await send({ type: 'delete', body: { seq, path } });
    deleted++;
  }
  commitSeq = ++seq;
  await send({ type: 'commit', body: { seq: commitSeq, root: rootMeta(opts.root) } });
  await committed;
  await reader.catch(() => {}); // the target closes after our end; its close is not an error now
  state.flush();
  return {
    entriesSent: sent,
    deleted,
    rejected,
    bytesSent: progress.bytesSent,
    bytesMatched: matched,
    appended,
    unchanged: unchangedCount,
    peakUnacked,
    changedSinceScan: vanished,
    unreadable: unreadableCount,
    unreadableEntries: unreadable,
  };
}
