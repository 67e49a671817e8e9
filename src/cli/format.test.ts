import { describe, expect, it } from 'vitest';
import type { VerifyReport } from '../control/index.js';
import { showPath, verifyReport } from './format.js';

/** A report of three entries in `dir`, one of them `problem` (counted as `kind`). */
function reportOf(dir: string, example: string, problem: string, kind: 'different' | 'extra'): VerifyReport {
  const counts = { files: 3, different: 0, missing: 0, extra: 0, [kind]: 1 };
  const { files: _, ...rest } = counts;
  return {
    mode: 'full',
    identical: false,
    totals: { files: 3, ...rest },
    directories: [{ path: dir, ...counts }],
    examples: [{ path: example, problem }],
    truncated: false,
    seconds: 0.2,
    finishedAt: '2026-11-28T00:00:00.000Z',
  };
}

describe('paths for people', () => {
  it('shows each byte of a name that is not UTF-8 as \\xNN, and leaves text alone', () => {
    expect(showPath('/home/r\udce9sum\udce9/caf\udce9.txt')).toBe('/home/r\\xe9sum\\xe9/caf\\xe9.txt');
    expect(showPath('/opt/ünïcödé/😀')).toBe('/opt/ünïcödé/😀');
    const out = verifyReport(
      reportOf('/r\udce9sum\udce9', '/r\udce9sum\udce9/caf\udce9', 'content differs', 'different'),
    );
    expect(out).toContain('/r\\xe9sum\\xe9/caf\\xe9: content differs');
    expect(out).not.toContain('\udce9');
  });

  it('says how many entries a live source lost during the check, and nothing when none', () => {
    const report = reportOf('/var/spool', '/var/spool/q1', 'only on the target', 'extra');
    expect(verifyReport({ ...report, changedOnSource: 2 })).toContain(
      '2 entries were removed or replaced on the source while it was checked',
    );
    expect(verifyReport({ ...report, changedOnSource: 0 })).not.toContain('removed or replaced');
    expect(verifyReport(report)).not.toContain('removed or replaced');
  });
});
