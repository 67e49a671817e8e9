/**
 * File names are bytes on Linux, and most of them are UTF-8. ferry carries every path as a
 * JavaScript string: a name that is valid UTF-8 is that text, and each byte of a name that
 * is not (a Latin-1 "café" from an old server, say) is kept as one lone low surrogate,
 * U+DC80–U+DCFF for the bytes 0x80–0xFF (the "surrogateescape" scheme). No valid UTF-8 text
 * decodes to a lone surrogate, so the mapping goes both ways without loss, and JSON carries
 * lone surrogates as `\udcXX` escapes. Every call that hands a path to the system goes
 * through osPath(), which gives the exact bytes back (as a Buffer) when there are any.
 */

/** A low surrogate standing for a raw byte, not preceded by a high one. */
const ESCAPED_BYTE = /(?<![\uD800-\uDBFF])[\uDC80-\uDCFF]/;
const ESCAPED_BYTES = new RegExp(ESCAPED_BYTE.source, 'g');

/** `p` with each escaped byte replaced by `f(byte)`: the one place that finds them. */
export function replaceEscapedBytes(p: string, f: (byte: number) => string): string {
  return hasEscapedBytes(p) ? p.replace(ESCAPED_BYTES, (c) => f(c.charCodeAt(0) - 0xdc00)) : p;
}
/** Any surrogate without its pair. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

const strict = new TextDecoder('utf-8', { fatal: true });

/** A name or path read from the system as bytes, as ferry carries it (see above). */
export function decodeName(bytes: Uint8Array): string {
  try {
    return strict.decode(bytes);
  } catch {
    return decodeEscaping(bytes);
  }
}

/** The length of the valid UTF-8 sequence at bytes[i] (RFC 3629: no overlongs, no surrogates), or 0. */
function sequenceAt(bytes: Uint8Array, i: number): number {
  const b0 = bytes[i]!;
  const cont = (k: number) => i + k < bytes.length && (bytes[i + k]! & 0xc0) === 0x80;
  if (b0 < 0x80) return 1;
  if (b0 >= 0xc2 && b0 <= 0xdf) return cont(1) ? 2 : 0;
  if (b0 >= 0xe0 && b0 <= 0xef) {
    if (!cont(1) || !cont(2)) return 0;
    const b1 = bytes[i + 1]!;
    if (b0 === 0xe0 && b1 < 0xa0) return 0; // overlong
    if (b0 === 0xed && b1 >= 0xa0) return 0; // a surrogate's encoding
    return 3;
  }
  if (b0 >= 0xf0 && b0 <= 0xf4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    const b1 = bytes[i + 1]!;
    if (b0 === 0xf0 && b1 < 0x90) return 0; // overlong
    if (b0 === 0xf4 && b1 >= 0x90) return 0; // past U+10FFFF
    return 4;
  }
  return 0;
}

function decodeEscaping(bytes: Uint8Array): string {
  let out = '';
  let run = 0; // start of the current run of valid sequences
  let i = 0;
  while (i < bytes.length) {
    const n = sequenceAt(bytes, i);
    if (n > 0) {
      i += n;
      continue;
    }
    if (run < i) out += strict.decode(bytes.subarray(run, i));
    out += String.fromCharCode(0xdc00 + bytes[i]!);
    i++;
    run = i;
  }
  if (run < i) out += strict.decode(bytes.subarray(run, i));
  return out;
}

/** Whether `p` holds raw bytes (it came from a name that is not valid UTF-8). */
export function hasEscapedBytes(p: string): boolean {
  return ANY_LOW.test(p) && ESCAPED_BYTE.test(p); // the first test alone is a quick scan
}
const ANY_LOW = /[\uDC80-\uDCFF]/;

/**
 * Why `p` cannot be a path ferry carries, or null: a surrogate without its pair that does
 * not stand for a byte (U+DC80–U+DCFF) comes from no name on disk.
 */
export function badSurrogate(p: string): string | null {
  if (!ANY_SURROGATE.test(p)) return null;
  return LONE_SURROGATE.test(p.replace(ESCAPED_BYTES, ''))
    ? 'path holds a lone surrogate that stands for no byte'
    : null;
}
const ANY_SURROGATE = /[\uD800-\uDFFF]/;

/** The bytes of `p` as the system names it: `p` itself when it is plain text, else a Buffer. */
export function osPath(p: string): string | Buffer {
  return hasEscapedBytes(p) ? encodePath(p) : p;
}

/** The bytes `p` stands for (UTF-8, each escaped byte as itself). */
export function encodePath(p: string): Buffer {
  if (!hasEscapedBytes(p)) return Buffer.from(p, 'utf8');
  // the text between escaped bytes as UTF-8, each escaped byte as itself
  const parts: Buffer[] = [];
  let run = 0;
  for (const m of p.matchAll(ESCAPED_BYTES)) {
    parts.push(Buffer.from(p.slice(run, m.index), 'utf8'), Buffer.of(m[0].charCodeAt(0) - 0xdc00));
    run = m.index + 1;
  }
  parts.push(Buffer.from(p.slice(run), 'utf8'));
  return Buffer.concat(parts);
}

/** The length of `p` in bytes as the system names it. */
export function pathBytes(p: string): number {
  return hasEscapedBytes(p) ? encodePath(p).length : Buffer.byteLength(p);
}
