import { randomUUID } from 'node:crypto';
import { mkdir, readFile, rm, rmdir, statfs, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import {
  type Assignment,
  ordersKey,
  type TargetDisk,
  type TargetEvent,
  type TargetHeartbeatResponse,
  type TargetOrders,
} from '../control/index.js';
import { blockCopies, describeTargetDisk, prepareDisks, unmountStaging } from '../disks/index.js';
import { FerryError, toFerryError } from '../errors/index.js';
import { DIRECT_ALIGN, ferryFs, parseDirectIo, parseOnOff } from '../native/index.js';
import { Session } from '../protocol/index.js';
import {
  configureHashing,
  type HashThreads,
  receiveBlocks,
  receivePass,
  receiveVerify,
  TreeWriter,
} from '../replication/file/index.js';
import {
  ConsoleClient,
  createDataServer,
  enroll,
  forgetCredential,
  Heartbeat,
  parseHostPort,
  pollUntilStopped,
  reusedBufferReads,
  setDataCredential,
} from '../transport/index.js';

export interface TargetOptions {
  readonly consoleUrl: string;
  readonly caFile: string;
  readonly registrationTokenFile: string;
  readonly name: string;
  readonly listen: string;
  readonly advertise?: string;
  /** Exactly one of root (files are written under it) and disks (erased, then the source layout re-created). */
  readonly root?: string;
  readonly disks?: readonly string[];
  /** Where the file systems on `disks` are mounted while data arrives. */
  readonly staging?: string;
  readonly stateDir: string;
  readonly logger: Logger;
  readonly heartbeatMs?: number;
  /** Where large files are hashed: a worker thread (1), the event loop (0), or auto (1 from 4 cores); a string as given on the command line is checked here (FERRY_CONFIG). */
  readonly hashThreads?: string | HashThreads;
  /** Files of 8 MiB and more written past the page cache (O_DIRECT) where the file system allows it: 'on' (default) or 'off'. */
  readonly directIo?: string | boolean;
  /** The data connection read into one reused buffer ('on', default) or as a new Buffer per read ('off'). */
  readonly reuseReadBuffer?: string | boolean;
}

export interface RunningTarget {
  readonly id: string;
  readonly address: string;
  readonly done: Promise<void>;
  stop(): Promise<void>;
}

/** Starts `ferry target`. */
export async function startTarget(o: TargetOptions): Promise<RunningTarget> {
  const hashThreads = configureHashing(o.hashThreads ?? 'auto');
  const directIo = parseDirectIo(o.directIo);
  const reuseReadBuffer = parseOnOff('--reuse-read-buffer', o.reuseReadBuffer);
  const caPem = await readFile(o.caFile, 'utf8').catch((e: Error) => {
    throw new FerryError('FERRY_CONFIG', `--ca-file ${o.caFile}: ${e.message}`);
  });
  if (!o.root === !o.disks?.length)
    throw new FerryError('FERRY_CONFIG', 'give exactly one of --root DIR and --disk DEVICE…');
  if (o.root) await mkdir(o.root, { recursive: true });
  const disks: TargetDisk[] = [];
  for (const d of o.disks ?? []) {
    disks.push(
      await describeTargetDisk(d).catch((e: Error) => {
        throw new FerryError('FERRY_CONFIG', `--disk ${d}: ${e.message}`);
      }),
    );
  }
  const stagingBase = path.resolve(o.staging ?? path.join(o.stateDir, 'staging'));
  const log = o.logger.child({ target: o.name });
  let assignment: Assignment | null = null;
  /** Called whenever the orders change the assignment (see assignedTo). */
  const onAssignment = new Set<() => void>();
  let active: { session: Session; taskId: string } | null = null;
  const events: TargetEvent[] = [];
  const finalized = new Set<string>();
  let beat: () => Promise<void> = async () => {};

  const server = createDataServer((socket, peer) => void accept(socket, peer));
  const { host, port } = parseHostPort(o.listen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const bound = (server.address() as AddressInfo).port;
  const advertise =
    o.advertise ??
    (host === '0.0.0.0' || host === '::' ? null : `${host.includes(':') ? `[${host}]` : host}:${bound}`);
  if (!advertise) {
    server.close();
    throw new FerryError(
      'FERRY_CONFIG',
      '--advertise HOST:PORT is required when --listen is a wildcard address',
    );
  }
  const cred = await enroll({
    role: 'target',
    name: o.name,
    consoleUrl: o.consoleUrl,
    caPem,
    registrationTokenFile: o.registrationTokenFile,
    stateDir: o.stateDir,
    address: advertise,
  }).catch((e) => {
    server.close();
    throw e;
  });
  setDataCredential(server, cred);
  log.info(
    {
      id: cred.id,
      listen: `${host}:${bound}`,
      advertise,
      root: o.root ?? null,
      disks: disks.map((d) => d.path),
      hashThreads,
      directIo,
      reuseReadBuffer,
      nodeFlags: process.execArgv,
    },
    'target registered',
  );
  const client = new ConsoleClient({
    url: o.consoleUrl,
    caPem,
    cert: { keyPem: cred.keyPem, certPem: cred.certPem },
  });

  const taskDir = (taskId: string) => path.join(o.stateDir, 'tasks', taskId);
  const stagingOf = (taskId: string) => path.join(stagingBase, taskId);

  /** Where a task's files go: --root, or its disks prepared (once) and mounted under the staging directory. */
  let prepared: { taskId: string; root: Promise<string> } | null = null;
  function rootFor(a: Assignment): Promise<string> {
    if (!a.diskPlan) {
      if (o.root) return Promise.resolve(o.root);
      return Promise.reject(
        new FerryError(
          'FERRY_TARGET_DISK_BUSY',
          'this target has disks but the task carries no disk plan; configure it again',
        ),
      );
    }
    if (!o.disks?.length)
      return Promise.reject(
        new FerryError('FERRY_TARGET_DISK_BUSY', 'this target was started without --disk'),
      );
    if (prepared?.taskId !== a.taskId) {
      const plan = a.diskPlan;
      const root = (async () => {
        await mkdir(taskDir(a.taskId), { recursive: true, mode: 0o700 });
        const r = await prepareDisks({
          plan,
          allowed: disks.map((d) => d.path),
          staging: stagingOf(a.taskId),
          recordFile: path.join(taskDir(a.taskId), 'disks.json'),
          log,
        });
        log.info(
          { staging: stagingOf(a.taskId), erased: r.prepared },
          r.prepared ? 'target disks prepared and mounted' : 'target disks mounted',
        );
        return stagingOf(a.taskId);
      })();
      const mine = { taskId: a.taskId, root };
      prepared = mine;
      root.catch(() => {
        if (prepared === mine) prepared = null;
      });
    }
    return prepared.root;
  }

  /**
   * Waits until `fingerprint` is the assigned source, or until a heartbeat has asked the
   * console, whichever comes first: a source that connects right after Start usually comes
   * a few ms before its assignment reaches the long poll, and a heartbeat (a console round
   * trip behind the others) took ~150 ms more (bench, full-mixed, session 15).
   */
  async function assignedTo(fingerprint: string): Promise<void> {
    let done = () => {};
    const assigned = new Promise<void>((resolve) => {
      done = resolve;
    });
    const check = () => {
      if (assignment?.sourceFingerprint === fingerprint) done();
    };
    onAssignment.add(check);
    try {
      await Promise.race([assigned, beat()]);
    } finally {
      onAssignment.delete(check);
    }
  }

  async function accept(socket: TLSSocket, peer: { fingerprint: string; id: string | null }) {
    const session = new Session(socket, {
      alignPayloads: { bytes: DIRECT_ALIGN, offsetOf: ferryFs.alignedOffset },
      ...(reuseReadBuffer ? { readInto: reusedBufferReads } : {}),
    });
    const refuse = (why: string) => {
      log.warn({ peer: peer.id, remote: socket.remoteAddress }, `refused a data connection: ${why}`);
      session.fail(new FerryError('FERRY_PEER_REFUSED', why));
    };
    if (!peer.id) return refuse('the client certificate is not an agent certificate');
    if (assignment?.sourceFingerprint !== peer.fingerprint) await assignedTo(peer.fingerprint); // the console may have just assigned it
    const a = assignment;
    if (!a || a.sourceFingerprint !== peer.fingerprint)
      return refuse('this source is not the one assigned to this target');
    try {
      const hello = await session.next();
      if (hello?.type !== 'hello') throw new FerryError('FERRY_PROTOCOL_VIOLATION', 'expected HELLO');
      if (hello.body.taskId !== a.taskId) return refuse('the HELLO names another migration task');
      if (active) {
        log.info('a new connection from the assigned source replaces the previous one');
        active.session.destroy();
      }
      active = { session, taskId: a.taskId };
      let root: string;
      try {
        root = await rootFor(a);
      } catch (e) {
        const err = toFerryError(e, 'FERRY_DISK_PREPARATION');
        log.error({ code: err.code, err: err.message }, 'cannot prepare the target disks');
        session.fail(err);
        return;
      }
      if (hello.body.pass === 'blocks') {
        // partitions copied block for block (ESP, BIOS boot, unmounted): only those of the plan
        const devices = a.diskPlan
          ? blockCopies(a.diskPlan).map((c) => ({ path: c.target, sizeBytes: c.sizeBytes }))
          : [];
        await session.send({ type: 'welcome', body: { ok: true } });
        await receiveBlocks(session, devices);
        log.info({ partitions: devices.map((d) => d.path) }, 'partitions copied block for block');
        return;
      }
      if (hello.body.pass === 'verify') {
        // read only: compares what it has with what the source describes
        await session.send({ type: 'welcome', body: { ok: true } });
        const report = await receiveVerify(session, root, hello.body.verify ?? 'quick', {
          direct: directIo,
          ignore: hello.body.ignore ?? [],
        });
        log.info(
          { mode: report.mode, identical: report.identical, totals: report.totals },
          'verification done',
        );
        return;
      }
      await mkdir(taskDir(a.taskId), { recursive: true, mode: 0o700 });
      const writer = await TreeWriter.open(root, log, {
        inflightFile: path.join(taskDir(a.taskId), 'inflight'),
        journalFile: path.join(taskDir(a.taskId), 'partial'),
        directIo,
      });
      const resume = writer.resumable();
      await session.send({ type: 'welcome', body: { ok: true, ...(resume ? { resume } : {}) } });
      const started = Date.now();
      const r = await receivePass(session, writer, log);
      log.info(
        {
          pass: hello.body.pass,
          entries: r.entries,
          bytes: r.bytes,
          ms: Date.now() - started,
          committed: r.committed,
          commitMs: r.commitMs,
          readBuffer: session.readsIntoReusedBuffer ? 'reused' : 'per-read',
        },
        'pass received',
      );
    } catch (e) {
      const err = toFerryError(e, 'FERRY_CONNECTION_LOST');
      log.warn({ code: err.code, err: err.message }, 'data connection ended with an error');
    } finally {
      if (active?.session === session) active = null;
    }
  }

  async function finalize(taskId: string, runId: number) {
    if (finalized.has(`${taskId}:${runId}`)) return;
    await mkdir(taskDir(taskId), { recursive: true, mode: 0o700 });
    // File systems keep the source's UUIDs and labels, so fstab and boot entries still
    // match; the disks are unmounted so that they are consistent and ready to boot.
    if (prepared?.taskId === taskId) {
      await prepared.root.catch(() => null);
      prepared = null;
    }
    const unmounted = await unmountStaging(stagingOf(taskId));
    if (unmounted > 0) log.info({ taskId, unmounted }, 'target file systems unmounted');
    await writeFile(
      path.join(taskDir(taskId), 'launched.json'),
      JSON.stringify({ taskId, at: new Date().toISOString() }),
    );
    finalized.add(`${taskId}:${runId}`);
    events.push({ id: randomUUID(), kind: 'finalized', taskId, runId });
    log.info({ taskId }, 'target launched');
  }

  async function release(taskId: string) {
    if (events.some((e) => e.kind === 'released' && e.taskId === taskId)) return;
    if (prepared?.taskId === taskId) prepared = null;
    // Unmount first, and remove only the empty staging directory: never the data under a mount.
    await unmountStaging(stagingOf(taskId));
    await rmdir(stagingOf(taskId)).catch(() => {});
    await rm(taskDir(taskId), { recursive: true, force: true });
    events.push({ id: randomUUID(), kind: 'released', taskId });
    log.info({ taskId }, 'released the temporary resources of a task');
  }

  let ordersSeen = '';
  async function applyOrders(res: TargetOrders) {
    if (assignment?.taskId !== res.assignment?.taskId) {
      log.info(
        { task: res.assignment?.taskId ?? null, source: res.assignment?.sourceName ?? null },
        res.assignment ? 'locked by a migration' : 'unlocked',
      );
    }
    assignment = res.assignment;
    for (const f of onAssignment) f();
    ordersSeen = ordersKey(res);
    if (!assignment && active) active.session.destroy();
    const before = events.length;
    if (res.finalize) await finalize(res.finalize.taskId, res.finalize.runId);
    for (const taskId of res.release) await release(taskId);
    if (events.length > before) heartbeat.kick(); // report at once
  }

  let stopped = false;
  let lastError = '';
  let resolveDone!: () => void;
  let rejectDone!: (e: unknown) => void;
  const done = new Promise<void>((res, rej) => {
    resolveDone = res;
    rejectDone = rej;
  });
  beat = async () => {
    try {
      const fs = o.root ? await statfs(o.root).catch(() => null) : null;
      const res = await client.request<TargetHeartbeatResponse>('POST', '/api/v1/target/heartbeat', {
        events: [...events],
        info: {
          root: o.root ? path.resolve(o.root) : null,
          freeBytes: fs ? fs.bavail * fs.bsize : null,
          totalBytes: fs ? fs.blocks * fs.bsize : disks.reduce((n, d) => n + d.sizeBytes, 0),
          disks,
          staging: disks.length > 0 ? stagingBase : null,
        },
      });
      for (const id of res.ackedEvents) {
        const i = events.findIndex((e) => e.id === id);
        if (i >= 0) events.splice(i, 1);
      }
      await applyOrders(res);
      lastError = '';
    } catch (e) {
      const err = toFerryError(e, 'FERRY_CONNECTION_LOST');
      if (err.code === 'FERRY_REGISTRATION_REVOKED' && !stopped) {
        log.error('the console no longer knows this target; restart it to register again');
        await forgetCredential(o.stateDir, 'target');
        stopped = true;
        active?.session.destroy();
        server.close();
        client.close();
        rejectDone(
          new FerryError(
            'FERRY_REGISTRATION_REVOKED',
            'this target is no longer registered with the console',
          ),
        );
        return;
      }
      if (err.message !== lastError)
        log.warn({ code: err.code, err: err.message }, 'console unreachable; retrying');
      lastError = err.message;
    }
  };
  const heartbeat = new Heartbeat(() => beat(), o.heartbeatMs ?? 1000);
  // A long poll answers as soon as the orders change (a new lock, a launch to finalize).
  const watchOrders = () =>
    pollUntilStopped(
      async () => {
        const res = await client.request<TargetOrders>('POST', '/api/v1/target/wait', {
          current: ordersSeen,
          timeoutMs: 10_000,
        });
        if (!stopped) await applyOrders(res);
      },
      () => stopped,
      o.heartbeatMs ?? 1000,
    );
  heartbeat.kick();
  void watchOrders();

  return {
    id: cred.id,
    address: advertise,
    done,
    async stop() {
      stopped = true;
      heartbeat.stop();
      active?.session.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      client.close();
      if (disks.length > 0) {
        await prepared?.root.catch(() => null);
        await unmountStaging(stagingBase).catch((e: Error) =>
          log.warn({ err: e.message }, 'could not unmount the staging file systems'),
        );
      }
      resolveDone();
    },
  };
}
