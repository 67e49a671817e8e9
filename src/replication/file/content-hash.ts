import { createRequire } from 'node:module';
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { Blake3Hasher } from '@napi-rs/blake-hash';
import { FerryError } from '../../errors/index.js';

/**
 * The end-to-end BLAKE3 of a large file's content, computed either on the event loop or,
 * when hashing threads are configured, in a worker thread while the event loop goes on
 * reading, framing, encrypting and writing. Chunks must be fed in file order; the digest
 * is the same either way.
 *
 * The thread reads chunks from a fixed ring of shared-memory slots (SLOTS × 1 MiB, handed
 * to it once): update() copies the chunk into free slots (a memcpy on the event loop, a
 * fraction of hashing it there) and the thread gives each slot back once hashed. Nothing
 * is allocated per chunk, so neither thread's garbage collector has shared memory to find.
 */
export interface ContentHash {
  /**
   * Feeds the next bytes. A returned promise means every slot is taken: the chunk is not
   * copied yet, so it must stay unchanged, and the caller waits before feeding more.
   */
  update(chunk: Buffer): Promise<void> | undefined;
  /** The hex BLAKE3 of everything fed. Call once. */
  digest(): Promise<string>;
  /** Forgets the hash (an abandoned file); safe after digest and more than once. */
  discard(): void;
}

/** One hasher for every whole small file: the event loop hashes one file at a time. */
const wholeFileHasher = new Blake3Hasher();

/**
 * The end-to-end hash of a whole small file (FILE frames: both sides, on the event loop).
 * A reused hasher rather than `blake3()`, which returns each digest as a new native Buffer:
 * 2.0–2.2 µs a call instead of 3.8–3.9 for 1 KiB, 7.1–9.0 instead of 9.1–10.5 for 32 KiB
 * (this machine, 2026-11-27), for the same hex digest.
 */
export function wholeFileHash(data: Buffer): string {
  wholeFileHasher.reset();
  wholeFileHasher.update(data);
  return wholeFileHasher.digest('hex');
}

/**
 * wholeFileHash of `data` and of its first `prefix` bytes, in one pass over them: BLAKE3's
 * digest does not end the hasher, so the prefix's is taken on the way (a grown file checked
 * against the hash of the copy the target holds, then sent with its own).
 */
export function wholeFileHashes(data: Buffer, prefix: number): { hash: string; prefixHash: string } {
  wholeFileHasher.reset();
  wholeFileHasher.update(data.subarray(0, prefix));
  const prefixHash = wholeFileHasher.digest('hex');
  wholeFileHasher.update(data.subarray(prefix));
  return { hash: wholeFileHasher.digest('hex'), prefixHash };
}

const ZEROS = Buffer.alloc(1 << 20);

/**
 * A sparse file's hash without its holes (ENTRY `holesUnhashed`): each DATA chunk as sent is
 * fed as its offset and length (u64 each, big-endian) followed by its bytes, and the file's
 * size (u64) ends the input. Lengths precede what they measure, so the input reads back in
 * one way only; the holes, which read as zeros, cost nothing on either side (hashing them
 * as zeros took 0.25 CPU s per GiB on each side, docs/performance.md, session 13).
 */
function sentChunkHeader(offset: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(16);
  b.writeBigUInt64BE(BigInt(offset), 0);
  b.writeBigUInt64BE(BigInt(length), 8);
  return b;
}

/** The end of a hash without holes: the file's size (see sentChunkHeader). */
function sentSizeTrailer(size: number): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeBigUInt64BE(BigInt(size), 0);
  return b;
}

/**
 * What a large file's end-to-end hash takes between the content fed so far (up to `from`)
 * and the next DATA chunk, `length` bytes at `offset`: the hole between them as zeros, or
 * with `holesUnhashed` the chunk's offset and length (see sentChunkHeader). The source and
 * the target both feed their hashes through this and feedEnd, so they agree by construction.
 */
export async function feedBeforeChunk(
  h: ContentHash,
  from: number,
  offset: number,
  length: number,
  holesUnhashed: boolean,
): Promise<void> {
  if (holesUnhashed) await h.update(sentChunkHeader(offset, length));
  else await feedZeros(h, offset - from);
}

/** The end of a large file's hash (see feedBeforeChunk): the last hole as zeros, or the size. */
export async function feedEnd(
  h: ContentHash,
  from: number,
  size: number,
  holesUnhashed: boolean,
): Promise<void> {
  if (holesUnhashed) await h.update(sentSizeTrailer(size));
  else await feedZeros(h, size - from);
}

