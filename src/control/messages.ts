import Type, { type Static } from 'typebox';
import { DiskMapping, DiskPlan, ResizeRequest } from './layout.js';
import { RateSettings } from './rate.js';
import { VerifyMode, VerifyReport } from './verify.js';

const Id = Type.String({ minLength: 1, maxLength: 64 });
const Count = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });

export const NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$';
export const Name = Type.String({
  pattern: NAME_PATTERN,
  description: 'letters, digits, ".", "_", "-"; 1-63 characters',
});
export const HostPort = Type.String({
  pattern: '^(\\[[0-9a-fA-F:.]+\\]|[A-Za-z0-9.-]+):[0-9]{1,5}$',
  description: 'HOST:PORT',
});

export const RegisterRequest = Type.Object(
  {
    role: Type.Union([Type.Literal('agent'), Type.Literal('target')]),
    name: Name,
    csr: Type.String({ minLength: 100, maxLength: 8192 }),
    address: Type.Optional(HostPort),
  },
  { additionalProperties: false },
);
export type RegisterRequest = Static<typeof RegisterRequest>;

export const RegisterResponse = Type.Object({
  id: Type.String(),
  name: Type.String(),
  certificate: Type.String(),
  ca: Type.String(),
});
export type RegisterResponse = Static<typeof RegisterResponse>;

export const CheckItem = Type.Object(
  {
    id: Type.String({ maxLength: 64 }),
    title: Type.String({ maxLength: 200 }),
    passed: Type.Boolean(),
    code: Type.Optional(Type.String({ maxLength: 64 })),
    reason: Type.String({ maxLength: 1000 }),
  },
  { additionalProperties: false },
);
export type CheckItem = Static<typeof CheckItem>;

export const Progress = Type.Object(
  {
    runId: Count,
    phase: Type.String({ maxLength: 32 }),
    state: Type.Union([
      Type.Literal('scanning'),
      Type.Literal('transferring'),
      Type.Literal('waiting'),
      Type.Literal('reconnecting'),
      Type.Literal('idle'),
    ]),
    bytesDone: Count,
    bytesTotal: Count,
    filesDone: Count,
    filesTotal: Count,
    rateBytesPerSecond: Count,
    message: Type.Optional(Type.String({ maxLength: 1000 })),
  },
  { additionalProperties: false },
);
export type Progress = Static<typeof Progress>;

export const PassStats = Type.Object(
  {
    entriesSent: Count,
    deleted: Count,
    unchanged: Count,
    bytesSent: Count,
    /** Content bytes and files the pass covered (sent or found unchanged): the exact totals. */
    bytes: Type.Optional(Count),
    files: Type.Optional(Count),
    seconds: Type.Number({ minimum: 0 }),
    syncRequest: Type.Optional(Count),
    /** Bytes of file content the DATA frames carried on the wire (less than bytesSent when compressed). */
    bytesOnWire: Type.Optional(Count),
    /**
     * Bytes of changed files found in the target's own copies and copied there from them, not
     * sent: blocks of large files (COPY frames), and what grown small files held before their
     * appends. Absent when none.
     */
    bytesMatched: Type.Optional(Count),
    /** Files that only grew by appends, sent as their new bytes alone (`appendFrom` in a FILES frame). Absent when none. */
    appended: Type.Optional(Count),
    /**
     * Source files and directories that are there but could not be read (refused, I/O
     * errors): left as the target has them and tried again by every later pass. Absent when none.
     */
    unreadable: Type.Optional(Count),
    /** The first of them (at most 20), each with the errno code it failed with. */
    unreadableEntries: Type.Optional(
      Type.Array(
        Type.Object(
          { path: Type.String({ maxLength: 4096 }), code: Type.String({ maxLength: 32 }) },
          { additionalProperties: false },
        ),
        { maxItems: 20 },
      ),
    ),
  },
  { additionalProperties: false },
);
export type PassStats = Static<typeof PassStats>;

/**
 * The unreadable entries of a pass for people: "a (EPERM), b (EIO) and 3 more", each path
 * through `show` (the CLI shows a name's raw bytes as \xNN).
 */
export function namedUnreadable(
  count: number,
  entries: readonly { path: string; code: string }[],
  show: (path: string) => string = (p) => p,
): string {
  const named = entries.map((u) => `${show(u.path)} (${u.code})`).join(', ');
  return count > entries.length ? `${named} and ${count - entries.length} more` : named;
}

export const AgentEvent = Type.Object(
  {
    id: Id,
    runId: Count,
    kind: Type.Union([
      Type.Literal('replication-done'),
      Type.Literal('sync-done'),
      Type.Literal('final-sync-done'),
      Type.Literal('verify-done'),
      Type.Literal('failed'),
    ]),
    code: Type.Optional(Type.String({ maxLength: 64 })),
    message: Type.Optional(Type.String({ maxLength: 2000 })),
    stats: Type.Optional(PassStats),
    /** A consistency check's result (after full replication when configured, or on request). */
    report: Type.Optional(VerifyReport),
    verifyRequest: Type.Optional(Count),
  },
  { additionalProperties: false },
);
export type AgentEvent = Static<typeof AgentEvent>;

