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
 * A chunk in shared memory (see `hashableBuffer`) is hashed where it lies; any other chunk
 * is copied into shared memory first (a memcpy on the event loop, still far cheaper than
 * hashing it there, and the caller may reuse it at once). A chunk in shared memory must
 * not change until it is hashed: the readers here never reuse one.
 */
export interface ContentHash {
  /** Feeds the next bytes. A returned promise means "wait before feeding more" (back-pressure). */
  update(chunk: Buffer): Promise<void> | undefined;
  /** The hex BLAKE3 of everything fed. Call once. */
  digest(): Promise<string>;
  /** Forgets the hash (an abandoned file); safe after digest and more than once. */
  discard(): void;
}

/** Threads used for hashing: 0 = on the event loop. `auto` picks 1 when at least 4 cores are available. */
export type HashThreads = number | 'auto';

/** Bytes queued for a worker before update() asks the caller to wait. */
const MAX_QUEUED_BYTES = 32 << 20;

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { Blake3Hasher } = require(workerData.blake);
const hashers = new Map();
parentPort.on('message', (m) => {
  if (m.op === 'update') {
    let h = hashers.get(m.id);
    if (!h) hashers.set(m.id, (h = new Blake3Hasher()));
    h.update(Buffer.from(m.buf, m.offset, m.length));
    parentPort.postMessage({ op: 'hashed', bytes: m.length });
  } else if (m.op === 'digest') {
    const h = hashers.get(m.id) ?? new Blake3Hasher();
    hashers.delete(m.id);
    parentPort.postMessage({ op: 'digest', id: m.id, hex: h.digest('hex') });
  } else if (m.op === 'discard') {
    hashers.delete(m.id);
  }
});
`;

type FromWorker = { op: 'hashed'; bytes: number } | { op: 'digest'; id: number; hex: string };

/** One hashing thread: started on first use, unref'd so it never keeps the process alive. */
class HashWorker {
  #worker: Worker | null = null;
  #failure: FerryError | null = null;
  #queued = 0;
  #roomWaiters: (() => void)[] = [];
  #digests = new Map<number, { resolve: (hex: string) => void; reject: (e: Error) => void }>();
  #nextId = 1;

  get queuedBytes(): number {
    return this.#queued;
  }

  #start(): Worker {
    if (this.#worker) return this.#worker;
    const blake = createRequire(import.meta.url).resolve('@napi-rs/blake-hash');
    const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { blake } });
    w.unref();
    w.on('message', (m: FromWorker) => {
      if (m.op === 'hashed') {
        this.#queued -= m.bytes;
        stats.threadBytes += m.bytes;
        if (this.#queued < MAX_QUEUED_BYTES) for (const wake of this.#roomWaiters.splice(0)) wake();
      } else {
        const d = this.#digests.get(m.id);
        this.#digests.delete(m.id);
        d?.resolve(m.hex);
      }
    });
    const die = (why: string) => {
      this.#failure ??= new FerryError('FERRY_INTERNAL', `the hashing thread stopped: ${why}`);
      this.#worker = null;
      this.#queued = 0;
      for (const wake of this.#roomWaiters.splice(0)) wake();
      for (const d of this.#digests.values()) d.reject(this.#failure);
      this.#digests.clear();
    };
    w.on('error', (e) => die(e.message));
    w.on('exit', (code) => die(`exit code ${code}`));
    this.#worker = w;
    return w;
  }

  open(): ContentHash {
    const id = this.#nextId++;
    let fed = false;
    let over = false;
    return {
      update: (chunk) => {
        if (over) throw new FerryError('FERRY_INTERNAL', 'content hash fed after its digest');
        if (chunk.length === 0) return undefined;
        if (this.#failure) throw this.#failure;
        const shared = chunk.buffer instanceof SharedArrayBuffer ? chunk : copyToShared(chunk);
        this.#start().postMessage({
          op: 'update',
          id,
          buf: shared.buffer,
          offset: shared.byteOffset,
          length: shared.length,
        });
        fed = true;
        this.#queued += chunk.length;
        if (this.#queued < MAX_QUEUED_BYTES) return undefined;
        return new Promise<void>((resolve) => this.#roomWaiters.push(resolve));
      },
      digest: () => {
        if (over) return Promise.reject(new FerryError('FERRY_INTERNAL', 'content hash digested twice'));
        over = true;
        if (!fed) return Promise.resolve(inlineDigest());
        if (this.#failure) return Promise.reject(this.#failure);
        const w = this.#start();
        return new Promise<string>((resolve, reject) => {
          this.#digests.set(id, { resolve, reject });
          w.postMessage({ op: 'digest', id });
        });
      },
      discard: () => {
        if (over) return;
        over = true;
        if (fed && this.#worker) this.#worker.postMessage({ op: 'discard', id });
      },
    };
  }

  /** Stops the thread (tests); pending digests reject. */
  async close(): Promise<void> {
    const w = this.#worker;
    if (w) await w.terminate();
    this.#failure = null;
  }
}

function inlineDigest(): string {
  return new Blake3Hasher().digest('hex');
}

function copyToShared(chunk: Buffer): Buffer {
  const b = Buffer.from(new SharedArrayBuffer(chunk.length));
  chunk.copy(b);
  return b;
}

function inlineHash(): ContentHash {
  let h: Blake3Hasher | null = new Blake3Hasher();
  return {
    update: (chunk) => {
      if (!h) throw new FerryError('FERRY_INTERNAL', 'content hash fed after its digest');
      h.update(chunk);
      return undefined;
    },
    digest: () => {
      if (!h) return Promise.reject(new FerryError('FERRY_INTERNAL', 'content hash digested twice'));
      const hex = h.digest('hex');
      h = null;
      return Promise.resolve(hex);
    },
    discard: () => {
      h = null;
    },
  };
}

let worker: HashWorker | null = null;
const stats = { threadBytes: 0 };

/** Bytes hashed by hashing threads since the process started (for tests and diagnostics). */
export function hashingStats(): { readonly threadBytes: number } {
  return { ...stats };
}

/** Resolves `auto` and range-checks; throws FERRY_CONFIG on anything but auto, 0 or 1. */
export function resolveHashThreads(v: HashThreads): number {
  if (v === 'auto') return os.availableParallelism() >= 4 ? 1 : 0;
  // one file is hashed at a time per stream and BLAKE3's update is sequential: a second
  // thread would have nothing to do
  if (v !== 0 && v !== 1)
    throw new FerryError(
      'FERRY_CONFIG',
      `--hash-threads must be auto, 0 (hash on the main thread) or 1 (a worker thread), not ${String(v)}`,
    );
  return v;
}

/** Sets where large files are hashed for this process (the agent and target call it at start). */
export function configureHashing(threads: HashThreads): number {
  const n = resolveHashThreads(threads);
  if (n === 0) {
    void worker?.close();
    worker = null;
  } else worker ??= new HashWorker();
  return n;
}

/** Whether hashing runs on a worker thread now. */
export function hashingThreads(): number {
  return worker ? 1 : 0;
}

/** Below this size a file is hashed on the event loop: the hand-off would cost more than it saves. */
const THREAD_FROM_BYTES = 1 << 20;

/** A new content hash for one file of about `sizeHint` bytes, on the configured thread. */
export function contentHash(sizeHint = Number.POSITIVE_INFINITY): ContentHash {
  return worker && sizeHint >= THREAD_FROM_BYTES ? worker.open() : inlineHash();
}

/**
 * A buffer for file content that a hashing thread can read without a copy (shared memory)
 * when hashing threads are on; an ordinary unpooled buffer otherwise.
 */
export function hashableBuffer(n: number): Buffer {
  return worker ? Buffer.from(new SharedArrayBuffer(n)) : Buffer.allocUnsafeSlow(n);
}
