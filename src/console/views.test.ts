import { describe, expect, it } from 'vitest';
import type { TaskRow } from './store/store.js';
import { progressView } from './views.js';

const task = (progress: object | null, stage = 'full-replication', status = 'running') =>
  ({ stage, status, progress: progress ? JSON.stringify(progress) : null }) as unknown as TaskRow;
const base = { runId: 1, phase: 'full', state: 'transferring', rateBytesPerSecond: 0 };

describe('progressView', () => {
  it('computes percent and remaining time from bytes', () => {
    const v = progressView(
      task({
        ...base,
        bytesDone: 250,
        bytesTotal: 1000,
        filesDone: 1,
        filesTotal: 4,
        rateBytesPerSecond: 50,
      }),
    );
    expect(v).toMatchObject({ percent: 25, etaSeconds: 15 });
  });
  it('falls back to files when there are no bytes to count', () => {
    expect(
      progressView(task({ ...base, bytesDone: 0, bytesTotal: 0, filesDone: 500, filesTotal: 1000 })).percent,
    ).toBe(50);
  });
  it('says 100% once completed and 0% before anything is known', () => {
    expect(progressView(task(null, 'target-launch', 'completed')).percent).toBe(100);
    expect(
      progressView(task({ ...base, bytesDone: 0, bytesTotal: 0, filesDone: 0, filesTotal: 0 })).percent,
    ).toBe(0);
  });
});
