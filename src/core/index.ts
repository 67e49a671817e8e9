/**
 * core: the migration task lifecycle (stages × statuses × events → next state + effects).
 * Pure: takes and returns data. Must not import node:* modules or any I/O code; the
 * architecture test enforces it.
 */
export {
  type Effect,
  initialState,
  isLocking,
  type LifecycleEvent,
  STAGES,
  STATUSES,
  type Stage,
  type Status,
  type TaskState,
  type Transition,
  transition,
} from './lifecycle.js';
