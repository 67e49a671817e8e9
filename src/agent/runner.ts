import { randomUUID } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import {
  type AgentEvent,
  bytesPerSecond,
  type Job,
  mbpsAt,
  namedUnreadable,
  type PassStats,
  type Progress,
  type VerifyMode,
  type VerifyReport,
} from '../control/index.js';
import { FerryError, isErrorCode, toFerryError } from '../errors/index.js';
import { Session, type WelcomeMessage } from '../protocol/index.js';
import {
  type PassProgress,
  runBlocksSend,
  runSendPass,
  runVerifySend,
  scanTree,
  type UnreadableEntry,
} from '../replication/file/index.js';
import { type Credential, connectData, RateLimiter } from '../transport/index.js';
import { RateMeter } from './rate-meter.js';
import { SqliteSyncState } from './sync-state.js';

type ReplicateJob = Extract<Job, { kind: 'replicate' }>;

export interface RunnerOptions {
  readonly root: string;
  readonly stateDir: string;
  readonly cred: Credential;
  readonly logger: Logger;
  /** Directories sent empty (pseudo file systems). */
  readonly emptyDirs: () => readonly string[];
  /** How long to keep retrying a retryable failure before reporting the task failed. */
  readonly retryDeadlineMs: number;
  /** Large files read past the page cache where the file system allows it (`--direct-io`). */
  readonly directIo: boolean;
  /** Called when an event is waiting to be reported (so it goes out at once). */
  readonly onEvent?: () => void;
}

const MAX_BACKOFF_MS = 30_000;

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done);
  });
}

/**
 * Does what the console's job says, one job at a time: a new job (another task, run or
 * pass) aborts the current one. Keeps the events it has to report until the console
 * acknowledges them, and the progress of the current run.
 */
