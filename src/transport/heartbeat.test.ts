import { describe, expect, it } from 'vitest';
import { Heartbeat, pollUntilStopped } from './heartbeat.js';

describe('Heartbeat', () => {
  it('never runs two beats at once and runs once more when kicked during a beat', async () => {
    let running = 0;
    let maxRunning = 0;
    let beats = 0;
    let release!: () => void;
    const hb = new Heartbeat(async () => {
      running++;
      maxRunning = Math.max(maxRunning, running);
      beats++;
      if (beats === 1) await new Promise<void>((r) => (release = r));
      running--;
    }, 60_000);
    hb.kick();
    hb.kick();
    hb.kick();
    release();
    await new Promise((r) => setTimeout(r, 20));
    hb.stop();
    expect(maxRunning).toBe(1);
    expect(beats).toBe(2);
  });
});

describe('pollUntilStopped', () => {
  it('keeps polling through failures until stopped', async () => {
    let calls = 0;
    let stop = false;
    await pollUntilStopped(
      async () => {
        calls++;
        if (calls === 2) throw new Error('console away');
        if (calls === 4) stop = true;
      },
      () => stop,
      1,
    );
    expect(calls).toBe(4);
  });
});
