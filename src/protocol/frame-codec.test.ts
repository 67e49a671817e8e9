import { describe, expect, it } from 'vitest';
import { FerryError } from '../errors/index.js';
import { DIRECT_ALIGN, ferryFs } from '../native/index.js';
import { encodeFrame, encodePreface, FrameDecoder, MAX_FRAME_BYTES } from './frame-codec.js';
import { FramePool } from './frame-pool.js';
import {
  decodeMessage,
  encodeMessage,
  FrameType,
  MAX_FILES_PER_FRAME,
  type Message,
  validatePath,
} from './messages.js';

const sample: Message[] = [
  { type: 'hello', body: { taskId: 't1', runId: 3, pass: 'full' } },
  {
    type: 'entry',
    body: {
      seq: 1,
      path: 'dir/ä file',
      kind: 'file',
      mode: 0o4755,
      uid: 1000,
      gid: 1000,
      mtimeNs: '1700000000123456789',
      size: 5,
      xattrs: [{ name: 'user.a', value: 'aGk=' }],
    },
  },
  { type: 'data', offset: 0, data: Buffer.from('hello') },
  { type: 'file-end', body: { seq: 1, hash: 'a'.repeat(64) } },
  { type: 'commit', body: { seq: 2 } },
];

function streamOf(msgs: Message[]): Buffer {
  return Buffer.concat([
    encodePreface(),
    ...msgs.map((m) => {
      const { type, payload } = encodeMessage(m);
      return encodeFrame(type, payload);
    }),
  ]);
}

function decodeAll(chunks: Buffer[]): Message[] {
  const d = new FrameDecoder();
  const out: Message[] = [];
  for (const c of chunks) {
    for (const item of d.push(c)) if (item.kind === 'frame') out.push(decodeMessage(item.type, item.payload));
  }
  expect(d.pendingBytes).toBe(0);
  return out;
}

describe('frame decoder', () => {
  const bytes = streamOf(sample);

  it('decodes the same messages whatever offset the stream is split at', () => {
    for (let i = 0; i <= bytes.length; i++) {
      expect(decodeAll([bytes.subarray(0, i), bytes.subarray(i)])).toEqual(sample);
    }
  });

  it('keeps nothing of a transient chunk: frames stay whole when the read buffer is overwritten', () => {
    const scratch = Buffer.alloc(bytes.length);
    for (const step of [1, 3, 7, 40, bytes.length]) {
      const d = new FrameDecoder();
      const items = [];
      for (let at = 0; at < bytes.length; at += step) {
        const n = Math.min(step, bytes.length - at);
        bytes.copy(scratch, 0, at, at + n);
        items.push(...d.push(scratch.subarray(0, n), true));
        scratch.fill(0xee); // the next read lands here
      }
      expect(d.pendingBytes).toBe(0);
      const got = items.flatMap((i) => (i.kind === 'frame' ? [decodeMessage(i.type, i.payload)] : []));
      expect(got).toEqual(sample);
    }
  });

  it('decodes a stream fed one byte at a time', () => {
    const chunks = [...bytes].map((b) => Buffer.from([b]));
    expect(decodeAll(chunks)).toEqual(sample);
  });

  it('refuses a bad magic', () => {
    const d = new FrameDecoder();
    expect(() => d.push(Buffer.from('HTTP/1.1 200'))).toThrow(
      expect.objectContaining({ code: 'FERRY_PROTOCOL_VIOLATION' }),
    );
  });

  it('tells a peer that is too new from one that is too old', () => {
    expect(() => new FrameDecoder().push(encodePreface(0))).toThrow(/peer too old/);
    // version 1 had no COPY frames nor weak sums, version 2 no appendFrom: refused by name, not misread
    expect(() => new FrameDecoder().push(encodePreface(1))).toThrow(
      /protocol version 1, this ferry needs at least 3/,
    );
    expect(() => new FrameDecoder().push(encodePreface(2))).toThrow(
      /protocol version 2, this ferry needs at least 3/,
    );
    expect(() => new FrameDecoder().push(encodePreface(99))).toThrow(/peer too new/);
    try {
      new FrameDecoder().push(encodePreface(99));
    } catch (e) {
      expect((e as FerryError).code).toBe('FERRY_PROTOCOL_VERSION');
    }
  });

  it('refuses an oversized frame length before buffering its body', () => {
    const d = new FrameDecoder();
    d.push(encodePreface());
    const head = Buffer.alloc(5);
    head.writeUInt32BE(MAX_FRAME_BYTES + 1, 0);
    expect(() => d.push(head)).toThrow(expect.objectContaining({ code: 'FERRY_PROTOCOL_VIOLATION' }));
    const zero = new FrameDecoder();
    zero.push(encodePreface());
    expect(() => zero.push(Buffer.alloc(5))).toThrow(/outside/);
  });
});

