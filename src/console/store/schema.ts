import type { Generated } from 'kysely';

/** Tables as the database holds them; JSON columns are text, times are epoch milliseconds. */
export interface SourcesTable {
  id: string;
  name: string;
  fingerprint: string;
  created_at: number;
  last_seen_at: number | null;
  inventory: string | null;
  checks: string | null;
}

export interface TargetsTable {
  id: string;
  name: string;
  fingerprint: string;
  address: string;
  created_at: number;
  last_seen_at: number | null;
  info: string | null;
}

export interface TasksTable {
  id: string;
  source_id: string;
  target_id: string | null;
  method: string;
  continuous_sync: number;
  excludes: string;
  stage: string;
  status: string;
  error: string | null;
  progress: string | null;
  run_id: number;
  sync_request: number;
  launch_phase: string | null;
  last_sync: string | null;
  sync_interval_seconds: number | null;
  rate_limit: string | null;
  sync_excludes: string | null;
  /** JSON: DiskMapping[], ResizeRequest[], DiskPlan (null for a --root target). */
  disk_map: string | null;
  resize: string | null;
  disk_plan: string | null;
  /** none | quick | full: check after the full replication. */
  verify_after: string | null;
  /** `ferry verify` requests so far, the mode of the latest, and the latest report (JSON {request, report}). */
  verify_request: number;
  verify_mode: string | null;
  verification: string | null;
  /** none | zstd */
  compression: string | null;
  created_at: number;
  updated_at: number;
}

export interface ReleasesTable {
  id: Generated<number>;
  target_id: string;
  task_id: string;
}

export interface Database {
  sources: SourcesTable;
  targets: TargetsTable;
  tasks: TasksTable;
  releases: ReleasesTable;
}
