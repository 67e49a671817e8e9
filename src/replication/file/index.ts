/**
 * replication/file: the file-level engine. The source side walks a tree and reads files
 * (scan.ts, read-file.ts); the target side applies entries under a root it never leaves
 * (tree-writer.ts); pass.ts drives one replication pass over a protocol Session on the
 * source, receive.ts applies one on the target. Knows nothing of the console or HTTP.
 */

export { type BlockDevice, receiveBlocks, runBlocksSend } from './blocks.js';
export {
  configureHashing,
  type HashThreads,
  resolveHashThreads,
} from './content-hash.js';
export { entryFromScan, readXattrs } from './entry.js';
export {
  type PassProgress,
  type PassResult,
  runSendPass,
  type SyncRecord,
  type SyncStateStore,
  UNREADABLE_REPORTED,
  type UnreadableEntry,
} from './pass.js';
export { readFileRegions } from './read-file.js';
export { type ReceiveResult, receivePass } from './receive.js';
export { isExcluded, kindOf, normalizeExcludes, type ScannedEntry, scanTree } from './scan.js';
export { TreeWriter } from './tree-writer.js';
export { receiveVerify, runVerifySend } from './verify.js';
