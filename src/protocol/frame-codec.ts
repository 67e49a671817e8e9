import { FerryError } from '../errors/index.js';
import { type FramePool, noop } from './frame-pool.js';

/** "FERRY\0" then a big-endian u16 version: the first 8 bytes each side sends. */
export const MAGIC = Buffer.from('FERRY\0', 'latin1');
/**
 * 2: SUMS carry weak rolling sums, COPY frames, and a changed-block transfer continued with
 * resumeFrom (a version-1 target would not answer its SUMS, and refuses `weak`): the two
 * versions do not mix, and each refuses the other by name at the preface.
 * 3: `appendFrom` in FILE and FILES entries (a small file that grew sends only what was appended), which a
 * version-2 target would refuse as an unknown field. Each side checks the other's preface
 * against its own range, so a version-2 program refuses a version-3 one as too new whatever
 * this side accepts: version 3 accepts only version 3, and says so.
 */
export const PROTOCOL_VERSION = 3;
export const MIN_PROTOCOL_VERSION = 3;
export const PREFACE_BYTES = MAGIC.length + 2;

/** Largest data payload of one DATA frame. */
export const MAX_DATA_BYTES = 1 << 20;
/** Largest frame (type byte + payload) a peer may send; longer is a protocol violation. */
export const MAX_FRAME_BYTES = MAX_DATA_BYTES + 4096;

export function encodePreface(version = PROTOCOL_VERSION): Buffer {
  const b = Buffer.alloc(PREFACE_BYTES);
  MAGIC.copy(b, 0);
  b.writeUInt16BE(version, MAGIC.length);
  return b;
}

/** Frame = u32 BE length of (type + payload), u8 type, payload. */
export function encodeFrame(type: number, payload: Buffer): Buffer {
  if (payload.length + 1 > MAX_FRAME_BYTES) {
    throw new FerryError(
      'FERRY_INTERNAL',
      `frame of ${payload.length} bytes exceeds the ${MAX_FRAME_BYTES}-byte limit`,
    );
  }
  const head = Buffer.allocUnsafe(5);
  head.writeUInt32BE(payload.length + 1, 0);
  head.writeUInt8(type, 4);
  return Buffer.concat([head, payload]);
}

function frameItem(frame: Buffer, release: () => void): DecodedItem {
  return { kind: 'frame', type: frame.readUInt8(4), payload: frame.subarray(5), release };
}

export type DecodedItem =
  | { readonly kind: 'preface'; readonly version: number }
  | {
      readonly kind: 'frame';
      readonly type: number;
      readonly payload: Buffer;
      /** Gives the payload's buffer back to the decoder's pool (a no-op when it has none). */
      readonly release: () => void;
    };

/**
 * Turns a byte stream, split anywhere, into the preface and then frames. Throws
 * FerryError FERRY_PROTOCOL_VIOLATION on a bad magic or a frame length out of bounds
 * (checked before buffering the frame), FERRY_PROTOCOL_VERSION on an unsupported version.
 */
export class FrameDecoder {
  #chunks: Buffer[] = [];
  #buffered = 0;
  #prefaceSeen = false;
  readonly #pool: FramePool | undefined;
  /** The frame being assembled: its buffer (length prefix included) and the bytes it holds. */
  #partial: { frame: Buffer; have: number; release: () => void } | null = null;

  /** With a pool, frames that span chunks are assembled in buffers it gives (and reuses). */
  constructor(opts: { pool?: FramePool } = {}) {
    this.#pool = opts.pool;
  }

  /**
   * The items that `chunk` completes. With `transient`, the chunk's memory is reused once
   * this returns (a reused read buffer): nothing handed out or kept refers to it.
   */
  push(chunk: Buffer, transient = false): DecodedItem[] {
    const out: DecodedItem[] = [];
    let rest = chunk;
    const p = this.#partial;
    if (p && rest.length > 0) {
      const n = Math.min(p.frame.length - p.have, rest.length);
      rest.copy(p.frame, p.have, 0, n);
      p.have += n;
      rest = rest.subarray(n);
      if (p.have < p.frame.length) return out;
      this.#partial = null;
      out.push(frameItem(p.frame, p.release));
    }
    if (rest.length > 0) {
      // kept only until this call ends unless a frame header or preface is still incomplete
      this.#chunks.push(rest);
      this.#buffered += rest.length;
    }
    for (;;) {
      if (!this.#prefaceSeen) {
        if (this.#buffered < PREFACE_BYTES) return this.#keepChunks(out, transient);
        const p = this.#take(PREFACE_BYTES);
        if (!p.subarray(0, MAGIC.length).equals(MAGIC)) {
          throw new FerryError(
            'FERRY_PROTOCOL_VIOLATION',
            'the peer is not speaking the ferry protocol (bad magic)',
          );
        }
        const version = p.readUInt16BE(MAGIC.length);
        if (version < MIN_PROTOCOL_VERSION) {
          throw new FerryError(
            'FERRY_PROTOCOL_VERSION',
            `peer too old: it speaks protocol version ${version}, this ferry needs at least ${MIN_PROTOCOL_VERSION}`,
          );
        }
        if (version > PROTOCOL_VERSION) {
          throw new FerryError(
            'FERRY_PROTOCOL_VERSION',
            `peer too new: it speaks protocol version ${version}, this ferry speaks up to ${PROTOCOL_VERSION}`,
          );
        }
        this.#prefaceSeen = true;
        out.push({ kind: 'preface', version });
        continue;
      }
      if (this.#buffered < 5) return this.#keepChunks(out, transient);
      const len = this.#peekUInt32();
      if (len < 1 || len > MAX_FRAME_BYTES) {
        throw new FerryError(
          'FERRY_PROTOCOL_VIOLATION',
          `frame length ${len} is outside 1..${MAX_FRAME_BYTES}`,
        );
      }
      if (this.#buffered >= 4 + len) {
        const whole = this.#take(4 + len);
        out.push(frameItem(transient ? Buffer.from(whole) : whole, noop));
        continue;
      }
      // The frame is still arriving: from now on its bytes are copied into its own buffer
      // as they come, so that no received chunk is held until the frame is whole.
      const { buf, release } = this.#pool?.take(4 + len) ?? {
        buf: Buffer.allocUnsafe(4 + len),
        release: noop,
      };
      let have = 0;
      for (const c of this.#chunks) have += c.copy(buf, have);
      this.#chunks = [];
      this.#buffered = 0;
      this.#partial = { frame: buf, have, release };
      return out;
    }
  }

  /** Copies the bytes still buffered when they are views of a transient chunk. */
  #keepChunks(out: DecodedItem[], transient: boolean): DecodedItem[] {
    if (transient) this.#chunks = this.#chunks.map((c) => Buffer.from(c));
    return out;
  }

  /** Bytes received but not yet part of a whole frame. */
  get pendingBytes(): number {
    return this.#buffered + (this.#partial?.have ?? 0);
  }

  #peekUInt32(): number {
    const first = this.#chunks[0]!;
    if (first.length >= 4) return first.readUInt32BE(0);
    const b = Buffer.concat(this.#chunks, Math.min(this.#buffered, 4));
    return b.readUInt32BE(0);
  }

  #take(n: number): Buffer {
    const first = this.#chunks[0]!;
    if (first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
      this.#buffered -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.#chunks[0]!;
      const want = n - filled;
      if (c.length <= want) {
        c.copy(out, filled);
        filled += c.length;
        this.#chunks.shift();
      } else {
        c.copy(out, filled, 0, want);
        this.#chunks[0] = c.subarray(want);
        filled += want;
      }
    }
    this.#buffered -= n;
    return out;
  }
}