describe('message validation', () => {
  const entry = (path: string, extra: object = {}) =>
    Buffer.from(
      JSON.stringify({ seq: 1, path, kind: 'dir', mode: 0o755, uid: 0, gid: 0, mtimeNs: '1', ...extra }),
    );

  it.each([
    ['../etc/passwd'],
    ['/etc/passwd'],
    ['a/../../b'],
    ['a//b'],
    ['./a'],
    ['a/.'],
    ['a\0b'],
    [''],
    [`${'x'.repeat(256)}/y`],
  ])('refuses the unsafe path %j', (p) => {
    expect(() => decodeMessage(0x10, entry(p))).toThrow(FerryError);
  });

  it('gives the reason for each refused path, counting bytes of UTF-8 rather than characters', () => {
    const euro = (n: number) => '€'.repeat(n); // 3 bytes each
    const cases: [string, string | null][] = [
      ['a/b.c/.d/...', null],
      ['..a/a..', null],
      ['', 'path is empty'],
      ['/etc', 'path is absolute'],
      ['a\0b', 'path contains a NUL byte'],
      ['a//b', 'path has an empty component'],
      ['a/', 'path has an empty component'],
      ['./a', 'path has a "." component'],
      ['a/.', 'path has a "." component'],
      ['a/../b', 'path has a ".." component'],
      ['..', 'path has a ".." component'],
      [euro(85), null], // 255 bytes
      [`a/${euro(86)}`, 'a path component is longer than 255 bytes'], // 258 bytes in 86 characters
      ['x'.repeat(255), null],
      [`${'x'.repeat(256)}/y`, 'a path component is longer than 255 bytes'],
      [Array.from({ length: 16 }, () => euro(85)).join('/'), null], // 4,095 bytes
      [Array.from({ length: 17 }, () => euro(85)).join('/'), 'path is longer than 4095 bytes'],
      [`${'😀'.repeat(63)}x`, null], // 253 bytes in 127 UTF-16 units
      ['😀'.repeat(64), 'a path component is longer than 255 bytes'], // 256 bytes in 128 units
    ];
    for (const [p, why] of cases) expect(validatePath(p), JSON.stringify(p).slice(0, 40)).toBe(why);
  });

  it('takes holesUnhashed only on a regular file sent whole from its start', () => {
    const big = { kind: 'file', size: 1 << 30, holesUnhashed: true };
    expect(decodeMessage(0x10, entry('a', big))).toMatchObject({ body: { holesUnhashed: true } });
    for (const extra of [{ resumeFrom: 4096 }, { deltaBlockSize: 65536 }, { kind: 'dir', size: undefined }])
      expect(() => decodeMessage(0x10, entry('a', { ...big, ...extra }))).toThrow(
        expect.objectContaining({ code: 'FERRY_PROTOCOL_VIOLATION' }),
      );
  });

  it('takes appendFrom in an ENTRY only on a regular file longer than it, and never with another way of continuing a copy', () => {
    const grown = { kind: 'file', size: 41_000, appendFrom: 40_000 };
    expect(decodeMessage(0x10, entry('a', grown))).toMatchObject({ body: { appendFrom: 40_000 } });
    for (const extra of [
      { appendFrom: 41_000 },
      { appendFrom: 50_000 },
      { appendFrom: 0 },
      { appendFrom: -1 },
      { appendFrom: 1.5 },
      { resumeFrom: 4096 },
      { deltaBlockSize: 65536 },
      { holesUnhashed: true },
      { kind: 'dir', size: undefined },
    ])
      expect(() => decodeMessage(0x10, entry('a', { ...grown, ...extra }))).toThrow(
        expect.objectContaining({ code: 'FERRY_PROTOCOL_VIOLATION' }),
      );
  });

  it('takes an extended attribute name with escaped bytes, and refuses one with a NUL, a lone surrogate for no byte, or more than 255 bytes', () => {
    const named = (name: string) => entry('a', { xattrs: [{ name, value: '' }] });
    expect(decodeMessage(0x10, named('user.caf\udce9'))).toMatchObject({
      body: { xattrs: [{ name: 'user.caf\udce9' }] },
    });
    expect(decodeMessage(0x10, named(`user.${'é'.repeat(125)}`))).toMatchObject({ type: 'entry' }); // 255 bytes
    for (const bad of ['user.a\0b', 'user.\ud800', `user.${'é'.repeat(126)}`])
      expect(() => decodeMessage(0x10, named(bad))).toThrow(
        expect.objectContaining({ code: 'FERRY_PROTOCOL_VIOLATION' }),
      );
    // the source root's, in COMMIT, as well
    const commit = (name: string) =>
      Buffer.from(
        JSON.stringify({
          seq: 1,
          root: { mode: 0o755, uid: 0, gid: 0, mtimeNs: '1', xattrs: [{ name, value: '' }] },
        }),
      );
    expect(decodeMessage(FrameType.COMMIT, commit('user.ok'))).toMatchObject({ type: 'commit' });
    expect(() => decodeMessage(FrameType.COMMIT, commit('user.a\0b'))).toThrow(/NUL/);
  });

  it('refuses a hard link whose source path escapes', () => {
    expect(() => decodeMessage(0x10, entry('a', { kind: 'hardlink', linkTo: '../x' }))).toThrow(
      expect.objectContaining({ code: 'FERRY_UNSAFE_PATH' }),
    );
  });

  it('refuses unknown fields, wrong types and unknown frame types', () => {
    expect(() => decodeMessage(0x10, entry('a', { evil: 1 }))).toThrow(
      expect.objectContaining({ code: 'FERRY_PROTOCOL_VIOLATION' }),
    );
    expect(() => decodeMessage(0x10, entry('a', { mode: 0o17777 }))).toThrow(/mode/);
    expect(() => decodeMessage(0x10, Buffer.from('{not json'))).toThrow(/JSON/);
    expect(() => decodeMessage(0x55, Buffer.from('{}'))).toThrow(/unknown frame type/);
    expect(() => decodeMessage(0x11, Buffer.from([1, 2, 3]))).toThrow(/DATA/);
  });

  it('takes a COPY only with whole, bounded numbers', () => {
    const copy = (body: object) => Buffer.from(JSON.stringify(body));
    expect(decodeMessage(FrameType.COPY, copy({ offset: 10, from: 0, length: 4096 }))).toEqual({
      type: 'copy',
      body: { offset: 10, from: 0, length: 4096 },
    });
    for (const bad of [
      { offset: -1, from: 0, length: 1 },
      { offset: 0, from: 0.5, length: 1 },
      { offset: 0, from: 0, length: 0 },
      { offset: 0, from: 0, length: (1 << 24) + 1 },
      { offset: 0, from: 0 },
      { offset: 0, from: 0, length: 1, seq: 3 },
    ])
      expect(() => decodeMessage(FrameType.COPY, copy(bad))).toThrow(
        expect.objectContaining({ code: 'FERRY_PROTOCOL_VIOLATION' }),
      );
  });

  it('decodes a FILES frame into its files and refuses one whose entries or sizes do not hold', () => {
    const file = (seq: number, path: string, size: number, extra: object = {}) => ({
      seq,
      path,
      kind: 'file',
      mode: 0o644,
      uid: 0,
      gid: 0,
      mtimeNs: '1',
      size,
      hash: 'c'.repeat(64),
      ...extra,
    });
    const frame = (entries: unknown, content: Buffer) => {
      const json = Buffer.from(JSON.stringify(entries));
      const head = Buffer.alloc(4);
      head.writeUInt32BE(json.length, 0);
      return Buffer.concat([head, json, content]);
    };
    const ok = decodeMessage(
      FrameType.FILES,
      frame([file(1, 'a', 2), file(2, 'b/c', 3)], Buffer.from('xxyyy')),
    );
    if (ok.type !== 'files') throw new Error('expected files');
    expect(ok.files.map((f) => [f.body.path, f.data.toString()])).toEqual([
      ['a', 'xx'],
      ['b/c', 'yyy'],
    ]);
    const violation = expect.objectContaining({ code: 'FERRY_PROTOCOL_VIOLATION' });
    const two = [file(1, 'a', 2), file(2, 'b', 3)];
    expect(() => decodeMessage(FrameType.FILES, frame(two, Buffer.from('xxyy')))).toThrow(/shorter/);
    expect(() => decodeMessage(FrameType.FILES, frame(two, Buffer.from('xxyyyz')))).toThrow(/longer/);
    expect(() => decodeMessage(FrameType.FILES, frame([], Buffer.alloc(0)))).toThrow(violation);
    expect(() => decodeMessage(FrameType.FILES, frame(file(1, 'a', 0), Buffer.alloc(0)))).toThrow(violation);
    expect(() =>
      decodeMessage(FrameType.FILES, frame([file(2, 'a', 0), file(1, 'b', 0)], Buffer.alloc(0))),
    ).toThrow(/order/);
    expect(() =>
      decodeMessage(
        FrameType.FILES,
        frame([file(1, 'a', 0), { ...file(2, 'd', 0), kind: 'dir' }], Buffer.alloc(0)),
      ),
    ).toThrow(violation);
    expect(() =>
      decodeMessage(FrameType.FILES, frame([file(1, 'a', 0, { resumeFrom: 0 })], Buffer.alloc(0))),
    ).toThrow(violation);
    // a file sent as bytes appended to the target's copy: only those bytes follow
    const grown = file(3, 'log', 41_000, { appendFrom: 40_000 });
    const withAppend = decodeMessage(
      FrameType.FILES,
      frame(
        [file(1, 'a', 2), grown, file(4, 'b', 1)],
        Buffer.concat([Buffer.from('xx'), Buffer.alloc(1000, 7), Buffer.from('y')]),
      ),
    );
    expect(withAppend.type === 'files' && withAppend.files.map((f) => f.data.length)).toEqual([2, 1000, 1]);
    expect(() => decodeMessage(FrameType.FILES, frame([grown], Buffer.alloc(41_000)))).toThrow(/longer/);
    for (const appendFrom of [41_000, 50_000, 0, -1, 1.5])
      expect(() =>
        decodeMessage(FrameType.FILES, frame([{ ...grown, appendFrom }], Buffer.alloc(1000))),
      ).toThrow(violation);
    for (const extra of [{ resumeFrom: 4096 }, { deltaBlockSize: 65536 }])
      expect(() =>
        decodeMessage(FrameType.FILES, frame([{ ...grown, ...extra }], Buffer.alloc(1000))),
      ).toThrow(violation);
    // the target reads the bytes before them into memory: a small file's worth at most
    const huge = file(3, 'log', 2 ** 40 + 1000, { appendFrom: 2 ** 40 });
    expect(() => decodeMessage(FrameType.FILES, frame([huge], Buffer.alloc(1000)))).toThrow(/larger than/);
    expect(() =>
      decodeMessage(FrameType.FILES, frame([file(1, 'ok', 0), file(2, '../escape', 0)], Buffer.alloc(0))),
    ).toThrow(expect.objectContaining({ code: 'FERRY_UNSAFE_PATH' }));
    const many = Array.from({ length: MAX_FILES_PER_FRAME + 1 }, (_, i) => file(i + 1, `f${i}`, 0));
    expect(() => decodeMessage(FrameType.FILES, frame(many, Buffer.alloc(0)))).toThrow(violation);
    expect(() => decodeMessage(FrameType.FILES, Buffer.from([0, 0, 0]))).toThrow(/header/);
  });

  it('accepts a 200-byte non-ASCII name', () => {
    const name = 'é'.repeat(100);
    expect(Buffer.byteLength(name)).toBe(200);
    const m = decodeMessage(0x10, entry(`d/${name}`));
    expect(m.type === 'entry' && m.body.path).toBe(`d/${name}`);
  });
});

