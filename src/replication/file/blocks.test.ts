import { describe, expect, it } from 'vitest';
import { duplexPair } from '../../../test/support/duplex-pair.js';
import { Session } from '../../protocol/index.js';
import { receiveBlocks } from './blocks.js';

/** Sends one RAW header to a target that holds `devices`; returns what the target says. */
async function offer(devices: { path: string; sizeBytes: number }[], raw: { index: number; size: number }) {
  const [a, b] = duplexPair();
  const source = new Session(a);
  const target = receiveBlocks(new Session(b), devices);
  await source.send({ type: 'raw', body: { seq: 0, ...raw } });
  const [answer] = await Promise.all([source.next(), target.catch((e) => e)]);
  return { answer, result: await target.catch((e) => e) };
}

describe('blocks pass, target side', () => {
  it('refuses a partition the task does not copy, and one larger than its target partition, before opening anything', async () => {
    const devices = [{ path: '/dev/does-not-exist', sizeBytes: 1 << 20 }];
    const unknown = await offer(devices, { index: 1, size: 1024 });
    expect(unknown.result).toMatchObject({ code: 'FERRY_PROTOCOL_VIOLATION' });
    expect(unknown.answer).toMatchObject({ type: 'error', body: { code: 'FERRY_PROTOCOL_VIOLATION' } });
    const larger = await offer(devices, { index: 0, size: (1 << 20) + 1 });
    expect(larger.result).toMatchObject({
      code: 'FERRY_PROTOCOL_VIOLATION',
      message: expect.stringContaining('larger'),
    });
  });
});
