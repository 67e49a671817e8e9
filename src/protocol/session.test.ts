import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { duplexPair } from '../../test/support/duplex-pair.js';
import { tlsPair } from '../../test/support/tls-pair.js';
import { DIRECT_ALIGN, ferryFs } from '../native/index.js';
import { reusedBufferReads } from '../transport/read-buffer.js';
import { compressChunk } from './compression.js';
import { encodeFrame } from './frame-codec.js';
import { FrameType, MAX_FILE_JSON_BYTES, type Message } from './messages.js';
import { Session } from './session.js';

/** A whole regular file's entry as FILE and FILES frames carry it. */
function wholeFile(seq: number, path: string, size: number, hash = 'a'.repeat(64)) {
  return { seq, path, kind: 'file' as const, mode: 0o644, uid: 0, gid: 0, mtimeNs: '1', size, hash };
}

describe('Session', () => {
  it('passes every frame through its pace function before writing it', async () => {
    const [a, b] = duplexPair();
    const paced: number[] = [];
    const sender = new Session(a, { pace: async (n) => void paced.push(n) });
    const receiver = new Session(b);
    await sender.send({ type: 'data', offset: 0, data: Buffer.alloc(1000) });
    await sender.send({ type: 'commit', body: { seq: 1 } });
    sender.close();
    const got = [];
    for await (const m of receiver.messages()) got.push(m.type);
    expect(got).toEqual(['data', 'commit']);
    expect(paced).toEqual([1013, 64]);
  });

  it('paces a whole file once, by the frames it finally goes as', async () => {
    const [a, b] = duplexPair();
    const paced: number[] = [];
    const sender = new Session(a, { pace: async (n) => void paced.push(n) });
    const receiver = new Session(b);
    const body = wholeFile(1, 'f', 10);
    await sender.send({ type: 'file', body, data: Buffer.alloc(10) });
    // an entry too large for a FILE frame: ENTRY, DATA, FILE_END, each paced once
    const half = 'x'.repeat(MAX_FILE_JSON_BYTES / 2 + 1000);
    const xattrs = [
      { name: 'user.a', value: half },
      { name: 'user.b', value: half },
    ];
    await sender.send({ type: 'file', body: { ...body, seq: 2, xattrs }, data: Buffer.alloc(10) });
    sender.close();
    const got = [];
    for await (const m of receiver.messages()) got.push(m.type);
    expect(got).toEqual(['file', 'entry', 'data', 'file-end']);
    expect(paced).toEqual([310, 64, 23, 64]);
  });

  it('stops reading while 4 MiB of decoded frames wait for the consumer, and goes on when they are taken', async () => {
    const [a, b] = duplexPair({ pieceBytes: 16 * 1024 });
    const sender = new Session(a);
    const receiver = new Session(b);
    const total = 24;
    for (let i = 0; i < total; i++)
      await sender.send({ type: 'data', offset: i << 20, data: Buffer.alloc(1 << 20, i) });
    sender.close();
    // the first message starts the reading; the consumer then takes nothing for a while
    const first = await receiver.next();
    expect(first).toMatchObject({ type: 'data', offset: 0 });
    await new Promise((r) => setTimeout(r, 50));
    expect(b.isPaused()).toBe(true);
    // what the stream still holds is what the session has not decoded: most of the 24 MiB
    expect(b.readableLength).toBeGreaterThan(16 << 20);
    const offsets = [0];
    for (;;) {
      const m = await receiver.next();
      if (!m) break;
      if (m.type === 'data') {
        expect(m.data.every((x) => x === m.offset >> 20)).toBe(true);
        offsets.push(m.offset);
        m.release?.();
      }
    }
    expect(offsets).toEqual(Array.from({ length: total }, (_, i) => i << 20));
    expect(receiver.framePool.stats.outstanding).toBe(1); // the first one was never released
  });

  it('bounds a flood of tiny frames by number too, and delivers them all in order', async () => {
    const [a, b] = duplexPair();
    const sender = new Session(a);
    const receiver = new Session(b);
    const total = 100_000;
    for (let i = 1; i <= total; i++) await sender.send({ type: 'ack', body: { seq: i } });
    sender.close();
    expect(await receiver.next()).toMatchObject({ type: 'ack', body: { seq: 1 } });
    await new Promise((r) => setTimeout(r, 50));
    // each waiting message counts at least 64 bytes: 4 MiB hold 65,536 of them, not 100,000
    expect(b.isPaused()).toBe(true);
    let expected = 2;
    for (;;) {
      const m = await receiver.next();
      if (!m) break;
      expect(m).toMatchObject({ type: 'ack', body: { seq: expected } });
      expected++;
    }
    expect(expected).toBe(total + 1);
  });

  it('places received DATA payloads at aligned addresses when given the alignment (as the target does)', async () => {
    const [a, b] = duplexPair({ pieceBytes: 16 * 1024 });
    const sender = new Session(a);
    const receiver = new Session(b, {
      alignPayloads: { bytes: DIRECT_ALIGN, offsetOf: ferryFs.alignedOffset },
    });
    for (let i = 0; i < 3; i++)
      await sender.send({ type: 'data', offset: i << 20, data: Buffer.alloc(1 << 20, i + 1) });
    sender.close();
    let n = 0;
    for await (const m of receiver.messages()) {
      if (m.type !== 'data') continue;
      expect(m.data.every((x) => x === (m.offset >> 20) + 1)).toBe(true);
      expect(ferryFs.alignedOffset(m.data, 0)).toBe(0);
      m.release?.();
      n++;
    }
    expect(n).toBe(3);
  });

  it('reports a connection that closed before the first read instead of waiting for it', async () => {
    const [a, b] = duplexPair();
    const receiver = new Session(b);
    new Session(a);
    b.destroy();
    await new Promise((r) => setImmediate(r));
    await expect(receiver.next()).rejects.toMatchObject({ code: 'FERRY_CONNECTION_LOST' });
  });

  it('answers a malformed frame with an ERROR frame before closing', async () => {
    const [a, b] = duplexPair();
    const receiver = new Session(b);
    const peer = new Session(a);
    a.write(Buffer.from([0, 0, 0, 2, 0x55, 0]));
    await expect(receiver.next()).rejects.toMatchObject({ code: 'FERRY_PROTOCOL_VIOLATION' });
    expect(await peer.next()).toMatchObject({ type: 'error', body: { code: 'FERRY_PROTOCOL_VIOLATION' } });
  });

  it('compresses DATA chunks that shrink, sends the others as they are, and delivers both unchanged', async () => {
    const [a, b] = duplexPair();
    const sender = new Session(a, { compress: true });
    const receiver = new Session(b);
    const text = Buffer.from('a system log line that repeats\n'.repeat(30_000));
    const noise = randomBytes(500_000);
    await sender.send({ type: 'data', offset: 0, data: text });
    await sender.send({ type: 'data', offset: text.length, data: noise });
    sender.close();
    const got: Buffer[] = [];
    for await (const m of receiver.messages()) if (m.type === 'data') got.push(m.data);
    expect(got[0]!.equals(text)).toBe(true);
    expect(got[1]!.equals(noise)).toBe(true);
    expect(sender.dataStats.raw).toBe(text.length + noise.length);
    expect(sender.dataStats.sent).toBeLessThan(noise.length + text.length / 20);
    expect(sender.dataStats.sent).toBeGreaterThanOrEqual(noise.length);
  });

  it('refuses a DATA_Z frame whose content is not the declared length, or declares more than a frame', async () => {
    for (const [declared, body] of [
      [10, compressChunk(Buffer.alloc(4096, 1))!],
      [8192, compressChunk(Buffer.alloc(4096, 1))!],
      [(1 << 20) + 1, compressChunk(Buffer.alloc(4096, 1))!],
      [4096, Buffer.from('not zstd at all')],
    ] as const) {
      const [a, b] = duplexPair();
      const receiver = new Session(b);
      new Session(a);
      const head = Buffer.alloc(12);
      head.writeBigUInt64BE(0n, 0);
      head.writeUInt32BE(declared, 8);
      a.write(encodeFrame(FrameType.DATA_Z, Buffer.concat([head, body])));
      await expect(receiver.next()).rejects.toMatchObject({ code: 'FERRY_PROTOCOL_VIOLATION' });
    }
  });

  it('carries a small file as one FILE frame, splits one too big for a frame, and refuses a FILE whose size lies', async () => {
    const [a, b] = duplexPair();
    const sender = new Session(a);
    const receiver = new Session(b);
    const entry = wholeFile(1, 'etc/motd', 5);
    await sender.send({ type: 'file', body: entry, data: Buffer.from('hello') });
    // xattrs so large that entry and content do not fit in one frame: ENTRY, DATA, FILE_END
    const xattrs = [{ name: 'user.big', value: 'x'.repeat(80_000) }];
    const big = Buffer.alloc(1 << 20, 1);
    await sender.send({
      type: 'file',
      body: { ...entry, seq: 2, size: big.length, xattrs },
      data: big,
    });
    sender.close();
    const got: string[] = [];
    for await (const m of receiver.messages())
      got.push(m.type === 'file' ? `file:${m.data.toString()}` : m.type);
    expect(got).toEqual(['file:hello', 'entry', 'data', 'file-end']);

    const [c, d] = duplexPair();
    const liar = new Session(d);
    new Session(c);
    const json = Buffer.from(JSON.stringify({ ...entry, size: 99 }));
    const head = Buffer.alloc(4);
    head.writeUInt32BE(json.length, 0);
    c.write(encodeFrame(FrameType.FILE, Buffer.concat([head, json, Buffer.from('hello')])));
    await expect(liar.next()).rejects.toMatchObject({ code: 'FERRY_PROTOCOL_VIOLATION' });
  });

  it('reads an accepted TLS socket into one reused buffer, and what it hands out stays intact after later reads', async () => {
    const pair = await tlsPair();
    try {
      const sender = new Session(pair.client);
      const receiver = new Session(pair.server, { readInto: reusedBufferReads });
      const sizes = Array.from({ length: 400 }, (_, i) => (i * 7919) % 40_000);
      const files = sizes.map((n, i) => ({
        body: wholeFile(i + 1, `d/f${i}`, n),
        data: randomBytes(n),
      }));
      const chunks = [100, 5000, 1 << 20].map((n) => randomBytes(n));
      const sending = (async () => {
        for (let i = 0; i < files.length; i += 50)
          await sender.send({ type: 'files', files: files.slice(i, i + 50) });
        for (const f of files.slice(0, 5)) await sender.send({ type: 'file', ...f });
        for (const [i, data] of chunks.entries()) await sender.send({ type: 'data', offset: i, data });
        await sender.send({ type: 'commit', body: { seq: 9999 } });
      })();
      // everything is received before anything is compared: a view of the read buffer would
      // by then hold later bytes
      const got: Message[] = [];
      for (;;) {
        const m = await receiver.next();
        if (!m) break;
        got.push(m);
        if (m.type === 'commit') break;
      }
      await sending;
      expect(receiver.readsIntoReusedBuffer).toBe(true);
      const whole = got.flatMap((m) =>
        m.type === 'files' ? m.files : m.type === 'file' ? [{ body: m.body, data: m.data }] : [],
      );
      expect(whole.map((f) => f.body)).toEqual([...files, ...files.slice(0, 5)].map((f) => f.body));
      expect(whole.every((f, i) => f.data.equals(files[i % files.length]!.data))).toBe(true);
      const data = got.flatMap((m) => (m.type === 'data' ? [m.data] : []));
      expect(data.map((d, i) => d.equals(chunks[i]!))).toEqual([true, true, true]);
      expect(got.at(-1)).toEqual({ type: 'commit', body: { seq: 9999 } });
    } finally {
      await pair.close();
    }
  });

  it("calls a sent message's release once its buffers are written, so that overwriting them then changes nothing received", async () => {
    for (const compress of [false, true]) {
      const pair = await tlsPair();
      try {
        const sender = new Session(pair.client, { compress });
        const receiver = new Session(pair.server);
        const expected: Buffer[] = [];
        const releases: number[] = [];
        /** Content that overwrites itself with 0xEE on release, as a reused read buffer would be. */
        const content = (n: number, i: number) => {
          const b = i % 2 ? randomBytes(n) : Buffer.alloc(n, i & 0x7f); // some compress, some do not
          expected.push(Buffer.from(b));
          return b;
        };
        const overwrite = (bufs: Buffer[], i: number) => () => {
          releases.push(i);
          for (const b of bufs) b.fill(0xee);
        };
        let seq = 0;
        const sent = (async () => {
          for (let i = 0; i < 60; i++) {
            const d = content(256 << 10, i);
            await sender.send({ type: 'data', offset: 0, data: d, release: overwrite([d], i) });
            // three small files in one FILES frame, one of them empty
            const fs = [content(5000, i), content(0, i), content(70_000, i)];
            await sender.send({
              type: 'files',
              files: fs.map((data) => ({ body: wholeFile(++seq, `f${seq}`, data.length), data })),
              release: overwrite(fs, 1000 + i),
            });
            // two files too large for one frame together: each goes as its own FILE frame
            const big = [content(600 << 10, i), content(600 << 10, i)];
            await sender.send({
              type: 'files',
              files: big.map((data) => ({ body: wholeFile(++seq, `b${seq}`, data.length), data })),
              release: overwrite(big, 2000 + i),
            });
          }
          sender.close();
        })();
        const got: Buffer[] = [];
        for await (const m of receiver.messages()) {
          if (m.type === 'data') got.push(Buffer.from(m.data));
          else if (m.type === 'file') got.push(Buffer.from(m.data));
          else if (m.type === 'files') for (const f of m.files) got.push(Buffer.from(f.data));
          if ('release' in m) m.release?.();
        }
        await sent;
        // compressed, whole files go as ENTRY, DATA, FILE_END: DATA per non-empty file
        const want = compress ? expected.filter((b) => b.length > 0) : expected;
        expect(got.length).toBe(want.length);
        // the index of the first content that differs (Buffer.equals: toEqual walks 46 MB byte by byte)
        expect(got.findIndex((b, i) => !b.equals(want[i]!))).toBe(-1);
        expect(releases.length).toBe(180); // each message's release, once
        expect(new Set(releases).size).toBe(180);
      } finally {
        await pair.close();
      }
    }
  });

  it('does not release the buffers of a message the connection could not take', async () => {
    const [a] = duplexPair();
    const sender = new Session(a);
    sender.destroy();
    let released = 0;
    await expect(
      sender.send({ type: 'data', offset: 0, data: Buffer.alloc(10), release: () => released++ }),
    ).rejects.toMatchObject({ code: 'FERRY_CONNECTION_LOST' });
    expect(released).toBe(0);
  });

  it('carries whole files together in one FILES frame, file by file where they do not fit or are compressed', async () => {
    const entry = (seq: number, size: number) => wholeFile(seq, `d/f${seq}`, size, 'b'.repeat(64));
    const files = [0, 5, 3000].map((n, i) => ({ body: entry(i + 1, n), data: Buffer.alloc(n, i + 1) }));
    const received = async (opts: { compress?: boolean }, batch: typeof files) => {
      const [a, b] = duplexPair({ pieceBytes: 1000 });
      const sender = new Session(a, opts);
      const receiver = new Session(b);
      await sender.send({ type: 'files', files: batch });
      sender.close();
      const got: Message[] = [];
      for await (const m of receiver.messages()) got.push(m);
      return got;
    };
    const [one, ...none] = await received({}, files);
    expect(none).toEqual([]);
    if (one?.type !== 'files') throw new Error(`expected FILES, got ${one?.type}`);
    expect(one.files.map((f) => f.body)).toEqual(files.map((f) => f.body));
    expect(one.files.map((f) => f.data)).toEqual(files.map((f) => f.data));
    expect(typeof one.release).toBe('function');
    // two files of 600 KiB: more than one frame holds, so each goes as its own FILE frame
    const big = [1, 2].map((i) => ({ body: entry(i, 600 << 10), data: Buffer.alloc(600 << 10, i) }));
    expect((await received({}, big)).map((m) => m.type)).toEqual(['file', 'file']);
    // compressed: ENTRY, DATA, FILE_END per file, as for FILE
    expect((await received({ compress: true }, files.slice(1))).map((m) => m.type)).toEqual([
      'entry',
      'data',
      'file-end',
      'entry',
      'data',
      'file-end',
    ]);
  });
});