describe('frame decoder with a frame pool', () => {
  const big = (n: number, fill: number): Message => ({
    type: 'data',
    offset: n,
    data: Buffer.alloc(600 * 1024, fill),
  });
  const chunked = (b: Buffer, size: number) => {
    const out: Buffer[] = [];
    for (let i = 0; i < b.length; i += size) out.push(b.subarray(i, i + size));
    return out;
  };

  it('assembles large frames that span chunks in pooled buffers, reused once released', () => {
    const pool = new FramePool({ size: MAX_FRAME_BYTES + 4, from: 256 * 1024, keep: 2 });
    const d = new FrameDecoder({ pool });
    const bytes = streamOf([big(0, 1), big(1, 2), big(2, 3), { type: 'commit', body: { seq: 9 } }]);
    const got: { msg: Message; release: () => void }[] = [];
    for (const c of chunked(bytes, 16 * 1024 + 7)) {
      for (const item of d.push(c)) {
        if (item.kind !== 'frame') continue;
        const msg = decodeMessage(item.type, item.payload);
        if (msg.type === 'data') expect(msg.data.every((b) => b === msg.offset + 1)).toBe(true);
        got.push({ msg, release: item.release });
        // the first frame is given back at once, so the second reuses its buffer; the
        // second is held, so the third needs a new one
        if (got.length === 1) item.release();
      }
    }
    expect(got.map((g) => g.msg.type)).toEqual(['data', 'data', 'data', 'commit']);
    expect(d.pendingBytes).toBe(0);
    expect(pool.stats).toEqual({ reused: 1, allocated: 2, outstanding: 2 });
    got[1]!.release();
    got[1]!.release(); // twice is harmless
    got[2]!.release();
    expect(pool.stats.outstanding).toBe(0);
    // the held frame's bytes were not overwritten by the ones decoded after it
    const second = got[1]!.msg;
    expect(second.type === 'data' && second.data.every((b) => b === 2)).toBe(true);
  });

  it('places pooled DATA payloads at aligned addresses when asked to (direct writes need no copy)', () => {
    const pool = new FramePool({
      size: MAX_FRAME_BYTES + 4,
      from: 256 * 1024,
      keep: 2,
      align: { after: 13, bytes: DIRECT_ALIGN, offsetOf: ferryFs.alignedOffset },
    });
    const d = new FrameDecoder({ pool });
    const bytes = streamOf([big(0, 1), big(1, 2), big(2, 3)]);
    let seen = 0;
    for (const c of chunked(bytes, 16 * 1024 + 7)) {
      for (const item of d.push(c)) {
        if (item.kind !== 'frame') continue;
        const msg = decodeMessage(item.type, item.payload);
        expect(msg.type === 'data' && msg.data.every((b) => b === msg.offset + 1)).toBe(true);
        if (msg.type === 'data') expect(ferryFs.alignedOffset(msg.data, 0)).toBe(0);
        item.release();
        seen++;
      }
    }
    expect(seen).toBe(3);
    expect(pool.stats.outstanding).toBe(0);
    expect(pool.stats.reused + pool.stats.allocated).toBe(3); // reused buffers keep their alignment too
    expect(pool.stats.reused).toBeGreaterThan(0);
  });

  it('leaves small frames and frames inside one chunk out of the pool', () => {
    const pool = new FramePool({ size: MAX_FRAME_BYTES + 4, from: 256 * 1024, keep: 2 });
    const d = new FrameDecoder({ pool });
    const bytes = streamOf([big(0, 7), ...sample]);
    const items = d.push(bytes).filter((i) => i.kind === 'frame');
    expect(items).toHaveLength(1 + sample.length);
    expect(pool.stats).toEqual({ reused: 0, allocated: 0, outstanding: 0 });
    // small frames split anywhere still decode (assembled in their own buffers)
    const d2 = new FrameDecoder({ pool });
    const out: Message[] = [];
    for (const c of chunked(streamOf(sample), 3))
      for (const i of d2.push(c)) if (i.kind === 'frame') out.push(decodeMessage(i.type, i.payload));
    expect(out).toEqual(sample);
    expect(pool.stats.allocated).toBe(0);
  });
});
