import { describe, expect, it } from 'vitest';
import { showPath, verifyReport } from './format.js';

describe('paths for people', () => {
  it('shows each byte of a name that is not UTF-8 as \\xNN, and leaves text alone', () => {
    expect(showPath('/home/r\udce9sum\udce9/caf\udce9.txt')).toBe('/home/r\\xe9sum\\xe9/caf\\xe9.txt');
    expect(showPath('/opt/ünïcödé/😀')).toBe('/opt/ünïcödé/😀');
    const out = verifyReport({
      mode: 'full',
      identical: false,
      totals: { files: 3, different: 1, missing: 0, extra: 0 },
      directories: [{ path: '/r\udce9sum\udce9', files: 3, different: 1, missing: 0, extra: 0 }],
      examples: [{ path: '/r\udce9sum\udce9/caf\udce9', problem: 'content differs' }],
      truncated: false,
      seconds: 0.2,
      finishedAt: '2026-11-27T20:00:00.000Z',
    });
    expect(out).toContain('/r\\xe9sum\\xe9/caf\\xe9: content differs');
    expect(out).not.toContain('\udce9');
  });

  it('says how many entries a live source lost during the check, and nothing when none', () => {
    const report = {
      mode: 'quick' as const,
      identical: false,
      totals: { files: 3, different: 0, missing: 0, extra: 2 },
      directories: [{ path: '/var/spool', files: 3, different: 0, missing: 0, extra: 2 }],
      examples: [{ path: '/var/spool/q1', problem: 'only on the target' }],
      truncated: false,
      seconds: 0.2,
      finishedAt: '2026-11-28T00:00:00.000Z',
    };
    expect(verifyReport({ ...report, changedOnSource: 2 })).toContain(
      '2 entries were removed or replaced on the source while it was checked',
    );
    expect(verifyReport({ ...report, changedOnSource: 0 })).not.toContain('removed or replaced');
    expect(verifyReport(report)).not.toContain('removed or replaced');
  });
});
