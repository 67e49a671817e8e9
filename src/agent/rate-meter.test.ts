import { describe, expect, it } from 'vitest';
import { RateMeter } from './rate-meter.js';

describe('RateMeter', () => {
  it('measures bytes per second over its window', () => {
    const m = new RateMeter(5000);
    expect(m.sample(0, 0)).toBe(0);
    expect(m.sample(1000, 1_000_000)).toBe(1_000_000);
    expect(m.sample(2000, 3_000_000)).toBe(1_500_000);
    for (let t = 3000; t <= 10_000; t += 1000) m.sample(t, 3_000_000 + (t - 2000) * 500);
    expect(m.sample(11_000, 7_500_000)).toBe(500_000);
  });
});
