/**
 * core: the migration task lifecycle (stages × statuses × events → next state + effects).
 * Pure: takes and returns data. Must not import node:* modules or any I/O code; the
 * architecture test enforces it.
 */
export {
  STAGES,
  STATUSES,
  type Stage,
  type Status,
  type TaskState,
  type LifecycleEvent,
  type Effect,
  type Transition,
  initialState,
  transition,
  isLocking,
} from './lifecycle.js';
