/**
 * target: `ferry target`, the daemon on the target server. Registers with its data
 * address, accepts mutually authenticated data connections only from the source the
 * console assigned to it, writes under its root and never outside, finalizes the launch
 * and releases temporary resources. Must not import console, agent or cli code.
 */
export { type RunningTarget, startTarget, type TargetOptions } from './main.js';