/** Feeds `n` zero bytes (the holes of a sparse file, which read as zeros). */
async function feedZeros(h: ContentHash, n: number): Promise<void> {
  for (let left = n; left > 0; left -= ZEROS.length)
    await h.update(left >= ZEROS.length ? ZEROS : ZEROS.subarray(0, left));
}

/** Adds the contract every hash keeps: fed only before its digest, digested once. */
function checked(h: ContentHash): ContentHash {
  let over = false;
  return {
    update: (chunk) => {
      if (over) throw new FerryError('FERRY_INTERNAL', 'content hash fed after its digest');
      return h.update(chunk);
    },
    digest: () => {
      if (over) return Promise.reject(new FerryError('FERRY_INTERNAL', 'content hash digested twice'));
      over = true;
      return h.digest();
    },
    discard: () => {
      if (over) return;
      over = true;
      h.discard();
    },
  };
}

/** Threads used for hashing: 0 = on the event loop. `auto` picks 1 when at least 4 cores are available. */
export type HashThreads = number | 'auto';

const SLOT_BYTES = 1 << 20;
/** Slots in the ring: the bytes that may wait for the thread before update() makes the caller wait. */
const SLOTS = 32;

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { Blake3Hasher } = require(workerData.blake);
const ring = workerData.ring;
const hashers = new Map();
parentPort.on('message', (m) => {
  if (m.op === 'update') {
    let h = hashers.get(m.id);
    if (!h) hashers.set(m.id, (h = new Blake3Hasher()));
    h.update(Buffer.from(ring, m.slot * workerData.slotBytes, m.length));
    parentPort.postMessage({ op: 'hashed', slot: m.slot, length: m.length });
  } else if (m.op === 'digest') {
    const h = hashers.get(m.id) ?? new Blake3Hasher();
    hashers.delete(m.id);
    parentPort.postMessage({ op: 'digest', id: m.id, hex: h.digest('hex') });
  } else if (m.op === 'discard') {
    hashers.delete(m.id);
  }
});
`;

type ToWorker =
  | { op: 'update'; id: number; slot: number; length: number }
  | { op: 'digest'; id: number }
  | { op: 'discard'; id: number };
type FromWorker = { op: 'hashed'; slot: number; length: number } | { op: 'digest'; id: number; hex: string };
/** Work not yet handed to the thread, in order: a chunk waits here for a free slot. */
type Backlog = { op: 'update'; id: number; chunk: Buffer } | Exclude<ToWorker, { op: 'update' }>;

/**
 * One hashing thread: started on first use, unref'd so it never keeps the process alive.
 * If it dies, the hashes it held fail (FERRY_INTERNAL: the pass fails and is retried) and
 * the next file starts a new thread.
 */
class HashWorker {
  #worker: Worker | null = null;
  #ring: Buffer | null = null;
  #free: number[] = [];
  #backlog: Backlog[] = [];
  /** Counts the threads that died: a hash fed to an earlier one cannot go on. */
  #generation = 0;
  #lastFailure: FerryError | null = null;
  #roomWaiters: (() => void)[] = [];
  #digests = new Map<number, { resolve: (hex: string) => void; reject: (e: Error) => void }>();
  #nextId = 1;

  #start(): Worker {
    if (this.#worker) return this.#worker;
    const blake = createRequire(import.meta.url).resolve('@napi-rs/blake-hash');
    const ring = new SharedArrayBuffer(SLOTS * SLOT_BYTES);
    this.#ring = Buffer.from(ring);
    this.#free = Array.from({ length: SLOTS }, (_, i) => SLOTS - 1 - i);
    const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { blake, ring, slotBytes: SLOT_BYTES } });
    w.unref();
    w.on('message', (m: FromWorker) => {
      if (this.#worker !== w) return; // a thread that already died
      if (m.op === 'hashed') {
        stats.threadBytes += m.length;
        this.#free.push(m.slot);
        this.#pump();
      } else {
        const d = this.#digests.get(m.id);
        this.#digests.delete(m.id);
        d?.resolve(m.hex);
      }
    });
    const die = (why: string) => {
      if (this.#worker !== w) return; // 'exit' after 'error'
      const failure = new FerryError('FERRY_INTERNAL', `the hashing thread stopped: ${why}`);
      this.#lastFailure = failure;
      this.#generation++;
      this.#worker = null;
      this.#ring = null;
      this.#backlog = [];
      for (const wake of this.#roomWaiters.splice(0)) wake();
      for (const d of this.#digests.values()) d.reject(failure);
      this.#digests.clear();
    };
    w.on('error', (e) => die(e.message));
    w.on('exit', (code) => die(`exit code ${code}`));
    this.#worker = w;
    return w;
  }

  /** Hands the thread what the free slots allow, in order; wakes waiting feeders when all is handed over. */
  #pump(): void {
    const w = this.#worker;
    if (!w) return;
    while (this.#backlog.length) {
      const next = this.#backlog[0]!;
      if (next.op !== 'update') {
        w.postMessage(next);
        this.#backlog.shift();
        continue;
      }
      const slot = this.#free.pop();
      if (slot === undefined) return;
      const n = Math.min(SLOT_BYTES, next.chunk.length);
      next.chunk.copy(this.#ring!, slot * SLOT_BYTES, 0, n);
      w.postMessage({ op: 'update', id: next.id, slot, length: n } satisfies ToWorker);
      if (n === next.chunk.length) this.#backlog.shift();
      else next.chunk = next.chunk.subarray(n);
    }
    for (const wake of this.#roomWaiters.splice(0)) wake();
  }

  /** Queues work for the thread of `generation` (throws if that thread died). */
  #enqueue(item: Backlog, generation: number): void {
    if (generation !== this.#generation) throw this.#lastFailure!;
    this.#start();
    this.#backlog.push(item);
    this.#pump();
  }

  open(): ContentHash {
    const id = this.#nextId++;
    /** The thread this hash lives in, from its first bytes (null: not fed yet). */
    let generation: number | null = null;
    return {
      update: (chunk) => {
        if (chunk.length === 0) return undefined;
        generation ??= this.#generation;
        this.#enqueue({ op: 'update', id, chunk }, generation);
        if (this.#backlog.length === 0) return undefined;
        return new Promise<void>((resolve) => this.#roomWaiters.push(resolve));
      },
      digest: () => {
        if (generation === null) return Promise.resolve(wholeFileHash(Buffer.alloc(0)));
        const g = generation;
        return new Promise<string>((resolve, reject) => {
          this.#digests.set(id, { resolve, reject });
          try {
            this.#enqueue({ op: 'digest', id }, g);
          } catch (e) {
            this.#digests.delete(id);
            reject(e);
          }
        });
      },
      discard: () => {
        if (generation === this.#generation) this.#enqueue({ op: 'discard', id }, generation);
      },
    };
  }

  /** Stops the thread; pending digests reject. */
  async close(): Promise<void> {
    await this.#worker?.terminate();
  }
}

function inlineHash(): ContentHash {
  const h = new Blake3Hasher();
  return {
    update: (chunk) => {
      h.update(chunk);
      return undefined;
    },
    digest: () => Promise.resolve(h.digest('hex')),
    discard: () => {},
  };
}

let worker: HashWorker | null = null;
const stats = { threadBytes: 0 };

/** Bytes hashed by hashing threads since the process started (for tests and diagnostics). */
export function hashingStats(): { readonly threadBytes: number } {
  return { ...stats };
}

/**
 * `--hash-threads` as given (flag, environment or option): auto, 0 or 1; anything else is
 * FERRY_CONFIG. One file is hashed at a time per stream and BLAKE3's update is sequential:
 * a second thread would have nothing to do.
 */
export function parseHashThreads(v: string | HashThreads): HashThreads {
  if (v === 'auto' || v === 0 || v === 1) return v;
  if (v === '0' || v === '1') return Number(v);
  throw new FerryError(
    'FERRY_CONFIG',
    `--hash-threads must be auto, 0 or 1 (0: on the main thread, 1: in a worker thread), not ${JSON.stringify(v)}`,
  );
}

/** Resolves `auto` (1 from four cores) after checking the value as parseHashThreads does. */
export function resolveHashThreads(v: string | HashThreads): number {
  const t = parseHashThreads(v);
  if (t === 'auto') return os.availableParallelism() >= 4 ? 1 : 0;
  return t;
}

/** Sets where large files are hashed for this process (the agent and target call it at start). */
export function configureHashing(threads: string | HashThreads): number {
  const n = resolveHashThreads(threads);
  if (n === 0) {
    void worker?.close();
    worker = null;
  } else worker ??= new HashWorker();
  return n;
}

/**
 * Stops the current hashing thread as if it had crashed (tests): the hashes it held fail,
 * the next large file starts a new thread.
 */
export async function stopHashingThread(): Promise<void> {
  await worker?.close();
}

/** Whether hashing runs on a worker thread now. */
export function hashingThreads(): number {
  return worker ? 1 : 0;
}

/** Below this size a file is hashed on the event loop: the hand-off would cost more than it saves. */
const THREAD_FROM_BYTES = 1 << 20;

/** A new content hash for one file of about `sizeHint` bytes, on the configured thread. */
export function contentHash(sizeHint = Number.POSITIVE_INFINITY): ContentHash {
  return checked(worker && sizeHint >= THREAD_FROM_BYTES ? worker.open() : inlineHash());
}
