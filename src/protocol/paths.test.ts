import { describe, expect, it } from 'vitest';
import { badSurrogate, decodeName, encodePath, hasEscapedBytes, osPath, pathBytes } from './paths.js';

const bytes = (...b: number[]) => Uint8Array.from(b);

describe('paths as bytes', () => {
  it('gives valid UTF-8 names as their text, with nothing escaped', () => {
    for (const name of ['plain', 'café', '日本語', 'emoji 😀', 'a\u0001b']) {
      const b = Buffer.from(name, 'utf8');
      expect(decodeName(b)).toBe(name);
      expect(osPath(name)).toBe(name);
      expect(hasEscapedBytes(name)).toBe(false);
      expect(pathBytes(name)).toBe(b.length);
    }
  });

  it('keeps each byte of an invalid sequence, and gives the same bytes back', () => {
    const cases = [
      bytes(0x63, 0x61, 0x66, 0xe9), // Latin-1 café
      bytes(0xff, 0xfe, 0x41), // not UTF-8 at all
      bytes(0xc0, 0xaf), // an overlong '/'
      bytes(0xed, 0xa0, 0x80), // a surrogate's encoding
      bytes(0xf4, 0x90, 0x80, 0x80), // past U+10FFFF
      bytes(0xe2, 0x82), // cut short
      bytes(0xe2, 0x82, 0xac, 0x80, 0xf0, 0x9f, 0x98, 0x80, 0xe9), // € stray 😀 é(latin-1)
    ];
    for (const b of cases) {
      const name = decodeName(b);
      expect(hasEscapedBytes(name)).toBe(true);
      expect(badSurrogate(name)).toBeNull();
      expect(Buffer.compare(encodePath(name), Buffer.from(b))).toBe(0);
      expect(Buffer.isBuffer(osPath(`dir/${name}`))).toBe(true);
      expect(pathBytes(name)).toBe(b.length);
    }
    expect(decodeName(bytes(0x63, 0x61, 0x66, 0xe9))).toBe('caf\udce9');
    // valid sequences around an invalid byte stay text
    expect(decodeName(bytes(0xe2, 0x82, 0xac, 0x80, 0xf0, 0x9f, 0x98, 0x80))).toBe('€\udc80😀');
  });

  it('names two names that differ only in their invalid bytes apart', () => {
    expect(decodeName(bytes(0x61, 0xe9))).not.toBe(decodeName(bytes(0x61, 0xe8)));
    expect(decodeName(bytes(0x61, 0xe9))).not.toBe(decodeName(Buffer.from('a\ufffd')));
  });

  it('refuses surrogates that stand for no byte', () => {
    expect(badSurrogate('a\ud800b')).not.toBeNull(); // a lone high surrogate
    expect(badSurrogate('a\udc41')).not.toBeNull(); // would be a byte below 0x80
    expect(badSurrogate('\udc41\udce9')).not.toBeNull();
    expect(badSurrogate('😀\udce9')).toBeNull();
  });
});