export const AgentHeartbeat = Type.Object(
  {
    inventory: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    checks: Type.Optional(Type.Array(CheckItem, { maxItems: 100 })),
    progress: Type.Optional(Progress),
    events: Type.Array(AgentEvent, { maxItems: 100 }),
  },
  { additionalProperties: false },
);
export type AgentHeartbeat = Static<typeof AgentHeartbeat>;

export const Compression = Type.Union([Type.Literal('none'), Type.Literal('zstd')]);

export const TargetRef = Type.Object({ id: Type.String(), name: Type.String(), address: Type.String() });

export const Job = Type.Union([
  Type.Object({ kind: Type.Literal('idle') }),
  Type.Object({
    kind: Type.Literal('replicate'),
    taskId: Type.String(),
    runId: Count,
    pass: Type.Union([Type.Literal('full'), Type.Literal('continuous'), Type.Literal('final')]),
    target: TargetRef,
    excludes: Type.Array(Type.String()),
    syncIntervalSeconds: Type.Number(),
    syncRequest: Count,
    rateLimit: RateSettings,
    syncExcludes: Type.Array(Type.String()),
    /** Check the target after the full replication: none, quick or full. */
    verifyAfterReplication: Type.Optional(Type.Union([Type.Literal('none'), VerifyMode])),
    /** Counter of `ferry verify` requests and the mode of the latest. */
    verifyRequest: Type.Optional(Count),
    verifyMode: Type.Optional(VerifyMode),
    /** zstd: DATA chunks are compressed where that makes them smaller. */
    compression: Type.Optional(Compression),
    /** Source partitions copied block for block after the files (disk targets: ESP, BIOS boot, unmounted). */
    blockCopies: Type.Optional(
      Type.Array(
        Type.Object(
          {
            source: Type.String({ maxLength: 128 }),
            sizeBytes: Count,
            /** Where the partition is mounted on the source, if it is: sent as an empty directory. */
            mountpoint: Type.Optional(Type.String({ maxLength: 4096 })),
          },
          { additionalProperties: false },
        ),
        { maxItems: 256 },
      ),
    ),
  }),
]);
export type Job = Static<typeof Job>;

/** Identifies what a job asks for; the agent's long poll returns when it changes. */
export function jobKey(job: Job): string {
  return job.kind === 'idle'
    ? 'idle'
    : `${job.taskId}:${job.runId}:${job.pass}:${job.syncRequest}:${job.verifyRequest ?? 0}`;
}

export const WaitRequest = Type.Object(
  {
    current: Type.String({ maxLength: 4096 }),
    timeoutMs: Type.Integer({ minimum: 0, maximum: 25_000 }),
  },
  { additionalProperties: false },
);
export type WaitRequest = Static<typeof WaitRequest>;

export const AgentJobResponse = Type.Object({ job: Job });

export const AgentHeartbeatResponse = Type.Object({
  ackedEvents: Type.Array(Type.String()),
  job: Job,
});
export type AgentHeartbeatResponse = Static<typeof AgentHeartbeatResponse>;

export const TargetEvent = Type.Object(
  {
    id: Id,
    kind: Type.Union([Type.Literal('finalized'), Type.Literal('released')]),
    taskId: Id,
    runId: Type.Optional(Count),
  },
  { additionalProperties: false },
);
export type TargetEvent = Static<typeof TargetEvent>;

export const TargetHeartbeat = Type.Object(
  {
    info: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    events: Type.Array(TargetEvent, { maxItems: 100 }),
  },
  { additionalProperties: false },
);
export type TargetHeartbeat = Static<typeof TargetHeartbeat>;

export const Assignment = Type.Object({
  taskId: Type.String(),
  runId: Count,
  sourceId: Type.String(),
  sourceName: Type.String(),
  sourceFingerprint: Type.String(),
  /** How to prepare the target's disks before the first data arrives; null for a --root target. */
  diskPlan: Type.Optional(Type.Union([DiskPlan, Type.Null()])),
});
export type Assignment = Static<typeof Assignment>;

export const TargetHeartbeatResponse = Type.Object({
  ackedEvents: Type.Array(Type.String()),
  assignment: Type.Union([Assignment, Type.Null()]),
  finalize: Type.Union([Type.Object({ taskId: Type.String(), runId: Count }), Type.Null()]),
  release: Type.Array(Type.String()),
});
export type TargetHeartbeatResponse = Static<typeof TargetHeartbeatResponse>;

export const TargetOrders = Type.Object({
  assignment: Type.Union([Assignment, Type.Null()]),
  finalize: Type.Union([Type.Object({ taskId: Type.String(), runId: Count }), Type.Null()]),
  release: Type.Array(Type.String()),
});
export type TargetOrders = Static<typeof TargetOrders>;

