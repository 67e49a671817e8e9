/**
 * agent: `ferry agent`, the daemon on the source server. Registers, reports inventory and
 * feasibility checks, polls the console for its job over an outbound mTLS channel, and
 * streams the data directly to the target. Must not import console, target or cli code.
 */

export { collectInventory, emptyDirsFor, listMounts, runChecks } from './inventory.js';
export { type AgentOptions, type RunningAgent, startAgent } from './main.js';
export { SqliteSyncState } from './sync-state.js';
