/**
 * replication/file: the file-level engine. The source side walks a tree and reads files
 * (scan.ts, read-file.ts); the target side applies entries under a root it never leaves
 * (tree-writer.ts); pass.ts drives one replication pass over a protocol Session on the
 * source, receive.ts applies one on the target. Knows nothing of the console or HTTP.
 */
export { type ScannedEntry, scanTree, kindOf, isExcluded, normalizeExcludes } from './scan.js';
export { readFileRegions } from './read-file.js';
export { TreeWriter } from './tree-writer.js';
export { runSendPass, type PassProgress, type PassResult, type SyncStateStore, type SyncRecord } from './pass.js';
export { receivePass, type ReceiveResult } from './receive.js';
export { entryFromScan, readXattrs } from './entry.js';