/** Identifies a target's orders; the target's long poll returns when they change. */
export function ordersKey(o: TargetOrders): string {
  return JSON.stringify([
    o.assignment?.taskId ?? null,
    o.assignment?.runId ?? null,
    o.finalize,
    [...o.release].sort(),
  ]);
}

export const ConfigureRequest = Type.Object(
  {
    target: Name,
    method: Type.Union([Type.Literal('file'), Type.Literal('block')]),
    continuousSync: Type.Optional(Type.Boolean({ default: false })),
    excludes: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 4095 }), { maxItems: 1000 })),
    syncIntervalSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 86_400 })),
    rateLimit: Type.Optional(RateSettings),
    /** Copied by the full replication, then left as they are by syncs. */
    syncExcludes: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 4095 }), { maxItems: 1000 }),
    ),
    /** Which target disk receives which source disk (target started with --disk); by default in order. */
    diskMap: Type.Optional(Type.Array(DiskMapping, { maxItems: 64 })),
    /** Partitions made with another size on the target (file-level only). */
    resize: Type.Optional(Type.Array(ResizeRequest, { maxItems: 128 })),
    /** Check the target against the source right after the full replication. */
    verify: Type.Optional(Type.Union([Type.Literal('none'), VerifyMode])),
    /** Compress the data on the wire (zstd level 1, per chunk, skipped where it does not pay). */
    compression: Type.Optional(Compression),
  },
  { additionalProperties: false },
);
export type ConfigureRequest = Static<typeof ConfigureRequest>;

export const ProgressView = Type.Object({
  percent: Type.Number(),
  bytesDone: Count,
  bytesTotal: Count,
  filesDone: Count,
  filesTotal: Count,
  rateBytesPerSecond: Count,
  etaSeconds: Type.Union([Type.Number(), Type.Null()]),
  phase: Type.Union([Type.String(), Type.Null()]),
  state: Type.Union([Type.String(), Type.Null()]),
});
export type ProgressView = Static<typeof ProgressView>;

export const ErrorView = Type.Object({ code: Type.String(), message: Type.String(), advice: Type.String() });

export const ServerView = Type.Object({
  id: Type.String(),
  name: Type.String(),
  connected: Type.Boolean(),
  lastSeenAt: Type.Union([Type.String(), Type.Null()]),
  stage: Type.String(),
  status: Type.String(),
  statusDetail: Type.Union([Type.String(), Type.Null()]),
  progress: ProgressView,
  error: Type.Union([ErrorView, Type.Null()]),
  target: Type.Union([Type.String(), Type.Null()]),
  method: Type.String(),
  continuousSync: Type.Boolean(),
  syncIntervalSeconds: Type.Union([Type.Integer(), Type.Null()]),
  rateLimit: RateSettings,
  excludes: Type.Array(Type.String()),
  syncExcludes: Type.Array(Type.String()),
  diskMap: Type.Array(DiskMapping),
  resize: Type.Array(ResizeRequest),
  /** The target disks' layout decided at configure time; null for a --root target. */
  diskPlan: Type.Union([DiskPlan, Type.Null()]),
  verifyAfterReplication: Type.Union([Type.Literal('none'), VerifyMode]),
  /** The latest consistency check and the `ferry verify` request it answers (0: after replication). */
  verification: Type.Union([Type.Object({ request: Count, report: VerifyReport }), Type.Null()]),
  verifyRequest: Count,
  compression: Compression,
  lastSync: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
  inventory: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
  checks: Type.Array(CheckItem),
});
export type ServerView = Static<typeof ServerView>;

export const TargetView = Type.Object({
  id: Type.String(),
  name: Type.String(),
  address: Type.String(),
  connected: Type.Boolean(),
  lastSeenAt: Type.Union([Type.String(), Type.Null()]),
  locked: Type.Boolean(),
  lockedBy: Type.Union([Type.String(), Type.Null()]),
  info: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
});
export type TargetView = Static<typeof TargetView>;

/**
 * Source directories whose contents are never migrated: they are pseudo or volatile file
 * systems on every Linux server. The directories themselves are created on the target
 * (empty, with their owner, mode and times) because the migrated system mounts onto them.
 * Any other mount point under the root whose type is in PSEUDO_FS_TYPES is treated alike.
 */
export const DEFAULT_EMPTY_DIRS = ['/proc', '/sys', '/dev', '/run'] as const;
export const PSEUDO_FS_TYPES = [
  'proc',
  'sysfs',
  'devtmpfs',
  'devpts',
  'tmpfs',
  'cgroup',
  'cgroup2',
  'securityfs',
  'pstore',
  'debugfs',
  'tracefs',
  'configfs',
  'fusectl',
  'mqueue',
  'hugetlbfs',
  'bpf',
  'autofs',
  'binfmt_misc',
  'efivarfs',
  'rpc_pipefs',
  'nfs',
  'nfs4',
  'cifs',
  'smb3',
  'ceph',
  'glusterfs',
  'fuse.sshfs',
  'overlay',
  'squashfs',
  'nsfs',
  'ramfs',
] as const;
