import { describe, expect, it } from 'vitest';
import { FerryError } from '../errors/index.js';
import {
  initialState,
  isLocking,
  type LifecycleEvent,
  STAGES,
  STATUSES,
  type Stage,
  type Status,
  transition,
} from './lifecycle.js';

const EVENTS: LifecycleEvent[] = [
  { kind: 'configure' },
  { kind: 'start' },
  { kind: 'pause' },
  { kind: 'replication-done', continuousSync: true },
  { kind: 'replication-done', continuousSync: false },
  { kind: 'sync' },
  { kind: 'launch' },
  { kind: 'launch-done' },
  { kind: 'fail' },
  { kind: 'delete' },
];

// The whole legal table: "stage/status event" -> "stage/status". Anything not here is illegal.
const LEGAL: Record<string, string> = {
  'feasibility-check/pending-target-configuration configure': 'full-replication/ready',
  'full-replication/ready configure': 'full-replication/ready',
  'full-replication/ready start': 'full-replication/running',
  'full-replication/paused start': 'full-replication/running',
  'full-replication/failed start': 'full-replication/running',
  'continuous-sync/paused start': 'continuous-sync/running',
  'continuous-sync/failed start': 'continuous-sync/running',
  'target-launch/failed start': 'target-launch/running',
  'full-replication/running pause': 'full-replication/paused',
  'continuous-sync/running pause': 'continuous-sync/paused',
  'full-replication/running replication-done+cs': 'continuous-sync/running',
  'full-replication/running replication-done': 'target-launch/running',
  'continuous-sync/running sync': 'continuous-sync/running',
  'continuous-sync/running launch': 'target-launch/running',
  'continuous-sync/paused launch': 'target-launch/running',
  'continuous-sync/failed launch': 'target-launch/running',
  'target-launch/running launch-done': 'target-launch/completed',
  'full-replication/running fail': 'full-replication/failed',
  'continuous-sync/running fail': 'continuous-sync/failed',
  'target-launch/running fail': 'target-launch/failed',
};

function eventName(e: LifecycleEvent): string {
  return e.kind === 'replication-done' && e.continuousSync ? 'replication-done+cs' : e.kind;
}

describe('lifecycle transition table', () => {
  const cases: [Stage, Status, LifecycleEvent][] = [];
  for (const stage of STAGES)
    for (const status of STATUSES) for (const e of EVENTS) cases.push([stage, status, e]);

  it.each(cases)('%s/%s on %o', (stage, status, event) => {
    const key = `${stage}/${status} ${eventName(event)}`;
    if (event.kind === 'delete') {
      expect(transition({ stage, status }, event).state).toEqual({ stage, status });
      return;
    }
    const expected = LEGAL[key];
    if (expected === undefined) {
      let err: unknown;
      try {
        transition({ stage, status }, event);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(FerryError);
      const code = (err as FerryError).code;
      expect(['FERRY_ILLEGAL_TRANSITION', 'FERRY_TARGET_NOT_CONFIGURED']).toContain(code);
      expect((err as FerryError).message).toContain(`${stage}/${status}`);
    } else {
      const t = transition({ stage, status }, event);
      expect(`${t.state.stage}/${t.state.status}`).toBe(expected);
    }
  });

  it('starts every task waiting for a target', () => {
    expect(initialState()).toEqual({ stage: 'feasibility-check', status: 'pending-target-configuration' });
  });

  it('refuses a start before configure with FERRY_TARGET_NOT_CONFIGURED', () => {
    expect(() => transition(initialState(), { kind: 'start' })).toThrow(
      expect.objectContaining({ code: 'FERRY_TARGET_NOT_CONFIGURED' }),
    );
  });

  it('locks the target on the first start and unlocks it on completion', () => {
    expect(transition({ stage: 'full-replication', status: 'ready' }, { kind: 'start' }).effects).toContain(
      'lock-target',
    );
    expect(
      transition({ stage: 'full-replication', status: 'paused' }, { kind: 'start' }).effects,
    ).not.toContain('lock-target');
    const done = transition({ stage: 'target-launch', status: 'running' }, { kind: 'launch-done' });
    expect(done.effects).toEqual(expect.arrayContaining(['unlock-target', 'release-resources']));
  });

  it('holds the lock from start until completion', () => {
    expect(isLocking({ stage: 'full-replication', status: 'ready' })).toBe(false);
    expect(isLocking({ stage: 'full-replication', status: 'running' })).toBe(true);
    expect(isLocking({ stage: 'full-replication', status: 'failed' })).toBe(true);
    expect(isLocking({ stage: 'continuous-sync', status: 'paused' })).toBe(true);
    expect(isLocking({ stage: 'target-launch', status: 'completed' })).toBe(false);
  });

  it('releases the target when a locked task is deleted', () => {
    const t = transition({ stage: 'continuous-sync', status: 'running' }, { kind: 'delete' });
    expect(t.effects).toEqual(expect.arrayContaining(['unlock-target', 'release-resources']));
  });
});
