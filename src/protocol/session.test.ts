import { describe, expect, it } from 'vitest';
import { duplexPair } from '../../test/support/duplex-pair.js';
import { Session } from './session.js';

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

  it('answers a malformed frame with an ERROR frame before closing', async () => {
    const [a, b] = duplexPair();
    const receiver = new Session(b);
    const peer = new Session(a);
    a.write(Buffer.from([0, 0, 0, 2, 0x55, 0]));
    await expect(receiver.next()).rejects.toMatchObject({ code: 'FERRY_PROTOCOL_VIOLATION' });
    expect(await peer.next()).toMatchObject({ type: 'error', body: { code: 'FERRY_PROTOCOL_VIOLATION' } });
  });
});
