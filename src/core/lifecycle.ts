import { FerryError } from '../errors/index.js';

export const STAGES = ['feasibility-check', 'full-replication', 'continuous-sync', 'target-launch'] as const;
export const STATUSES = [
  'pending-target-configuration',
  'ready',
  'running',
  'paused',
  'failed',
  'completed',
] as const;

export type Stage = (typeof STAGES)[number];
export type Status = (typeof STATUSES)[number];

export interface TaskState {
  readonly stage: Stage;
  readonly status: Status;
}

export type LifecycleEvent =
  | { readonly kind: 'configure' }
  | { readonly kind: 'start' }
  | { readonly kind: 'pause' }
  | { readonly kind: 'replication-done'; readonly continuousSync: boolean }
  | { readonly kind: 'sync' }
  | { readonly kind: 'launch' }
  | { readonly kind: 'launch-done' }
  | { readonly kind: 'fail' }
  | { readonly kind: 'delete' };

/**
 * What the driver must do besides storing the new state. `new-run` means the data
 * movers must (re)start from a fresh run id, so that reports of an older run are ignored.
 */
export type Effect = 'lock-target' | 'unlock-target' | 'release-resources' | 'new-run' | 'request-sync';

export type Transition = { readonly state: TaskState; readonly effects: readonly Effect[] };

type Rule = {
  readonly from: readonly (readonly [Stage, Status])[];
  readonly to: (from: TaskState, event: LifecycleEvent) => TaskState;
  readonly effects: (from: TaskState) => readonly Effect[];
};

const same = (s: TaskState): TaskState => s;
const at = (stage: Stage, status: Status) => (): TaskState => ({ stage, status });

const RULES: Record<LifecycleEvent['kind'], Rule> = {
  configure: {
    from: [
      ['feasibility-check', 'pending-target-configuration'],
      ['full-replication', 'ready'],
    ],
    to: at('full-replication', 'ready'),
    effects: () => [],
  },
  start: {
    from: [
      ['full-replication', 'ready'],
      ['full-replication', 'paused'],
      ['full-replication', 'failed'],
      ['continuous-sync', 'paused'],
      ['continuous-sync', 'failed'],
      ['target-launch', 'failed'],
    ],
    to: (s) => ({ stage: s.stage, status: 'running' }),
    effects: (s) => (s.status === 'ready' ? ['lock-target', 'new-run'] : ['new-run']),
  },
  pause: {
    from: [
      ['full-replication', 'running'],
      ['continuous-sync', 'running'],
    ],
    to: (s) => ({ stage: s.stage, status: 'paused' }),
    effects: () => ['new-run'],
  },
  'replication-done': {
    from: [['full-replication', 'running']],
    to: (_s, e) =>
      e.kind === 'replication-done' && e.continuousSync
        ? { stage: 'continuous-sync', status: 'running' }
        : { stage: 'target-launch', status: 'running' },
    effects: () => ['new-run'],
  },
  sync: {
    from: [['continuous-sync', 'running']],
    to: same,
    effects: () => ['request-sync'],
  },
  launch: {
    from: [
      ['continuous-sync', 'running'],
      ['continuous-sync', 'paused'],
      ['continuous-sync', 'failed'],
    ],
    to: at('target-launch', 'running'),
    effects: () => ['new-run'],
  },
  'launch-done': {
    from: [['target-launch', 'running']],
    to: at('target-launch', 'completed'),
    effects: () => ['unlock-target', 'release-resources'],
  },
  fail: {
    from: [
      ['full-replication', 'running'],
      ['continuous-sync', 'running'],
      ['target-launch', 'running'],
    ],
    to: (s) => ({ stage: s.stage, status: 'failed' }),
    effects: () => [],
  },
  delete: {
    from: STAGES.flatMap((stage) => STATUSES.map((status) => [stage, status] as const)),
    to: same,
    effects: (s) => (isLocking(s) ? ['unlock-target', 'release-resources'] : ['release-resources']),
  },
};

export function initialState(): TaskState {
  return { stage: 'feasibility-check', status: 'pending-target-configuration' };
}

/** True while the task holds its target: from Start until the migration ends. */
export function isLocking(s: TaskState): boolean {
  if (s.stage === 'feasibility-check') return false;
  if (s.stage === 'full-replication' && s.status === 'ready') return false;
  return !(s.stage === 'target-launch' && s.status === 'completed');
}

/**
 * The one place that decides what may happen to a task. Throws FerryError
 * (FERRY_ILLEGAL_TRANSITION, or FERRY_TARGET_NOT_CONFIGURED for a start before configure)
 * naming the current state and the states that would allow the event.
 */
export function transition(from: TaskState, event: LifecycleEvent): Transition {
  const rule = RULES[event.kind];
  const allowed = rule.from.some(([stage, status]) => stage === from.stage && status === from.status);
  if (!allowed) {
    const where = `${from.stage}/${from.status}`;
    if (event.kind === 'start' && from.stage === 'feasibility-check') {
      throw new FerryError(
        'FERRY_TARGET_NOT_CONFIGURED',
        `cannot start: no target is configured (task is ${where})`,
        {
          context: { event: event.kind, stage: from.stage, status: from.status },
        },
      );
    }
    const allowedText = rule.from.map(([st, su]) => `${st}/${su}`).join(', ');
    throw new FerryError(
      'FERRY_ILLEGAL_TRANSITION',
      `cannot ${event.kind} while the task is ${where}; allowed in: ${allowedText}`,
      {
        context: { event: event.kind, stage: from.stage, status: from.status },
      },
    );
  }
  return { state: rule.to(from, event), effects: rule.effects(from) };
}
