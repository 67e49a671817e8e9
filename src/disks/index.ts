/**
 * disks: the source server's disk layout and its re-creation on target disks. probe.ts
 * reads a layout on the source (findmnt, lsblk, sfdisk, blkid -p: no udev needed);
 * plan.ts (pure) decides which target disk gets which source disk and where partitions go,
 * refusing with the numbers a layout that cannot fit; prepare.ts partitions, formats and
 * mounts target disks with the Debian tools, never writing on-disk structures itself.
 * Knows nothing of the console, HTTP or the data protocol.
 */

export {
  type BlockCopy,
  blockCopies,
  bytesNeeded,
  copiedAsBlocks,
  formatBytes,
  layoutProblems,
  parseSize,
  partitionNode,
  planDisks,
  RECREATED_FS,
} from './plan.js';
export {
  checkDisksFree,
  mountStaging,
  type PlannedMount,
  planHash,
  plannedMounts,
  prepareDisks,
  unmountStaging,
} from './prepare.js';
export {
  describeSourceLayout,
  describeTargetDisk,
  listMounts,
  type MountRow,
  probeDevice,
  toolJson,
} from './probe.js';
