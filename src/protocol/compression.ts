import zstd from 'zstd-napi/binding.js';

/** zstd level 1: ~270 MiB/s per core on system files, and fast to give up on random data. */
const LEVEL = 1;
/** A compressed chunk is sent only when it is at most this fraction of the original. */
const WORTH_IT = 0.9;

let cctx: zstd.CCtx | null = null;
let dctx: zstd.DCtx | null = null;
let scratch = Buffer.alloc(0);

/**
 * Compresses one DATA chunk, or returns null when that does not pay (incompressible data
 * then costs one quick attempt and travels as it is).
 */
export function compressChunk(data: Buffer): Buffer | null {
  if (data.length < 512) return null;
  if (!cctx) {
    cctx = new zstd.CCtx();
    cctx.setParameter(zstd.CParameter.compressionLevel, LEVEL);
  }
  const bound = zstd.compressBound(data.length);
  if (scratch.length < bound) scratch = Buffer.allocUnsafe(bound);
  const n = cctx.compress2(scratch, data);
  if (n > data.length * WORTH_IT) return null;
  return Buffer.from(scratch.subarray(0, n)); // a copy: the scratch buffer is reused
}

/**
 * Decompresses a chunk that must expand to exactly `rawLength` bytes: the output buffer is
 * allocated from the declared length (at most one frame's worth), never from what the
 * compressed data claims, so hostile input cannot make it allocate more.
 */
export function decompressChunk(compressed: Buffer, rawLength: number): Buffer | null {
  dctx ??= new zstd.DCtx();
  const out = Buffer.allocUnsafe(rawLength);
  try {
    return dctx.decompress(out, compressed) === rawLength ? out : null;
  } catch {
    return null;
  }
}
