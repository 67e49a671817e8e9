/**
 * control: the messages of the control channel between the console and its agents and
 * targets (registration, heartbeats, jobs, events), as TypeBox schemas that are at once
 * the API validation, the TypeScript types and the OpenAPI document. Pure data; no I/O.
 */
export * from './layout.js';
export * from './messages.js';
export * from './rate.js';
export * from './verify.js';
