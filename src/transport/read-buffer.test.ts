import { createHash, randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { tlsPair } from '../../test/support/tls-pair.js';
import { readIntoReusedBuffer } from './read-buffer.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('readIntoReusedBuffer', () => {
  it('reads an accepted TLS socket into the one buffer: every byte in order, what was queued first, and pause() stops the reads', async () => {
    const pair = await tlsPair();
    cleanups.push(pair.close);
    const sent = randomBytes(6 << 20);
    // part of the data arrives before the switch and waits in the stream
    pair.client.write(sent.subarray(0, 100_000));
    await sleep(150);
    const buffer = Buffer.alloc(64 * 1024);
    const hash = createHash('sha256');
    let got = 0;
    let views = 0;
    let elsewhere = 0;
    let onByte: (() => void) | null = null;
    const ok = readIntoReusedBuffer(pair.server, buffer, (chunk) => {
      hash.update(chunk);
      got += chunk.length;
      if (chunk.buffer === buffer.buffer) views++;
      else elsewhere++;
      onByte?.();
    });
    // Node 20 stores the option where this code looks; if a new Node moves it, this fails
    // rather than the target silently losing the faster reads
    expect(ok).toBe(true);
    expect(got).toBeGreaterThan(0); // the queued part, handed over at once
    pair.client.write(sent.subarray(100_000));
    await new Promise<void>((resolve) => {
      onByte = () => {
        if (got >= 2 << 20) {
          onByte = null;
          pair.server.pause();
          resolve();
        }
      };
    });
    const atPause = got;
    await sleep(300);
    // a read already decrypted may still arrive; nothing near the megabytes still in flight
    expect(got - atPause).toBeLessThan(256 * 1024);
    const done = new Promise<void>((resolve) => {
      onByte = () => got === sent.length && resolve();
    });
    pair.server.resume();
    await done;
    expect(hash.digest('hex')).toBe(createHash('sha256').update(sent).digest('hex'));
    expect(views).toBeGreaterThan(50); // 6 MiB in TLS records of at most 16 KiB
    expect(elsewhere).toBeLessThanOrEqual(1); // only the queued part came in its own buffer
  });

  it("reports the end of the stream as 'end', as with 'data'", async () => {
    const pair = await tlsPair();
    cleanups.push(pair.close);
    let got = 0;
    expect(
      readIntoReusedBuffer(pair.server, Buffer.alloc(4096), (c) => {
        got += c.length;
      }),
    ).toBe(true);
    const ended = new Promise<void>((resolve) => pair.server.once('end', () => resolve()));
    pair.client.end(Buffer.alloc(50_000, 1));
    await ended;
    expect(got).toBe(50_000);
  });

  it("leaves a stream that is not a socket, or already read through 'data', as it is", async () => {
    expect(readIntoReusedBuffer(new PassThrough(), Buffer.alloc(16), () => {})).toBe(false);
    const pair = await tlsPair();
    cleanups.push(pair.close);
    const viaData: Buffer[] = [];
    pair.server.on('data', (c: Buffer) => viaData.push(c));
    let viaBuffer = 0;
    expect(
      readIntoReusedBuffer(pair.server, Buffer.alloc(4096), (c) => {
        viaBuffer += c.length;
      }),
    ).toBe(false);
    pair.client.write('hello');
    await sleep(100);
    expect(Buffer.concat(viaData).toString()).toBe('hello');
    expect(viaBuffer).toBe(0);
  });
});
