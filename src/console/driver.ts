import { randomUUID, timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import Type from 'typebox';
import { Compile } from 'typebox/compile';
import type {
  AgentHeartbeat,
  AgentHeartbeatResponse,
  ConfigureRequest,
  DiskPlan,
  Job,
  Progress,
  RateSettings,
  ServerView,
  TargetHeartbeat,
  TargetHeartbeatResponse,
  TargetOrders,
  TargetView,
  VerifyMode,
} from '../control/index.js';
import { NO_RATE_LIMIT, SourceLayout, TargetDisk } from '../control/index.js';
import {
  isLocking,
  type LifecycleEvent,
  type Stage,
  type Status,
  type TaskState,
  transition,
} from '../core/index.js';
import { blockCopies, planDisks } from '../disks/index.js';
import { FerryError, isErrorCode } from '../errors/index.js';
import { type CaMaterial, fingerprint, issueFromCsr } from '../pki/index.js';
import type { ConsoleStore, SourceRow, TargetRow, TaskRow } from './store/store.js';
import { isConnected, serverView, targetView } from './views.js';

export interface DriverOptions {
  readonly heartbeatTimeoutMs: number;
  readonly syncIntervalSeconds: number;
  readonly now?: () => number;
}

const checkLayout = Compile(SourceLayout);
const checkTargetDisks = Compile(Type.Array(TargetDisk, { maxItems: 64 }));

/** One mutation at a time: every read-modify-write of a task runs under this lock. */
class Mutex {
  #tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#tail.then(fn, fn);
    this.#tail = next.catch(() => {});
    return next;
  }
}