export class JobRunner {
  readonly #o: RunnerOptions;
  #current: { key: string; job: ReplicateJob; abort: AbortController; wake: () => void } | null = null;
  #events: AgentEvent[] = [];
  #progress: PassProgress = { bytes: 0, files: 0, bytesSent: 0 };
  #totals = { bytes: 0, files: 0 };
  #totalsKnown = false;
  #state: Progress['state'] = 'idle';
  #phase = 'idle';
  #message: string | undefined;
  #meter = new RateMeter();
  /** DATA bytes on the wire in the current pass, across its connections (compression shows here). */
  #wireBytes = 0;
  /** Paces the data connection to the task's limit in force now (time-of-day windows in local time). */
  readonly #limiter = new RateLimiter(() => {
    const job = this.#current?.job;
    if (!job) return 0;
    const now = new Date();
    return bytesPerSecond(mbpsAt(job.rateLimit, now.getHours() * 60 + now.getMinutes()));
  });

  constructor(o: RunnerOptions) {
    this.#o = o;
  }

  get pendingEvents(): AgentEvent[] {
    return [...this.#events];
  }

  /** The job being done now, as the console gave it. */
  currentJob(): Job {
    return this.#current?.job ?? { kind: 'idle' };
  }

  acknowledge(ids: readonly string[]): void {
    this.#events = this.#events.filter((e) => !ids.includes(e.id));
  }

  progress(now = Date.now()): Progress | undefined {
    const c = this.#current;
    if (!c) return undefined;
    const rate = this.#meter.sample(now, this.#progress.bytesSent);
    return {
      runId: c.job.runId,
      phase: this.#phase,
      state: this.#state,
      bytesDone: this.#progress.bytes,
      // unknown (0) while a full pass is still counting; a sync pass has no total ahead
      bytesTotal:
        this.#totalsKnown || this.#phase !== 'full' ? Math.max(this.#totals.bytes, this.#progress.bytes) : 0,
      filesDone: this.#progress.files,
      filesTotal:
        this.#totalsKnown || this.#phase !== 'full' ? Math.max(this.#totals.files, this.#progress.files) : 0,
      rateBytesPerSecond: this.#state === 'transferring' ? rate : 0,
      ...(this.#message ? { message: this.#message.slice(0, 1000) } : {}),
    };
  }

  reconcile(job: Job): void {
    const key = job.kind === 'idle' ? 'idle' : `${job.taskId}:${job.runId}:${job.pass}`;
    if (this.#current?.key === key) {
      if (job.kind !== 'replicate') return;
      const wake =
        job.syncRequest !== this.#current.job.syncRequest ||
        (job.verifyRequest ?? 0) !== (this.#current.job.verifyRequest ?? 0);
      this.#current.job = job; // a new rate limit applies to the running transfer at once
      if (wake) this.#current.wake();
      return;
    }
    if (this.#current) {
      this.#o.logger.info({ job: this.#current.key }, 'stopping the current job');
      this.#current.abort.abort();
      this.#current = null;
    }
    if (job.kind === 'idle') return;
    const abort = new AbortController();
    let wakeUp = () => {};
    const current = {
      key,
      job,
      abort,
      wake: () => wakeUp(),
    };
    this.#current = current;
    this.#progress = { bytes: 0, files: 0, bytesSent: 0 };
    this.#totals = { bytes: 0, files: 0 };
    this.#totalsKnown = false;
    this.#meter.reset();
    this.#o.logger.info({ job: key }, 'starting job');
    void this.#run(current, (fn) => {
      wakeUp = fn;
    }).catch((e) => this.#o.logger.error({ err: e }, 'job crashed'));
  }

  stop(): void {
    this.#current?.abort.abort();
    this.#current = null;
  }

  #emit(job: ReplicateJob, kind: AgentEvent['kind'], extra: Partial<AgentEvent> = {}): void {
    this.#events.push({ id: randomUUID(), runId: job.runId, kind, ...extra });
    this.#o.onEvent?.();
  }

  async #run(
    cur: { job: ReplicateJob; abort: AbortController },
    onWake: (fn: () => void) => void,
  ): Promise<void> {
    const { signal } = cur.abort;
    const dir = path.join(this.#o.stateDir, 'tasks', cur.job.taskId);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const state = new SqliteSyncState(path.join(dir, 'sync.db'));
    try {
      if (cur.job.pass === 'continuous') {
        // Full replication has just run: the first sync comes after an interval or a request.
        let lastRequest = cur.job.syncRequest;
        let lastVerify = cur.job.verifyRequest ?? 0;
        this.#state = 'waiting';
        this.#phase = 'sync';
        while (!signal.aborted) {
          await new Promise<void>((resolve) => {
            if (cur.job.syncRequest !== lastRequest || (cur.job.verifyRequest ?? 0) !== lastVerify)
              return resolve();
            onWake(resolve);
            void sleep(cur.job.syncIntervalSeconds * 1000, signal).then(resolve);
          });
          if (signal.aborted) return;
          const job = cur.job;
          lastRequest = job.syncRequest;
          const stats = await this.#passWithRetry(job, 'sync', state, signal);
          if (!stats) return;
          this.#emit(job, 'sync-done', { stats: { ...stats, syncRequest: job.syncRequest } });
          if ((job.verifyRequest ?? 0) !== lastVerify) {
            // `ferry verify`: check the target right after a sync, so that only what changed
            // since then can differ
            lastVerify = job.verifyRequest ?? 0;
            const report = await this.#verifyWithRetry(job, job.verifyMode ?? 'quick', signal);
            if (!report) return;
            this.#emit(job, 'verify-done', { report, verifyRequest: lastVerify });
          }
          this.#state = 'waiting';
        }
        return;
      }
      const pass = cur.job.pass === 'full' ? 'full' : 'final';
      const stats = await this.#passWithRetry(cur.job, pass, state, signal);
      if (!stats) return;
      // block-copied partitions (ESP, BIOS boot): after the full replication, and again at
      // the final sync so that a boot loader update made meanwhile is carried
      if ((cur.job.blockCopies?.length ?? 0) > 0) {
        const copied = await this.#blocksWithRetry(cur.job, signal);
        if (!copied) return;
      }
      const verifyMode = cur.job.verifyAfterReplication ?? 'none';
      if (pass === 'full' && verifyMode !== 'none') {
        const report = await this.#verifyWithRetry(cur.job, verifyMode, signal);
        if (!report) return;
        this.#emit(cur.job, 'replication-done', { stats, report });
      } else this.#emit(cur.job, pass === 'full' ? 'replication-done' : 'final-sync-done', { stats });
    } finally {
      state.close();
    }
  }

  /** Runs passes until one completes with nothing rejected; retries retryable failures with back-off. */
  async #passWithRetry(
    job: ReplicateJob,
    pass: 'full' | 'sync' | 'final',
    state: SqliteSyncState,
    signal: AbortSignal,
  ): Promise<PassStats | null> {
    const started = Date.now();
    this.#wireBytes = 0; // across retries and re-runs: what this pass cost on the wire
    for (;;) {
      const result = await this.#retrying(job, signal, pass, () => {
        if (pass === 'full' && !this.#totalsKnown) {
          // Counted alongside the transfer (it also warms the inode cache for the pass).
          void this.#count(job, signal).then(
            (t) => {
              this.#totals = t;
              this.#totalsKnown = !signal.aborted;
            },
            () => {},
          );
        }
        this.#progress = { bytes: 0, files: 0, bytesSent: this.#progress.bytesSent };
        return this.#onePass(job, pass, state, signal).then((r) => {
          // The last pass before the target is launched: launching without some of the
          // source's files is not the agent's call. Retried like a failure, until they can
          // be read or the operator excludes them.
          if (pass === 'final' && r.unreadable > 0)
            throw unreadableAtCutover(r.unreadable, r.unreadableEntries);
          return r;
        });
      });
      if (!result) return null;
      if (result.rejected > 0) {
        this.#o.logger.warn(
          { rejected: result.rejected },
          'some files changed while copied; sending them again',
        );
        continue;
      }
      return {
        entriesSent: result.entriesSent,
        deleted: result.deleted,
        unchanged: result.unchanged,
        bytesSent: result.bytesSent,
        bytesOnWire: this.#wireBytes,
        ...(result.bytesMatched > 0 ? { bytesMatched: result.bytesMatched } : {}),
        ...(result.appended > 0 ? { appended: result.appended } : {}),
        bytes: this.#progress.bytes,
        files: this.#progress.files,
        seconds: (Date.now() - started) / 1000,
        ...(result.unreadable > 0
          ? { unreadable: result.unreadable, unreadableEntries: [...result.unreadableEntries] }
          : {}),
      };
    }
  }

  /**
   * Directories sent empty: the pseudo file systems, and the mount points of partitions the
   * disk plan copies block for block (a mounted ESP at /boot/efi arrives as blocks, not files).
   */
  #emptyDirs(job: ReplicateJob): string[] {
    const blocks = (job.blockCopies ?? []).flatMap((c) =>
      c.mountpoint ? [c.mountpoint.replace(/^\/+/, '')] : [],
    );
    return [...this.#o.emptyDirs(), ...blocks.filter((d) => d !== '')];
  }

  /** Checks the target against the source (see runVerifySend); retries like a pass. */
  #verifyWithRetry(job: ReplicateJob, mode: VerifyMode, signal: AbortSignal): Promise<VerifyReport | null> {
    return this.#retrying(job, signal, 'verify', async () => {
      // neither what is never copied nor what is copied once and then left alone is compared
      const ignore = [...job.excludes, ...job.syncExcludes];
      const report = await this.#session(job, { pass: 'verify', verify: mode, ignore }, signal, (session) =>
        runVerifySend({
          session,
          root: this.#o.root,
          excludes: ignore,
          emptyDirs: this.#emptyDirs(job),
          mode,
          signal,
          direct: this.#o.directIo,
        }),
      );
      this.#o.logger.info({ mode, identical: report.identical, totals: report.totals }, 'verification done');
      return report;
    });
  }

  /** Copies the partitions the disk plan copies block for block (ESP, BIOS boot, unmounted). */
  #blocksWithRetry(job: ReplicateJob, signal: AbortSignal): Promise<{ bytesSent: number } | null> {
    const devices = (job.blockCopies ?? []).map((c) => ({ path: c.source, sizeBytes: c.sizeBytes }));
    return this.#retrying(job, signal, 'blocks', async () => {
      const r = await this.#session(job, { pass: 'blocks' }, signal, (session) =>
        runBlocksSend({ session, devices, signal }),
      );
      this.#o.logger.info(
        { partitions: devices.map((d) => d.path), bytesSent: r.bytesSent },
        'partitions copied block for block',
      );
      return r;
    });
  }

  /**
   * Runs `attempt` until it succeeds, retrying retryable failures with back-off (1 s doubling
   * to 30 s) until the agent's retry deadline; then reports the task failed with the code.
   * The state shows `reconnecting` between attempts until a connection is welcomed again.
   */
  async #retrying<T>(
    job: ReplicateJob,
    signal: AbortSignal,
    phase: string,
    attempt: () => Promise<T>,
  ): Promise<T | null> {
    let backoff = 1000;
    let firstFailureAt: number | null = null;
    while (!signal.aborted) {
      this.#phase = phase;
      try {
        const r = await attempt();
        this.#message = undefined;
        this.#state = 'idle';
        return r;
      } catch (e) {
        if (signal.aborted) return null;
        const err = toFerryError(e, 'FERRY_CONNECTION_LOST');
        firstFailureAt ??= Date.now();
        if (!err.retryable || Date.now() - firstFailureAt > this.#o.retryDeadlineMs) {
          this.#o.logger.error({ code: err.code, err: err.message }, `${phase} failed`);
          // a pass's failure speaks for itself; a verification's or block copy's says which it was
          const message = phase === 'verify' || phase === 'blocks' ? `${phase}: ${err.message}` : err.message;
          this.#emit(job, 'failed', { code: err.code, message: message.slice(0, 2000) });
          this.#state = 'idle';
          return null;
        }
        this.#state = 'reconnecting';
        this.#message = `${err.code}: ${err.message}`;
        this.#o.logger.warn(
          { code: err.code, err: err.message, retryInMs: backoff },
          `${phase} interrupted; will resume`,
        );
        await sleep(backoff, signal);
        backoff = Math.min(MAX_BACKOFF_MS, backoff * 2);
      }
    }
    return null;
  }

  async #count(job: ReplicateJob, signal: AbortSignal): Promise<{ bytes: number; files: number }> {
    let bytes = 0;
    let files = 0;
    for await (const e of scanTree(this.#o.root, {
      excludes: job.excludes,
      emptyDirs: this.#emptyDirs(job),
      onUnreadableDir: () => {}, // the pass reports it
    })) {
      if (signal.aborted) break;
      if (e.kind === 'file') {
        bytes += Number(e.stat.size);
        files++;
      }
    }
    return { bytes, files };
  }

  async #onePass(
    job: ReplicateJob,
    pass: 'full' | 'sync' | 'final',
    state: SqliteSyncState,
    signal: AbortSignal,
  ) {
    return this.#session(job, { pass }, signal, (session, welcome) =>
      runSendPass({
        session,
        ...(welcome.resume ? { resume: welcome.resume } : {}),
        root: this.#o.root,
        excludes: job.excludes,
        emptyDirs: this.#emptyDirs(job),
        state,
        progress: this.#progress,
        signal,
        keep: pass === 'full' ? [] : job.syncExcludes,
        detectRenames: pass !== 'full',
        directIo: this.#o.directIo,
        onUnreadable: (rel, code, message) =>
          this.#o.logger.warn(
            { path: rel, code, err: message },
            'cannot read this source entry: the target keeps what it has of it, every later pass tries it again',
          ),
        onChangedSinceScan: (rel) =>
          this.#o.logger.info(
            { path: rel },
            'file removed or replaced while the pass ran: the target drops its copy, the next pass sends what is there',
          ),
      }),
    );
  }

  /** Opens a data connection to the target, says HELLO, and runs `fn` once welcomed. */
  async #session<T>(
    job: ReplicateJob,
    hello: { pass: 'full' | 'sync' | 'final' | 'verify' | 'blocks'; verify?: VerifyMode; ignore?: string[] },
    signal: AbortSignal,
    fn: (session: Session, welcome: WelcomeMessage) => Promise<T>,
  ): Promise<T> {
    const socket = await connectData({
      address: job.target.address,
      cred: this.#o.cred,
      expectTargetId: job.target.id,
    });
    const session = new Session(socket, {
      pace: (n) => this.#limiter.pace(n),
      compress: job.compression === 'zstd',
    });
    const onAbort = () => session.destroy();
    signal.addEventListener('abort', onAbort);
    try {
      await session.send({ type: 'hello', body: { taskId: job.taskId, runId: job.runId, ...hello } });
      const first = await session.next();
      if (first?.type === 'error') {
        // The target's own code when it is one of ours (a disk it cannot prepare, a refusal).
        const code =
          isErrorCode(first.body.code) && first.body.code !== 'FERRY_INTERNAL'
            ? first.body.code
            : 'FERRY_CONNECTION_LOST';
        throw new FerryError(code, `target refused: ${first.body.message}`);
      }
      if (first?.type !== 'welcome')
        throw new FerryError('FERRY_PROTOCOL_VIOLATION', 'the target did not welcome us');
      this.#state = 'transferring';
      return await fn(session, first.body);
    } finally {
      this.#wireBytes += session.dataStats.sent;
      signal.removeEventListener('abort', onAbort);
      session.destroy();
    }
  }
}

/** The final sync's refusal to hand over a target that lacks source entries it could not read. */
function unreadableAtCutover(count: number, some: readonly UnreadableEntry[]): FerryError {
  return new FerryError(
    'FERRY_SOURCE_READ',
    `the final sync could not read ${count} source entr${count === 1 ? 'y' : 'ies'}: ${namedUnreadable(count, some)}; ` +
      'the target is not launched without them. Make them readable (the disk, the network ' +
      'file system, or the on-access scanner that refuses them), or move them out of the ' +
      'migrated tree if the new server does not need them; the final sync tries again until ' +
      'the retry deadline, and `ferry start` runs it again after that',
    { context: { unreadable: count } },
  );
}
