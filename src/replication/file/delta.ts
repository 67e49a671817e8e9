import { DIRECT_ALIGN, ferryFs } from '../../native/index.js';
import { MAX_DATA_BYTES, type Session } from '../../protocol/index.js';
import { BLOCK_SUM_BYTES, blockSum } from './block-sum.js';
import { contentHash } from './content-hash.js';
import { DirectReads } from './read-file.js';

/** Bytes of one block's weak sum in SUMS (`weak`): a big-endian u32 (native/rolling.c). */
export const WEAK_SUM_BYTES = 4;

/** The weak sums of the target's full blocks, as the native search takes them, and which blocks have each. */
class WeakSums {
  /** The distinct sums, ascending, as native-endian u32s. */
  readonly sorted: Buffer;
  /** A bitset over the sums' top bits: most windows are answered by one bit. */
  readonly bits: Buffer;
  /** Blocks by weak sum; of blocks alike in both sums, only the first. */
  readonly #blocks = new Map<number, number[]>();

  constructor(weak: Buffer, strong: Buffer, fullBlocks: number) {
    for (let j = 0; j < fullBlocks; j++) {
      const w = weak.readUInt32BE(j * WEAK_SUM_BYTES);
      const list = this.#blocks.get(w);
      if (!list) this.#blocks.set(w, [j]);
      else if (!list.some((k) => sameStrong(strong, k, j))) list.push(j);
    }
    const values = Uint32Array.from(this.#blocks.keys()).sort();
    this.sorted = Buffer.from(values.buffer, values.byteOffset, values.byteLength);
    // about 64 bits per sum, at least 64 and at most 2^24
    let n = 64;
    while (n < values.length * 64 && n < 1 << 24) n *= 2;
    this.bits = Buffer.alloc(n / 8);
    const shift = 32 - Math.log2(n);
    for (const w of values) {
      const i = w >>> shift;
      this.bits[i >>> 3]! |= 1 << (i & 7);
    }
  }

  blocksWith(weak: number): readonly number[] {
    return this.#blocks.get(weak) ?? [];
  }
}

function sameStrong(strong: Buffer, a: number, b: number): boolean {
  const S = BLOCK_SUM_BYTES;
  return strong.compare(strong, a * S, (a + 1) * S, b * S, (b + 1) * S) === 0;
}

/** The most one COPY frame moves (the protocol's limit). */
const MAX_COPY_BYTES = 1 << 24;

/** The file's content beyond the reading window, at least this much per read (a window is this plus one block). */
const WINDOW_BYTES = 4 << 20;

export interface TheirSums {
  blockSize: number;
  /** The size of the target's copy. */
  size: number;
  /** BLOCK_SUM_BYTES per block of the target's copy (the last one may be short). */
  strong: Buffer;
  /** WEAK_SUM_BYTES per block, or empty (no copy: only blocks in place could be found). */
  weak: Buffer;
}

type Send = (m: Parameters<Session['send']>[0]) => Promise<void>;

interface DeltaOptions {
  /** The target holds the file's first `from` bytes already (a kept partial file): hashed, not sent. */
  from?: number;
  /** Counts the bytes read and the bytes of DATA sent, as they go. */
  progress?: { bytes: number; bytesSent: number };
  /**
   * Read past the page cache (O_DIRECT, as a full copy reads a large file) where the file
   * system allows it: a sync of a large file does not push the source's own working set
   * out of its cache. Default off.
   */
  direct?: boolean;
}

/**
 * Sends a file as changes to the target's copy: reads it once, front to back, and finds
 * each of the target's blocks where it now starts: first the block after the last one
 * found (strong sum at once, which is all an unshifted file needs), else by the weak sums
 * rolled over every offset (rollFind) and confirmed by the strong one. Blocks found go as
 * COPY frames (from their old offset; runs of them joined, up to 16 MiB a frame), every
 * other byte as DATA. (Without weak sums -- SUMS of no copy, or of one shorter than a
 * block -- only blocks in place can be found, and go as nothing: the target fills every gap
 * from the same offset of its copy.) See DeltaOptions for resuming, progress and direct reads. Returns the whole file's
 * hash, the bytes of DATA sent and of COPY frames.
 */
export async function sendDelta(
  file: { fd: number; size: number; abs?: string },
  theirs: TheirSums,
  send: Send,
  opts: DeltaOptions = {},
): Promise<{ hash: string; sent: number; copied: number }> {
  const from = opts.from ?? 0;
  const progress = opts.progress ?? { bytes: 0, bytesSent: 0 };
  const B = theirs.blockSize;
  const S = BLOCK_SUM_BYTES;
  const theirBlocks = Math.floor(theirs.strong.length / S);
  const fullBlocks = Math.min(theirBlocks, Math.floor(theirs.size / B));
  const weak =
    theirs.weak.length >= fullBlocks * WEAK_SUM_BYTES && fullBlocks > 0
      ? new WeakSums(theirs.weak, theirs.strong, fullBlocks)
      : null;
  const sameAs = (sum: Buffer, j: number) =>
    j < theirBlocks && sum.equals(theirs.strong.subarray(j * S, (j + 1) * S));
  const strongIs = (window: Buffer, j: number) => sameAs(blockSum(window), j);

  const cap = Math.max(WINDOW_BYTES, B) + B;
  const win = Buffer.allocUnsafe(cap);
  const whole = contentHash();
  let base = 0; // the file offset of win[0]
  let len = 0; // bytes held in win
  let pos = 0; // the next byte not yet matched or passed over, in win
  let lit = 0; // where the bytes to send as DATA begin, in win
  let eof = false;
  let sent = 0;
  let copied = 0;
  let expect = 0; // the block after the last one found
  let tryExpected = true; // only right after a block was found (or at a block boundary, without weak sums)
  // a run of blocks found one after the other goes as one COPY (frames stay in file order)
  let copy: { offset: number; from: number; length: number } | null = null;
  const flushCopy = async () => {
    if (!copy) return;
    const body = copy;
    copy = null;
    await send({ type: 'copy', body });
    copied += body.length;
  };

  const flushLiteral = async (to: number) => {
    if (lit < to) await flushCopy();
    for (let at = lit; at < to; at += MAX_DATA_BYTES) {
      const end = Math.min(to, at + MAX_DATA_BYTES);
      // a copy: the window is reused once the frame is queued, before it is written
      await send({ type: 'data', offset: base + at, data: Buffer.from(win.subarray(at, end)) });
      sent += end - at;
      progress.bytesSent += end - at;
    }
    lit = to;
  };
  const found = async (j: number, length: number) => {
    await flushLiteral(pos);
    const offset = base + pos;
    const from = j * B;
    if (
      copy &&
      copy.offset + copy.length === offset &&
      copy.from + copy.length === from &&
      copy.length + length <= MAX_COPY_BYTES
    )
      copy.length += length;
    else {
      await flushCopy();
      // A block in place goes as COPY too when the target takes COPY (it sent weak sums):
      // it then rebuilds the file while this side reads on, instead of all at FILE_END.
      if (from !== offset || weak) copy = { offset, from, length };
    }
    pos += length;
    lit = pos;
    expect = j + 1;
    tryExpected = true;
  };
  // Past the page cache when asked, as a full copy reads (DirectReads). A read that starts
  // between two blocks (after a resumed prefix) goes up to the next block boundary only, so
  // that the ones after it are aligned again and go past the cache too.
  const reads = new DirectReads(file.fd, file.abs ?? `descriptor ${file.fd}`, opts.direct ?? false);
  const readSome = (buf: Buffer, off: number, max: number, at: number): Promise<number> => {
    const misaligned = reads.direct ? at % DIRECT_ALIGN : 0;
    const want = misaligned ? Math.min(max, DIRECT_ALIGN - misaligned) : max;
    return reads.read(buf.subarray(off, off + want), at);
  };

  const refill = async () => {
    await flushLiteral(pos);
    win.copyWithin(0, pos, len);
    base += pos;
    len -= pos;
    pos = lit = 0;
    let shrunk = false;
    while (len < cap && base + len < file.size) {
      const at = base + len;
      let want = Math.min(cap - len, file.size - at); // nothing past the size the ENTRY gave
      if (reads.direct && at % DIRECT_ALIGN === 0 && at + want < file.size) {
        want -= want % DIRECT_ALIGN; // whole blocks past the cache; less room waits for the next refill
        if (want === 0) break;
      }
      const n = await readSome(win, len, want, at);
      if (n === 0) {
        shrunk = true; // since it was opened: the hash tells the target
        break;
      }
      await whole.update(win.subarray(len, len + n)); // before anything else can touch those bytes
      len += n;
      progress.bytes += n;
    }
    eof = shrunk || base + len >= file.size;
  };

  try {
    // A kept partial file continued (resumeFrom): the target holds [0, from) of the new file
    // already. It is read for the whole file's hash only; the search starts after it.
    while (base < from) {
      const n = await readSome(win, 0, Math.min(cap, from - base), base);
      if (n === 0) break; // shrunk since it was opened: the hash tells the target
      await whole.update(win.subarray(0, n));
      base += n;
      progress.bytes += n;
    }
    expect = Math.floor(base / B); // where the block that was there would be, if nothing shifted
    await refill();
    for (;;) {
      if (len - pos < B) {
        if (!eof) {
          await refill();
          continue;
        }
        break;
      }
      const window = win.subarray(pos, pos + B);
      if (tryExpected && expect < fullBlocks && strongIs(window, expect)) {
        await found(expect, B);
        continue;
      }
      if (!weak) {
        pos += B; // no weak sums: only blocks in place can be found, at block boundaries
        expect = Math.floor((base + pos) / B); // a whole block number, also after a resumed offset
        continue;
      }
      tryExpected = false;
      const at = ferryFs.rollFind(win, pos, len, B, weak.bits, weak.sorted);
      if (at < 0) {
        pos = len - B + 1; // no block starts before here; the rest waits for more of the file
        if (!eof) await refill();
        else break;
        continue;
      }
      pos = at;
      const candidate = win.subarray(pos, pos + B);
      const sum = blockSum(candidate); // once, for every block with its weak sum
      const j = weak.blocksWith(ferryFs.weakSum(candidate)).find((k) => sameAs(sum, k));
      if (j === undefined) pos++;
      else await found(j, B);
    }
    // the tail, shorter than a block: the target's own short last block, or new bytes
    const tail = len - pos;
    const last = theirBlocks - 1;
    if (
      tail > 0 &&
      last >= fullBlocks &&
      theirs.size - last * B === tail &&
      strongIs(win.subarray(pos, len), last)
    )
      await found(last, tail);
    await flushLiteral(len);
    await flushCopy();
    return { hash: await whole.digest(), sent, copied };
  } finally {
    reads.close(); // every read has been awaited
    whole.discard(); // a no-op after the digest
  }
}
