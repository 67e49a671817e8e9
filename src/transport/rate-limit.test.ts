import { describe, expect, it } from 'vitest';
import { mbpsAt, parseRateWindow } from '../control/rate.js';
import { RateLimiter } from './rate-limit.js';

/** Sends `total` bytes in `chunk`-byte pieces against a fake clock; returns the seconds it took. */
function simulate(limiter: RateLimiter, clock: { t: number }, total: number, chunk: number): number {
  const start = clock.t;
  for (let sent = 0; sent < total; sent += chunk) clock.t += limiter.delayFor(chunk);
  return (clock.t - start) / 1000;
}

describe('RateLimiter', () => {
  it('holds 100 Mbit/s within 1% over 30 s of 1 MiB frames', () => {
    const clock = { t: 0 };
    const rate = 100e6 / 8;
    const l = new RateLimiter(
      () => rate,
      () => clock.t,
    );
    const seconds = simulate(l, clock, rate * 30, 1 << 20);
    expect(Math.abs(seconds - 30) / 30).toBeLessThan(0.01);
  });

  it('is unlimited at 0 and follows a change of rate at once', () => {
    const clock = { t: 0 };
    let rate = 0;
    const l = new RateLimiter(
      () => rate,
      () => clock.t,
    );
    expect(simulate(l, clock, 1e9, 1 << 20)).toBe(0);
    rate = 10e6 / 8;
    const s = simulate(l, clock, rate * 10, 64 * 1024);
    expect(Math.abs(s - 10) / 10).toBeLessThan(0.02);
    rate = 40e6 / 8;
    const s2 = simulate(l, clock, rate * 10, 64 * 1024);
    expect(Math.abs(s2 - 10) / 10).toBeLessThan(0.02);
  });
});

describe('rate windows', () => {
  const settings = {
    mbps: 100,
    windows: [parseRateWindow('09:00-17:00=20')!, parseRateWindow('22:00-06:00=0')!],
  };
  it('applies the window in force, wrapping past midnight, else the default', () => {
    expect(mbpsAt(settings, 8 * 60 + 59)).toBe(100);
    expect(mbpsAt(settings, 9 * 60)).toBe(20);
    expect(mbpsAt(settings, 16 * 60 + 59)).toBe(20);
    expect(mbpsAt(settings, 17 * 60)).toBe(100);
    expect(mbpsAt(settings, 23 * 60)).toBe(0);
    expect(mbpsAt(settings, 3 * 60)).toBe(0);
    expect(mbpsAt(settings, 6 * 60)).toBe(100);
  });
  it('parses HH:MM-HH:MM=MBIT and refuses anything else', () => {
    expect(parseRateWindow('01:30-02:45=12.5')).toEqual({ start: '01:30', end: '02:45', mbps: 12.5 });
    expect(parseRateWindow('1:30-02:45=1')).toBeNull();
    expect(parseRateWindow('01:30-02:45')).toBeNull();
  });
});