function stateOf(task: TaskRow): TaskState {
  return { stage: task.stage as Stage, status: task.status as Status };
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * The console's lifecycle driver: applies user commands and agent/target reports to
 * the stored tasks through the pure state machine, and derives from the stored state
 * what each agent should be doing (its job) and what each target holds (its lock).
 */
export class Driver {
  readonly #store: ConsoleStore;
  readonly #ca: CaMaterial;
  readonly #registrationToken: string;
  readonly #opts: DriverOptions;
  readonly #mutex = new Mutex();
  readonly #now: () => number;
  /** Emits 'change' on every stored change, so that long polls know when to look again. */
  readonly #changes = new EventEmitter().setMaxListeners(0);

  #bump(): void {
    this.#changes.emit('change');
  }

  /** Calls `listener` on every stored change (a stage, status, sync or report); returns how to stop. */
  onChange(listener: () => void): () => void {
    this.#changes.on('change', listener);
    return () => this.#changes.off('change', listener);
  }

  /**
   * Long poll: returns `read()` as soon as its key differs from `current`, or after
   * `timeoutMs` whatever it is. The change listener is attached before each read, so a
   * change between reading and waiting is never missed.
   */
  async waitUntilChanged<T>(
    read: () => Promise<T>,
    key: (v: T) => string,
    current: string,
    timeoutMs: number,
  ): Promise<T> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      let wake = () => {};
      let changed = false;
      const onChange = () => {
        changed = true;
        wake();
      };
      this.#changes.once('change', onChange);
      try {
        const value = await read();
        const left = end - Date.now();
        if (key(value) !== current || left <= 0) return value;
        if (!changed) {
          await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, left);
            wake = () => {
              clearTimeout(t);
              resolve();
            };
          });
        }
      } finally {
        this.#changes.off('change', onChange);
      }
    }
  }

  /** The agent's current job, without recording anything (long poll). */
  async agentJob(sourceId: string): Promise<Job> {
    const task = await this.#store.taskBySource(sourceId);
    return task ? this.#jobFor(task) : { kind: 'idle' };
  }

  constructor(store: ConsoleStore, ca: CaMaterial, registrationToken: string, opts: DriverOptions) {
    this.#store = store;
    this.#ca = ca;
    this.#registrationToken = registrationToken;
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
  }

  // ---- registration -------------------------------------------------------------------

  async register(
    token: string,
    req: { role: 'agent' | 'target'; name: string; csr: string; address?: string },
  ) {
    if (!sameSecret(token, this.#registrationToken)) {
      throw new FerryError('FERRY_REGISTRATION_DENIED', 'the registration token is not valid');
    }
    return this.#mutex.run(async () => {
      const id = randomUUID();
      const certificate = await issueFromCsr(this.#ca, req.csr, `ferry-${req.role}:${id}`);
      const fp = fingerprint(certificate);
      const now = this.#now();
      if (req.role === 'agent') {
        if (await this.#store.sourceByName(req.name)) {
          throw new FerryError(
            'FERRY_NAME_TAKEN',
            `a source server named "${req.name}" is already registered`,
          );
        }
        await this.#store.insertSource({
          id,
          name: req.name,
          fingerprint: fp,
          created_at: now,
          last_seen_at: now,
          inventory: null,
          checks: null,
        });
        await this.#store.insertTask({
          id: randomUUID(),
          source_id: id,
          target_id: null,
          method: 'file',
          continuous_sync: 0,
          excludes: '[]',
          stage: 'feasibility-check',
          status: 'pending-target-configuration',
          error: null,
          progress: null,
          run_id: 0,
          sync_request: 0,
          launch_phase: null,
          last_sync: null,
          sync_interval_seconds: null,
          rate_limit: null,
          sync_excludes: null,
          disk_map: null,
          resize: null,
          disk_plan: null,
          verify_after: null,
          verify_request: 0,
          verify_mode: null,
          verification: null,
          compression: null,
          created_at: now,
          updated_at: now,
        });
      } else {
        if (!req.address)
          throw new FerryError(
            'FERRY_BAD_REQUEST',
            'address: a target must give the HOST:PORT agents reach it at',
          );
        if (await this.#store.targetByName(req.name)) {
          throw new FerryError(
            'FERRY_NAME_TAKEN',
            `a target server named "${req.name}" is already registered`,
          );
        }
        await this.#store.insertTarget({
          id,
          name: req.name,
          fingerprint: fp,
          address: req.address,
          created_at: now,
          last_seen_at: now,
          info: null,
        });
      }
      this.#bump();
      return { id, name: req.name, certificate, ca: this.#ca.certPem };
    });
  }

  /** Maps a verified client certificate to a registered source or target, or refuses. */
  async authenticatePeer(role: 'agent' | 'target', id: string, certFingerprint: string): Promise<void> {
    const row = role === 'agent' ? await this.#store.sourceById(id) : await this.#store.targetById(id);
    if (!row || row.fingerprint !== certFingerprint) {
      throw new FerryError(
        'FERRY_REGISTRATION_REVOKED',
        `this ${role} credential is no longer registered with the console`,
      );
    }
  }

  // ---- views ---------------------------------------------------------------------------

  async listServers(): Promise<ServerView[]> {
    const [sources, tasks, targets] = await Promise.all([
      this.#store.listSources(),
      this.#store.listTasks(),
      this.#store.listTargets(),
    ]);
    const now = this.#now();
    return sources.flatMap((s) => {
      const task = tasks.find((t) => t.source_id === s.id);
      if (!task) return [];
      const target = targets.find((t) => t.id === task.target_id);
      return [serverView(s, task, target, now, this.#opts.heartbeatTimeoutMs)];
    });
  }

  async showServer(name: string): Promise<ServerView> {
    const { source, task } = await this.#find(name);
    const target = task.target_id ? await this.#store.targetById(task.target_id) : undefined;
    return serverView(source, task, target, this.#now(), this.#opts.heartbeatTimeoutMs);
  }

  async listTargets(): Promise<TargetView[]> {
    const [targets, tasks, sources] = await Promise.all([
      this.#store.listTargets(),
      this.#store.listTasks(),
      this.#store.listSources(),
    ]);
    const now = this.#now();
    return targets.map((t) => {
      const holder = tasks.find((k) => k.target_id === t.id && isLocking(stateOf(k)));
      const lockedBy = holder ? (sources.find((s) => s.id === holder.source_id)?.name ?? null) : null;
      return targetView(t, lockedBy, now, this.#opts.heartbeatTimeoutMs);
    });
  }

  async showTarget(name: string): Promise<TargetView> {
    const view = (await this.listTargets()).find((t) => t.name === name);
    if (!view) throw new FerryError('FERRY_NOT_FOUND', `no target server named "${name}"`);
    return view;
  }

  async #find(name: string): Promise<{ source: SourceRow; task: TaskRow }> {
    const source = await this.#store.sourceByName(name);
    const task = source ? await this.#store.taskBySource(source.id) : undefined;
    if (!source || !task) throw new FerryError('FERRY_NOT_FOUND', `no source server named "${name}"`);
    return { source, task };
  }

  // ---- user commands --------------------------------------------------------------------

  /**
   * For a target started with --disk: the plan that re-creates the source layout on its
   * disks, refused here (with the sizes) when it cannot work. Null for a --root target.
   */
  #planDisks(source: SourceRow, target: TargetRow, req: ConfigureRequest): DiskPlan | null {
    const info = target.info ? (JSON.parse(target.info) as { disks?: unknown }) : {};
    const disks = checkTargetDisks.Check(info.disks) ? info.disks : [];
    if (disks.length === 0) {
      if ((req.diskMap?.length ?? 0) > 0 || (req.resize?.length ?? 0) > 0)
        throw new FerryError(
          'FERRY_BAD_REQUEST',
          `target "${target.name}" receives files into a directory (--root); --disk-map and --resize need a target started with --disk`,
          { context: { field: req.diskMap?.length ? 'body.diskMap' : 'body.resize' } },
        );
      return null;
    }
    const inventory = source.inventory ? (JSON.parse(source.inventory) as { layout?: unknown }) : {};
    if (!checkLayout.Check(inventory.layout))
      throw new FerryError(
        'FERRY_LAYOUT_UNSUPPORTED',
        `the agent of "${source.name}" has not reported a disk layout; wait until it is connected, or use a --root target`,
      );
    return planDisks(inventory.layout, disks, req.diskMap ?? [], req.resize ?? []);
  }

  configure(name: string, req: ConfigureRequest): Promise<ServerView> {
    return this.#mutex.run(async () => {
      const { source, task } = await this.#find(name);
      if (req.method !== 'file') {
        throw new FerryError(
          'FERRY_UNSUPPORTED_METHOD',
          `method "${req.method}" is not available yet; use "file"`,
        );
      }
      const target = await this.#store.targetByName(req.target);
      if (!target) throw new FerryError('FERRY_NOT_FOUND', `target: no target server named "${req.target}"`);
      const holder = (await this.#store.tasksByTarget(target.id)).find(
        (k) => k.id !== task.id && isLocking(stateOf(k)),
      );
      if (holder) {
        const by = await this.#store.sourceById(holder.source_id);
        throw new FerryError(
          'FERRY_TARGET_LOCKED',
          `target "${target.name}" is locked by the migration of "${by?.name}"`,
        );
      }
      if (isLocking(stateOf(task))) {
        throw new FerryError(
          'FERRY_TARGET_LOCKED',
          `the migration of "${name}" has started; its settings are locked until it ends`,
        );
      }
      const diskPlan = this.#planDisks(source, target, req);
      const next = transition(stateOf(task), { kind: 'configure' });
      await this.#store.updateTask(task.id, {
        disk_map: JSON.stringify(req.diskMap ?? []),
        resize: JSON.stringify(req.resize ?? []),
        disk_plan: diskPlan ? JSON.stringify(diskPlan) : null,
        verify_after: req.verify ?? 'none',
        compression: req.compression ?? 'none',
        target_id: target.id,
        method: req.method,
        continuous_sync: req.continuousSync ? 1 : 0,
        excludes: JSON.stringify(req.excludes ?? []),
        sync_interval_seconds: req.syncIntervalSeconds ?? null,
        rate_limit: req.rateLimit ? JSON.stringify(req.rateLimit) : null,
        sync_excludes: JSON.stringify(req.syncExcludes ?? []),
        stage: next.state.stage,
        status: next.state.status,
        updated_at: this.#now(),
      });
      this.#bump();
      return this.showServer(name);
    });
  }

  start(name: string): Promise<ServerView> {
    return this.#mutex.run(async () => {
      const { source, task } = await this.#find(name);
      if (task.stage === 'full-replication' && task.status === 'ready') {
        const now = this.#now();
        if (!isConnected(source.last_seen_at, now, this.#opts.heartbeatTimeoutMs)) {
          throw new FerryError('FERRY_SOURCE_DISCONNECTED', `source "${name}" is not connected`);
        }
        const target = task.target_id ? await this.#store.targetById(task.target_id) : undefined;
        if (!target || !isConnected(target.last_seen_at, now, this.#opts.heartbeatTimeoutMs)) {
          throw new FerryError(
            'FERRY_TARGET_DISCONNECTED',
            `target "${target?.name ?? '?'}" is not connected`,
          );
        }
        const holder = (await this.#store.tasksByTarget(target.id)).find(
          (k) => k.id !== task.id && isLocking(stateOf(k)),
        );
        if (holder)
          throw new FerryError(
            'FERRY_TARGET_LOCKED',
            `target "${target.name}" is locked by another migration`,
          );
      }
      await this.#apply(task, { kind: 'start' });
      return this.showServer(name);
    });
  }

  pause(name: string): Promise<ServerView> {
    return this.#command(name, { kind: 'pause' });
  }

  sync(name: string): Promise<ServerView> {
    return this.#command(name, { kind: 'sync' });
  }

  /**
   * Asks the agent to sync and then check the target against the source (`ferry verify`).
   * The target must still be held by the task: during continuous sync.
   */
  verify(name: string, mode: VerifyMode): Promise<ServerView> {
    return this.#mutex.run(async () => {
      const { task } = await this.#find(name);
      if (task.stage !== 'continuous-sync' || task.status !== 'running')
        throw new FerryError(
          'FERRY_ILLEGAL_TRANSITION',
          `"${name}" is ${task.stage}/${task.status}; ferry verify runs during continuous sync (to check right after the full replication, configure --verify quick|full)`,
        );
      await this.#store.updateTask(task.id, {
        verify_request: task.verify_request + 1,
        verify_mode: mode,
        updated_at: this.#now(),
      });
      this.#bump();
      return this.showServer(name);
    });
  }

  launch(name: string): Promise<ServerView> {
    return this.#command(name, { kind: 'launch' });
  }

  #command(name: string, event: LifecycleEvent): Promise<ServerView> {
    return this.#mutex.run(async () => {
      const { task } = await this.#find(name);
      await this.#apply(task, event);
      return this.showServer(name);
    });
  }

  /** Changes the rate limit at any stage; a running transfer follows within a second. */
  setRateLimit(name: string, settings: RateSettings): Promise<ServerView> {
    return this.#mutex.run(async () => {
      const { task } = await this.#find(name);
      await this.#store.updateTask(task.id, {
        rate_limit: JSON.stringify(settings),
        updated_at: this.#now(),
      });
      this.#bump();
      return this.showServer(name);
    });
  }

  deleteServer(name: string): Promise<void> {
    return this.#mutex.run(async () => {
      const { source, task } = await this.#find(name);
      const t = transition(stateOf(task), { kind: 'delete' });
      if (t.effects.includes('release-resources') && task.target_id)
        await this.#store.addRelease(task.target_id, task.id);
      await this.#store.deleteSource(source.id);
      this.#bump();
    });
  }

  deleteTarget(name: string): Promise<void> {
    return this.#mutex.run(async () => {
      const target = await this.#store.targetByName(name);
      if (!target) throw new FerryError('FERRY_NOT_FOUND', `no target server named "${name}"`);
      const tasks = await this.#store.tasksByTarget(target.id);
      if (tasks.some((k) => isLocking(stateOf(k)))) {
        throw new FerryError(
          'FERRY_TARGET_LOCKED',
          `target "${name}" is locked by a running migration and cannot be deleted`,
        );
      }
      for (const k of tasks) await this.#store.updateTask(k.id, { target_id: null });
      await this.#store.deleteTarget(target.id);
      this.#bump();
    });
  }

  /** Stores the transition and its effects. */
  async #apply(task: TaskRow, event: LifecycleEvent, extra: Partial<TaskRow> = {}): Promise<TaskRow> {
    const t = transition(stateOf(task), event);
    const patch: Partial<TaskRow> = {
      stage: t.state.stage,
      status: t.state.status,
      updated_at: this.#now(),
      ...extra,
    };
    if (t.effects.includes('new-run')) patch.run_id = task.run_id + 1;
    if (t.effects.includes('request-sync')) patch.sync_request = task.sync_request + 1;
    if (event.kind === 'start') patch.error = null;
    if (t.state.stage === 'target-launch' && task.stage !== 'target-launch') {
      patch.launch_phase = event.kind === 'launch' ? 'final-sync' : 'finalize';
    }
    if (t.state.status === 'completed') patch.launch_phase = null;
    if (t.effects.includes('release-resources') && task.target_id)
      await this.#store.addRelease(task.target_id, task.id);
    await this.#store.updateTask(task.id, patch);
    this.#bump();
    return { ...task, ...patch };
  }

  // ---- agent and target reports --------------------------------------------------------

  agentHeartbeat(sourceId: string, hb: AgentHeartbeat): Promise<AgentHeartbeatResponse> {
    return this.#mutex.run(async () => {
      const now = this.#now();
      const patch: Record<string, unknown> = { last_seen_at: now };
      if (hb.inventory) patch.inventory = JSON.stringify(hb.inventory);
      if (hb.checks) patch.checks = JSON.stringify(hb.checks);
      await this.#store.updateSource(sourceId, patch);
      let task = await this.#store.taskBySource(sourceId);
      if (!task) return { ackedEvents: hb.events.map((e) => e.id), job: { kind: 'idle' } };
      const idle = hb.progress?.state === 'waiting' || hb.progress?.state === 'idle';
      if (
        hb.progress &&
        hb.progress.runId === task.run_id &&
        task.status === 'running' &&
        !(idle && task.progress)
      ) {
        await this.#store.updateTask(task.id, { progress: JSON.stringify(hb.progress) });
        task = { ...task, progress: JSON.stringify(hb.progress) };
      }
      for (const ev of hb.events) {
        if (ev.runId !== task.run_id || task.status !== 'running') continue; // a report of an older run
        if (ev.kind === 'replication-done' && task.stage === 'full-replication') {
          // The replication is complete: its progress stays at the exact totals the agent counted.
          const last = task.progress ? (JSON.parse(task.progress) as Progress) : null;
          const done: Progress = {
            runId: task.run_id + 1,
            phase: 'full',
            state: 'idle',
            bytesDone: ev.stats?.bytes ?? last?.bytesTotal ?? 0,
            bytesTotal: ev.stats?.bytes ?? last?.bytesTotal ?? 0,
            filesDone: ev.stats?.files ?? last?.filesTotal ?? 0,
            filesTotal: ev.stats?.files ?? last?.filesTotal ?? 0,
            rateBytesPerSecond: 0,
          };
          task = await this.#apply(
            task,
            { kind: 'replication-done', continuousSync: task.continuous_sync === 1 },
            {
              last_sync: JSON.stringify({ at: new Date(now).toISOString(), ...ev.stats }),
              progress: JSON.stringify(done),
              ...(ev.report ? { verification: JSON.stringify({ request: 0, report: ev.report }) } : {}),
            },
          );
        } else if (ev.kind === 'verify-done' && ev.report) {
          const verification = JSON.stringify({ request: ev.verifyRequest ?? 0, report: ev.report });
          task = { ...task, verification };
          await this.#store.updateTask(task.id, { verification });
        } else if (ev.kind === 'sync-done') {
          task = { ...task, last_sync: JSON.stringify({ at: new Date(now).toISOString(), ...ev.stats }) };
          await this.#store.updateTask(task.id, { last_sync: task.last_sync });
        } else if (
          ev.kind === 'final-sync-done' &&
          task.stage === 'target-launch' &&
          task.launch_phase === 'final-sync'
        ) {
          await this.#store.updateTask(task.id, { launch_phase: 'finalize' });
          task = { ...task, launch_phase: 'finalize' };
        } else if (ev.kind === 'failed') {
          const code = ev.code && isErrorCode(ev.code) ? ev.code : 'FERRY_INTERNAL';
          const message = ev.message ?? 'the agent reported a failure';
          task = await this.#apply(task, { kind: 'fail' }, { error: JSON.stringify({ code, message }) });
        }
        this.#bump();
      }
      return { ackedEvents: hb.events.map((e) => e.id), job: await this.#jobFor(task) };
    });
  }

  async #jobFor(task: TaskRow): Promise<Job> {
    if (task.status !== 'running' || !task.target_id) return { kind: 'idle' };
    const target = await this.#store.targetById(task.target_id);
    if (!target) return { kind: 'idle' };
    const pass =
      task.stage === 'full-replication'
        ? 'full'
        : task.stage === 'continuous-sync'
          ? 'continuous'
          : task.launch_phase === 'final-sync'
            ? 'final'
            : null;
    if (!pass) return { kind: 'idle' };
    return {
      kind: 'replicate',
      taskId: task.id,
      runId: task.run_id,
      pass,
      target: { id: target.id, name: target.name, address: target.address },
      excludes: JSON.parse(task.excludes) as string[],
      syncIntervalSeconds: task.sync_interval_seconds ?? this.#opts.syncIntervalSeconds,
      syncRequest: task.sync_request,
      rateLimit: task.rate_limit ? (JSON.parse(task.rate_limit) as RateSettings) : NO_RATE_LIMIT,
      syncExcludes: task.sync_excludes ? (JSON.parse(task.sync_excludes) as string[]) : [],
      verifyAfterReplication: (task.verify_after as VerifyMode | 'none' | null) ?? 'none',
      verifyRequest: task.verify_request,
      verifyMode: (task.verify_mode as VerifyMode | null) ?? 'quick',
      compression: task.compression === 'zstd' ? 'zstd' : 'none',
      ...(task.disk_plan
        ? {
            blockCopies: blockCopies(JSON.parse(task.disk_plan) as DiskPlan).map((c) => ({
              source: c.source,
              sizeBytes: c.sizeBytes,
              ...(c.mountpoint ? { mountpoint: c.mountpoint } : {}),
            })),
          }
        : {}),
    };
  }

  targetHeartbeat(targetId: string, hb: TargetHeartbeat): Promise<TargetHeartbeatResponse> {
    return this.#mutex.run(async () => {
      const patch: Record<string, unknown> = { last_seen_at: this.#now() };
      if (hb.info) patch.info = JSON.stringify(hb.info);
      await this.#store.updateTarget(targetId, patch);
      for (const ev of hb.events) {
        if (ev.kind === 'released') await this.#store.clearRelease(targetId, ev.taskId);
        if (ev.kind === 'finalized') {
          const task = (await this.#store.tasksByTarget(targetId)).find((k) => k.id === ev.taskId);
          if (
            task &&
            task.stage === 'target-launch' &&
            task.status === 'running' &&
            task.launch_phase === 'finalize'
          ) {
            await this.#apply(task, { kind: 'launch-done' });
          }
        }
      }
      return { ackedEvents: hb.events.map((e) => e.id), ...(await this.targetOrders(targetId)) };
    });
  }

  /** What a target must do now: whom it serves, whether to finalize a launch, what to release. */
  async targetOrders(targetId: string): Promise<TargetOrders> {
    const tasks = await this.#store.tasksByTarget(targetId);
    const holder = tasks.find((k) => isLocking(stateOf(k)));
    let assignment: TargetOrders['assignment'] = null;
    let finalize: TargetOrders['finalize'] = null;
    if (holder) {
      const source = await this.#store.sourceById(holder.source_id);
      if (source) {
        assignment = {
          taskId: holder.id,
          runId: holder.run_id,
          sourceId: source.id,
          sourceName: source.name,
          sourceFingerprint: source.fingerprint,
          diskPlan: holder.disk_plan ? (JSON.parse(holder.disk_plan) as DiskPlan) : null,
        };
      }
      if (
        holder.stage === 'target-launch' &&
        holder.status === 'running' &&
        holder.launch_phase === 'finalize'
      ) {
        finalize = { taskId: holder.id, runId: holder.run_id };
      }
    }
    return { assignment, finalize, release: await this.#store.releasesFor(targetId) };
  }
}
