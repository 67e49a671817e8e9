import {
  type CheckItem,
  type DiskMapping,
  type DiskPlan,
  NO_RATE_LIMIT,
  type Progress,
  type RateSettings,
  type ResizeRequest,
  type ServerView,
  type TargetView,
  type VerifyMode,
  type VerifyReport,
} from '../control/index.js';
import { errorInfo } from '../errors/index.js';
import type { SourceRow, TargetRow, TaskRow } from './store/store.js';

function json<T>(text: string | null): T | null {
  return text === null ? null : (JSON.parse(text) as T);
}

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(Number(ms)).toISOString();
}

export function isConnected(lastSeenAt: number | null, now: number, timeoutMs: number): boolean {
  return lastSeenAt !== null && now - Number(lastSeenAt) <= timeoutMs;
}

export function progressView(task: TaskRow): ServerView['progress'] {
  const p = json<Progress>(task.progress);
  const completed = task.stage === 'target-launch' && task.status === 'completed';
  if (!p) {
    return {
      percent: completed ? 100 : 0,
      bytesDone: 0,
      bytesTotal: 0,
      filesDone: 0,
      filesTotal: 0,
      rateBytesPerSecond: 0,
      etaSeconds: null,
      phase: null,
      state: null,
    };
  }
  // By bytes; by files when there are no bytes to count (a tree of empty files).
  const ratio =
    p.bytesTotal > 0 ? p.bytesDone / p.bytesTotal : p.filesTotal > 0 ? p.filesDone / p.filesTotal : null;
  const percent = completed
    ? 100
    : ratio !== null
      ? Math.min(100, Math.floor(ratio * 1000) / 10)
      : p.state === 'idle'
        ? 100
        : 0;
  const remaining = Math.max(0, p.bytesTotal - p.bytesDone);
  return {
    percent,
    bytesDone: p.bytesDone,
    bytesTotal: p.bytesTotal,
    filesDone: p.filesDone,
    filesTotal: p.filesTotal,
    rateBytesPerSecond: p.rateBytesPerSecond,
    etaSeconds:
      p.rateBytesPerSecond > 0 ? Math.ceil(remaining / p.rateBytesPerSecond) : remaining === 0 ? 0 : null,
    phase: p.phase,
    state: p.state,
  };
}

export function serverView(
  source: SourceRow,
  task: TaskRow,
  target: TargetRow | undefined,
  now: number,
  timeoutMs: number,
): ServerView {
  const error = json<{ code: string; message: string }>(task.error);
  const p = json<Progress>(task.progress);
  const running = task.status === 'running';
  return {
    id: source.id,
    name: source.name,
    connected: isConnected(source.last_seen_at, now, timeoutMs),
    lastSeenAt: iso(source.last_seen_at),
    stage: task.stage,
    status: task.status,
    statusDetail: running && p?.state === 'reconnecting' ? 'reconnecting' : running && p ? p.state : null,
    progress: progressView(task),
    error: error ? { code: error.code, message: error.message, advice: errorInfo(error.code).advice } : null,
    target: target?.name ?? null,
    method: task.method,
    continuousSync: task.continuous_sync === 1,
    syncIntervalSeconds: task.sync_interval_seconds,
    rateLimit: json<RateSettings>(task.rate_limit) ?? NO_RATE_LIMIT,
    excludes: JSON.parse(task.excludes) as string[],
    syncExcludes: json<string[]>(task.sync_excludes) ?? [],
    diskMap: json<DiskMapping[]>(task.disk_map) ?? [],
    resize: json<ResizeRequest[]>(task.resize) ?? [],
    diskPlan: json<DiskPlan>(task.disk_plan),
    verifyAfterReplication: (task.verify_after as VerifyMode | 'none' | null) ?? 'none',
    verification: json<{ request: number; report: VerifyReport }>(task.verification),
    verifyRequest: task.verify_request,
    compression: task.compression === 'zstd' ? 'zstd' : 'none',
    lastSync: json<Record<string, unknown>>(task.last_sync),
    inventory: json<Record<string, unknown>>(source.inventory),
    checks: json<CheckItem[]>(source.checks) ?? [],
  };
}

export function targetView(
  target: TargetRow,
  lockedBy: string | null,
  now: number,
  timeoutMs: number,
): TargetView {
  return {
    id: target.id,
    name: target.name,
    address: target.address,
    connected: isConnected(target.last_seen_at, now, timeoutMs),
    lastSeenAt: iso(target.last_seen_at),
    locked: lockedBy !== null,
    lockedBy,
    info: json<Record<string, unknown>>(target.info),
  };
}
