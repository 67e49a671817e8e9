import { Blake3Hasher } from '@napi-rs/blake-hash';

/** Bytes of one block's sum in a changed-block transfer (SUMS): the first 16 of its BLAKE3. */
export const BLOCK_SUM_BYTES = 16;

/** The sum both sides compute for one block of a changed-block transfer. */
export function blockSum(block: Buffer): Buffer {
  const h = new Blake3Hasher();
  h.update(block);
  return h.digestBuffer().subarray(0, BLOCK_SUM_BYTES);
}
