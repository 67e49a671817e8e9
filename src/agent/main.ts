import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import {
  type AgentHeartbeat,
  type AgentHeartbeatResponse,
  type CheckItem,
  type Job,
  jobKey,
} from '../control/index.js';
import { FerryError, toFerryError } from '../errors/index.js';
import { parseDirectIo } from '../native/index.js';
import { configureHashing, type HashThreads } from '../replication/file/index.js';
import { ConsoleClient, enroll, forgetCredential, Heartbeat, pollUntilStopped } from '../transport/index.js';
import { collectInventory, emptyDirsFor, listMounts, runChecks } from './inventory.js';
import { JobRunner } from './runner.js';

export interface AgentOptions {
  readonly consoleUrl: string;
  readonly caFile: string;
  readonly registrationTokenFile: string;
  readonly name: string;
  readonly root: string;
  readonly stateDir: string;
  readonly logger: Logger;
  readonly heartbeatMs?: number;
  readonly inventoryRefreshMs?: number;
  readonly retryDeadlineMs?: number;
  /** Where large files are hashed: a worker thread (1), the event loop (0), or auto (1 from 4 cores); a string as given on the command line is checked here (FERRY_CONFIG). */
  readonly hashThreads?: string | HashThreads;
  /** Files read past the page cache (O_DIRECT) where the file system allows it: 'on' (default) or 'off'. */
  readonly directIo?: string | boolean;
}

export interface RunningAgent {
  readonly id: string;
  /** Resolves when the agent stops; rejects when it must exit with an error. */
  readonly done: Promise<void>;
  stop(): Promise<void>;
}

/** Starts `ferry agent`. */
export async function startAgent(o: AgentOptions): Promise<RunningAgent> {
  const hashThreads = configureHashing(o.hashThreads ?? 'auto');
  const directIo = parseDirectIo(o.directIo);
  const caPem = await readFile(o.caFile, 'utf8').catch((e: Error) => {
    throw new FerryError('FERRY_CONFIG', `--ca-file ${o.caFile}: ${e.message}`);
  });
  const cred = await enroll({
    role: 'agent',
    name: o.name,
    consoleUrl: o.consoleUrl,
    caPem,
    registrationTokenFile: o.registrationTokenFile,
    stateDir: o.stateDir,
  });
  const log = o.logger.child({ agent: cred.name });
  log.info(
    { id: cred.id, console: o.consoleUrl, root: o.root, hashThreads, directIo, nodeFlags: process.execArgv },
    'agent registered',
  );
  const client = new ConsoleClient({
    url: o.consoleUrl,
    caPem,
    cert: { keyPem: cred.keyPem, certPem: cred.certPem },
  });
  let emptyDirs: string[] = [];
  let beatNow = () => {};
  const runner = new JobRunner({
    onEvent: () => beatNow(),
    root: o.root,
    stateDir: o.stateDir,
    cred,
    logger: log,
    emptyDirs: () => emptyDirs,
    retryDeadlineMs: o.retryDeadlineMs ?? 3_600_000,
    directIo,
  });

  let inventory: Record<string, unknown> | undefined;
  let checks: CheckItem[] | undefined;
  let inventorySentAt = 0;
  // The tree is walked at start and when idle; while a job runs its pass walks the tree
  // anyway, so a periodic refresh keeps the earlier totals instead of walking it again.
  const refreshInventory = async () => {
    const mounts = await listMounts(); // read once: empty directories, inventory and layout
    emptyDirs = emptyDirsFor(o.root, mounts);
    const busy = runner.currentJob().kind !== 'idle';
    inventory = await collectInventory(o.root, [], busy ? inventory?.migrate : undefined, mounts);
    checks = await runChecks(o.root, inventory);
    inventorySentAt = 0;
  };
  await refreshInventory();

  let stopped = false;
  let resolveDone!: () => void;
  let rejectDone!: (e: unknown) => void;
  const done = new Promise<void>((res, rej) => {
    resolveDone = res;
    rejectDone = rej;
  });
  let lastConsoleError = '';

  const beat = async () => {
    const now = Date.now();
    const body: AgentHeartbeat = { events: runner.pendingEvents };
    const p = runner.progress(now);
    if (p) body.progress = p;
    const sendInventory = inventorySentAt === 0;
    if (sendInventory && inventory && checks) {
      body.inventory = inventory;
      body.checks = checks;
    }
    try {
      const res = await client.request<AgentHeartbeatResponse>('POST', '/api/v1/agent/heartbeat', body);
      if (sendInventory) inventorySentAt = now;
      if (lastConsoleError) log.info('console reachable again');
      lastConsoleError = '';
      runner.acknowledge(res.ackedEvents);
      runner.reconcile(res.job);
    } catch (e) {
      const err = toFerryError(e, 'FERRY_CONNECTION_LOST');
      if (err.code === 'FERRY_REGISTRATION_REVOKED') {
        log.error('the console no longer knows this source; restart the agent to register it again');
        await forgetCredential(o.stateDir, 'agent');
        runner.stop();
        stopped = true;
        rejectDone(
          new FerryError(
            'FERRY_REGISTRATION_REVOKED',
            'this source is no longer registered with the console',
          ),
        );
        return;
      }
      if (err.message !== lastConsoleError)
        log.warn({ code: err.code, err: err.message }, 'console unreachable; retrying');
      lastConsoleError = err.message;
    }
  };
  const heartbeat = new Heartbeat(beat, o.heartbeatMs ?? 1000);
  beatNow = () => heartbeat.kick();
  // A long poll answers as soon as the console wants something else done (start, pause,
  // sync, launch): commands take effect at once instead of at the next heartbeat.
  const watchJobs = () =>
    pollUntilStopped(
      async () => {
        const res = await client.request<{ job: Job }>('POST', '/api/v1/agent/job', {
          current: jobKey(runner.currentJob()),
          timeoutMs: 10_000,
        });
        if (!stopped) runner.reconcile(res.job);
      },
      () => stopped,
      o.heartbeatMs ?? 1000,
    );
  const inventoryTimer = setInterval(
    () => void refreshInventory().catch(() => {}),
    o.inventoryRefreshMs ?? 600_000,
  );
  inventoryTimer.unref();
  heartbeat.kick();
  void watchJobs();

  return {
    id: cred.id,
    done,
    async stop() {
      stopped = true;
      heartbeat.stop();
      clearInterval(inventoryTimer);
      runner.stop();
      client.close();
      resolveDone();
    },
  };
}
