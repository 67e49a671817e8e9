import Type, { type Static } from 'typebox';

const Count = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
const DevPath = Type.String({ pattern: '^/dev/[A-Za-z0-9._/:-]{1,120}$' });
const Nullable = <T extends Type.TSchema>(t: T) => Type.Union([t, Type.Null()]);

/** A file system (or swap area) as found on the source, with where it is mounted under the root. */
export const FsInfo = Type.Object(
  {
    /** blkid's TYPE: ext4, xfs, btrfs, swap, vfat, LVM2_member, … */
    type: Type.String({ pattern: '^[A-Za-z0-9_.-]{1,32}$' }),
    uuid: Nullable(Type.String({ pattern: '^[A-Za-z0-9-]{1,64}$' })),
    label: Nullable(Type.String({ maxLength: 256 })),
    blockSize: Type.Optional(Type.Integer({ minimum: 512, maximum: 65_536 })),
    /** Absolute path as the migrated server sees it ("/", "/boot"); null when not mounted. */
    mountpoint: Nullable(Type.String({ pattern: '^/', maxLength: 4096 })),
    usedBytes: Nullable(Count),
  },
  { additionalProperties: false },
);
export type FsInfo = Static<typeof FsInfo>;

export const PartitionInfo = Type.Object(
  {
    number: Type.Integer({ minimum: 1, maximum: 256 }),
    /** Sectors of the disk's sector size. */
    start: Count,
    size: Count,
    /** GPT type GUID or MBR type byte in hex ("83", "82", "ef"). */
    type: Type.String({ pattern: '^[0-9A-Fa-f-]{1,36}$' }),
    uuid: Type.Optional(Type.String({ pattern: '^[0-9A-Fa-f-]{1,36}$' })),
    name: Type.Optional(Type.String({ maxLength: 72 })),
    bootable: Type.Optional(Type.Boolean()),
    attrs: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_ ,=:-]{0,200}$' })),
    fs: Nullable(FsInfo),
  },
  { additionalProperties: false },
);
export type PartitionInfo = Static<typeof PartitionInfo>;

/** What a source disk and the target disk made from it share: the table and what is on it. */
const DiskContent = {
  sectorSize: Type.Integer({ minimum: 512, maximum: 4096 }),
  table: Nullable(Type.Union([Type.Literal('gpt'), Type.Literal('dos')])),
  tableId: Nullable(Type.String({ pattern: '^(0x)?[0-9A-Fa-f-]{1,36}$' })),
  partitions: Type.Array(PartitionInfo, { maxItems: 128 }),
  /** A file system on the whole disk, without a partition table. */
  fs: Nullable(FsInfo),
};

export const DiskInfo = Type.Object(
  { path: DevPath, sizeBytes: Count, ...DiskContent },
  { additionalProperties: false },
);
export type DiskInfo = Static<typeof DiskInfo>;

export const LayoutProblem = Type.Object(
  { code: Type.String({ maxLength: 64 }), message: Type.String({ maxLength: 1000 }) },
  { additionalProperties: false },
);
export type LayoutProblem = Static<typeof LayoutProblem>;

/**
 * The source server's disks as the agent found them: every disk that holds a file system
 * mounted at or under the agent's root, with all its partitions. `problems` lists what
 * stops ferry from re-creating the layout on target disks (LVM, RAID, a root that is not
 * on a disk); a migration onto a target directory does not need the layout.
 */
export const SourceLayout = Type.Object(
  {
    disks: Type.Array(DiskInfo, { maxItems: 64 }),
    problems: Type.Array(LayoutProblem, { maxItems: 64 }),
  },
  { additionalProperties: false },
);
export type SourceLayout = Static<typeof SourceLayout>;

/** A block device a target was given with `ferry target --disk`. */
export const TargetDisk = Type.Object(
  { path: DevPath, sizeBytes: Count, sectorSize: Type.Integer({ minimum: 512, maximum: 4096 }) },
  { additionalProperties: false },
);
export type TargetDisk = Static<typeof TargetDisk>;

/** One target disk as it will be made: the source disk's table, partitions possibly moved or resized. */
export const DiskPlanEntry = Type.Object(
  { source: DevPath, target: DevPath, ...DiskContent },
  { additionalProperties: false },
);
export type DiskPlanEntry = Static<typeof DiskPlanEntry>;

export const DiskPlan = Type.Object(
  { disks: Type.Array(DiskPlanEntry, { maxItems: 64 }) },
  { additionalProperties: false },
);
export type DiskPlan = Static<typeof DiskPlan>;

/** `--disk-map SRC=TGT` and `--resize PARTITION=SIZE` as the API takes them. */
export const DiskMapping = Type.Object(
  {
    source: Type.String({ minLength: 1, maxLength: 128 }),
    target: Type.String({ minLength: 1, maxLength: 128 }),
  },
  { additionalProperties: false },
);
export type DiskMapping = Static<typeof DiskMapping>;

export const ResizeRequest = Type.Object(
  {
    /** A source partition device (/dev/sda2) or the mount point of its file system (/home). */
    partition: Type.String({ minLength: 1, maxLength: 4096 }),
    sizeBytes: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
  },
  { additionalProperties: false },
);
export type ResizeRequest = Static<typeof ResizeRequest>;
