import { readFile } from 'node:fs/promises';
import cliProgress from 'cli-progress';
import type { Command } from 'commander';
import { parseRateWindow, type RateSettings, type ServerView, type TargetView } from '../control/index.js';
import { parseSize } from '../disks/index.js';
import { FerryError } from '../errors/index.js';
import { ConsoleClient, readSecretFile } from '../transport/index.js';
import {
  bytes,
  duration,
  serverDetails,
  serversTable,
  statusLine,
  targetsTable,
  verifyReport,
} from './format.js';

export interface ClientFlags {
  console: string;
  caFile: string;
  tokenFile: string;
  output: 'table' | 'json';
}

export type Out = { write(s: string): void };

export async function makeClient(f: ClientFlags): Promise<ConsoleClient> {
  const caPem = await readFile(f.caFile, 'utf8').catch((e: Error) => {
    throw new FerryError('FERRY_CONFIG', `--ca-file ${f.caFile}: ${e.message}`);
  });
  const token = await readSecretFile(f.tokenFile, 'admin token');
  return new ConsoleClient({ url: f.console, caPem, token });
}

const enc = encodeURIComponent;
const collect = (v: string, acc: string[]) => [...acc, v];

interface ConfigureFlags {
  target: string;
  method: string;
  continuousSync: string;
  exclude: string[];
  syncExclude: string[];
  syncInterval?: string;
  rateLimit: string;
  rateWindow: string[];
  diskMap: string[];
  resize: string[];
  verify: string;
  compression: string;
}

/** --timeout SECONDS → the number and the deadline it sets from now. */
function timeoutFlag(text: string): { timeout: number; deadline: number } {
  const timeout = Number(text);
  if (!Number.isFinite(timeout) || timeout <= 0)
    throw new FerryError('FERRY_CONFIG', '--timeout takes a positive number of seconds');
  return { timeout, deadline: Date.now() + timeout * 1000 };
}

/** "SRC=TGT" → its two sides; `what` names the flag in the error. */
function pair(text: string, what: string): [string, string] {
  const i = text.indexOf('=');
  if (i <= 0 || i === text.length - 1)
    throw new FerryError('FERRY_CONFIG', `${what} takes LEFT=RIGHT (got "${text}")`);
  return [text.slice(0, i), text.slice(i + 1)];
}

async function withClient<T>(flags: ClientFlags, fn: (c: ConsoleClient) => Promise<T>): Promise<T> {
  const c = await makeClient(flags);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

function print(out: Out, flags: ClientFlags, value: unknown, human: () => string): void {
  out.write(`${flags.output === 'json' ? JSON.stringify(value, null, 2) : human()}\n`);
}

/** Registers the client sub-commands (everything that talks to the console API). */
export function addClientCommands(
  program: Command,
  flagsOf: (cmd: Command) => ClientFlags,
  out: Out,
  setExit: (n: number) => void,
) {
  const servers = program
    .command('servers')
    .description('list or show source servers and their migration stage/status');
  servers
    .command('list', { isDefault: true })
    .description('list source servers')
    .action(async (_o, cmd: Command) => {
      const flags = flagsOf(cmd);
      const list = await withClient(flags, (c) => c.request<ServerView[]>('GET', '/api/v1/servers'));
      print(out, flags, list, () => (list.length ? serversTable(list) : 'no source servers registered yet'));
    });
  servers
    .command('show <name>')
    .description('show one source server: stage, status, progress, error, inventory checks')
    .action(async (name: string, _o, cmd: Command) => {
      const flags = flagsOf(cmd);
      const s = await withClient(flags, (c) => c.request<ServerView>('GET', `/api/v1/servers/${enc(name)}`));
      print(out, flags, s, () => serverDetails(s));
    });

  const targets = program
    .command('targets')
    .description('list target servers and whether a migration locks them');
  targets
    .command('list', { isDefault: true })
    .description('list target servers')
    .action(async (_o, cmd: Command) => {
      const flags = flagsOf(cmd);
      const list = await withClient(flags, (c) => c.request<TargetView[]>('GET', '/api/v1/targets'));
      print(out, flags, list, () => (list.length ? targetsTable(list) : 'no target servers registered yet'));
    });
  targets
    .command('show <name>')
    .description('show one target server')
    .action(async (name: string, _o, cmd: Command) => {
      const flags = flagsOf(cmd);
      const t = await withClient(flags, (c) => c.request<TargetView>('GET', `/api/v1/targets/${enc(name)}`));
      print(out, flags, t, () => targetsTable([t]));
    });
  targets
    .command('delete <name>')
    .description('delete a target server registration (refused while a migration locks it)')
    .action(async (name: string, _o, cmd: Command) => {
      const flags = flagsOf(cmd);
      await withClient(flags, (c) => c.request('DELETE', `/api/v1/targets/${enc(name)}`));
      print(out, flags, { deleted: name }, () => `deleted target ${name}`);
    });

  program
    .command('configure <source>')
    .description('set the target server and migration settings of a source (before Start)')
    .requiredOption('--target <name>', 'target server name (see `ferry targets`)')
    .requiredOption('--method <method>', 'migration method: file (Linux file-level)')
    .option(
      '--continuous-sync <yes|no>',
      'keep syncing changes after full replication until `ferry launch`',
      'no',
    )
    .option('--exclude <path>', 'source directory not to migrate (repeatable)', collect, [])
    .option(
      '--sync-exclude <path>',
      'copied once by the full replication, then not kept in step (repeatable)',
      collect,
      [],
    )
    .option(
      '--sync-interval <seconds>',
      "seconds between continuous syncs (default: the console's --sync-interval, 60)",
    )
    .option(
      '--rate-limit <mbit>',
      'bandwidth limit in Mbit/s, 0 = none (change it later with `ferry rate-limit`)',
      '0',
    )
    .option(
      '--rate-window <HH:MM-HH:MM=MBIT>',
      'a time-of-day window with its own limit (repeatable, up to 5)',
      collect,
      [],
    )
    .option(
      '--disk-map <SRC=TGT>',
      'source disk SRC goes to target disk TGT, e.g. /dev/sda=/dev/vdb (repeatable; default: in order)',
      collect,
      [],
    )
    .option(
      '--resize <PARTITION=SIZE>',
      'make a source partition (device or mount point, e.g. /home) SIZE big on the target, e.g. /home=20G (repeatable)',
      collect,
      [],
    )
    .option(
      '--compression <none|zstd>',
      'compress data on the wire (zstd level 1, chunk by chunk, skipped where it does not pay); for links slower than the disks',
      'none',
    )
    .option(
      '--verify <none|quick|full>',
      'check the target against the source right after the full replication (quick: metadata; full: contents and extended attributes too)',
      'none',
    )
    .addHelpText(
      'after',
      '\nFor a target started with --disk, the source disk layout is checked against the target disks here:\n' +
        'each target disk must be at least as large as its source disk, or --resize must give a layout that\n' +
        'fits and still holds the used data. A layout that cannot work is refused now, with the sizes.\n',
    )
    .action(async (source: string, o: ConfigureFlags, cmd: Command) => {
      const flags = flagsOf(cmd);
      if (!['yes', 'no'].includes(o.continuousSync)) {
        throw new FerryError('FERRY_CONFIG', '--continuous-sync takes yes or no');
      }
      const interval = o.syncInterval === undefined ? undefined : Number(o.syncInterval);
      if (interval !== undefined && !(Number.isInteger(interval) && interval >= 1 && interval <= 86_400)) {
        throw new FerryError('FERRY_CONFIG', '--sync-interval takes whole seconds from 1 to 86400');
      }
      if (!['none', 'quick', 'full'].includes(o.verify))
        throw new FerryError('FERRY_CONFIG', '--verify takes none, quick or full');
      if (!['none', 'zstd'].includes(o.compression))
        throw new FerryError('FERRY_CONFIG', '--compression takes none or zstd');
      const body = {
        verify: o.verify,
        compression: o.compression,
        target: o.target,
        method: o.method,
        continuousSync: o.continuousSync === 'yes',
        excludes: o.exclude,
        syncExcludes: o.syncExclude,
        ...(interval ? { syncIntervalSeconds: interval } : {}),
        rateLimit: rateSettings(o.rateLimit, o.rateWindow),
        diskMap: o.diskMap.map((m) => {
          const [src, tgt] = pair(m, '--disk-map');
          return { source: src, target: tgt };
        }),
        resize: o.resize.map((r) => {
          const [partition, size] = pair(r, '--resize');
          return { partition, sizeBytes: parseSize(size) };
        }),
      };
      const s = await withClient(flags, (c) =>
        c.request<ServerView>('POST', `/api/v1/servers/${enc(source)}/configure`, body),
      );
      print(out, flags, s, () => `configured ${s.name}: target ${s.target}, ${s.stage}/${s.status}`);
    });

  for (const [action, help] of [
    ['start', 'start (or resume) the migration of one or more sources'],
    ['pause', 'pause the replication of one or more sources'],
  ] as const) {
    program
      .command(`${action} <sources...>`)
      .description(help)
      .action(async (sources: string[], _o, cmd: Command) => {
        const flags = flagsOf(cmd);
        const results: unknown[] = [];
        await withClient(flags, async (c) => {
          for (const name of sources) {
            try {
              const s = await c.request<ServerView>('POST', `/api/v1/servers/${enc(name)}/${action}`);
              results.push(s);
              if (flags.output === 'table') out.write(`${name}: ${s.stage}/${s.status}\n`);
            } catch (e) {
              const err = e as FerryError;
              setExit(1);
              results.push({ name, error: { code: err.code, message: err.message, advice: err.advice } });
              if (flags.output === 'table')
                out.write(`${name}: ${err.code}: ${err.message}\n  advice: ${err.advice}\n`);
            }
          }
        });
        if (flags.output === 'json') out.write(`${JSON.stringify(results, null, 2)}\n`);
      });
  }

  for (const [action, help] of [
    ['sync', 'synchronize changes to the target now (continuous sync)'],
    ['launch', 'final sync, then launch the target and complete the migration'],
  ] as const) {
    program
      .command(`${action} <source>`)
      .description(help)
      .action(async (name: string, _o, cmd: Command) => {
        const flags = flagsOf(cmd);
        const s = await withClient(flags, (c) =>
          c.request<ServerView>('POST', `/api/v1/servers/${enc(name)}/${action}`),
        );
        print(out, flags, s, () => `${name}: ${s.stage}/${s.status}`);
      });
  }

  program
    .command('verify <source>')
    .description(
      'sync, then check the target against the source per directory and print the report (exit 0 identical, 1 differences)',
    )
    .option(
      '--full',
      'compare file contents by hash and extended attributes too (reads every file on both sides)',
    )
    .option('--timeout <seconds>', 'give up waiting for the report after this many seconds', '3600')
    .addHelpText(
      'after',
      '\nquick compares type, size, modification time, mode, owner and symlink targets; --full also\n' +
        'hashes every file on both sides and compares extended attributes (file capabilities, ACLs).\n' +
        'Runs during continuous sync (the target is held by the migration); for a check right after\n' +
        'the full replication use `ferry configure --verify`. On a live source, entries removed or\n' +
        'replaced while they are checked count as extra on the target, and the report says how\n' +
        'many (changedOnSource).\n' +
        'The latest report is kept with the task: `ferry servers show SOURCE -o json` (verification).\n',
    )
    .action(async (name: string, o: { full?: boolean; timeout: string }, cmd: Command) => {
      const flags = flagsOf(cmd);
      const { timeout, deadline } = timeoutFlag(o.timeout);
      await withClient(flags, async (c) => {
        const asked = await c.request<ServerView>('POST', `/api/v1/servers/${enc(name)}/verify`, {
          mode: o.full ? 'full' : 'quick',
        });
        for (;;) {
          const s = await c.request<ServerView>('GET', `/api/v1/servers/${enc(name)}`);
          if (s.verification && s.verification.request >= asked.verifyRequest) {
            const r = s.verification.report;
            print(out, flags, r, () => verifyReport(r));
            if (!r.identical) setExit(1);
            return;
          }
          if (s.status === 'failed') {
            setExit(1);
            print(
              out,
              flags,
              s,
              () => `${name}: failed: ${s.error?.code}: ${s.error?.message}\n  advice: ${s.error?.advice}`,
            );
            return;
          }
          if (Date.now() > deadline) {
            setExit(124);
            if (flags.output === 'table') out.write(`${name}: no report within ${timeout} s\n`);
            return;
          }
          await new Promise((r) => setTimeout(r, 500));
        }
      });
    });

  program
    .command('rate-limit <source> <mbit>')
    .description('change the bandwidth limit of a migration, also while it runs (Mbit/s, 0 = none)')
    .option(
      '--window <HH:MM-HH:MM=MBIT>',
      'a time-of-day window with its own limit (repeatable, up to 5; agent local time)',
      (v: string, acc: string[]) => [...acc, v],
      [],
    )
    .action(async (name: string, mbit: string, o: { window: string[] }, cmd: Command) => {
      const flags = flagsOf(cmd);
      const body = rateSettings(mbit, o.window);
      const s = await withClient(flags, (c) =>
        c.request<ServerView>('POST', `/api/v1/servers/${enc(name)}/rate-limit`, body),
      );
      print(
        out,
        flags,
        s,
        () =>
          `${name}: rate limit ${s.rateLimit.mbps || 'none'}${s.rateLimit.windows.map((w) => `, ${w.start}-${w.end} ${w.mbps || 'none'}`).join('')}`,
      );
    });

  program
    .command('delete <source>')
    .description('delete the migration task of a source and release its target')
    .action(async (name: string, _o, cmd: Command) => {
      const flags = flagsOf(cmd);
      await withClient(flags, (c) => c.request('DELETE', `/api/v1/servers/${enc(name)}`));
      print(out, flags, { deleted: name }, () => `deleted ${name}; its target is released`);
    });

  program
    .command('status <source>')
    .description('show the migration status; --watch follows it live (a progress bar on a terminal)')
    .option('--watch', 'follow live until the task stops running (Ctrl-C to leave)')
    .action(async (name: string, o: { watch?: boolean }, cmd: Command) => {
      const flags = flagsOf(cmd);
      await withClient(flags, async (c) => {
        if (!o.watch) {
          const s = await c.request<ServerView>('GET', `/api/v1/servers/${enc(name)}`);
          print(out, flags, s, () => statusLine(s));
          return;
        }
        await watch(c, name, flags, out);
      });
    });

  program
    .command('wait <source>')
    .description('wait until the source reaches a stage and status (exit 0), fails (1) or times out (124)')
    .requiredOption(
      '--stage <stage>',
      'feasibility-check | full-replication | continuous-sync | target-launch',
    )
    .requiredOption(
      '--status <status>',
      'pending-target-configuration | ready | running | paused | failed | completed',
    )
    .option('--timeout <seconds>', 'give up after this many seconds', '3600')
    .action(async (name: string, o: { stage: string; status: string; timeout: string }, cmd: Command) => {
      const flags = flagsOf(cmd);
      const { deadline } = timeoutFlag(o.timeout);
      await withClient(flags, async (c) => {
        for (;;) {
          const s = await c.request<ServerView>('GET', `/api/v1/servers/${enc(name)}`);
          if (s.stage === o.stage && s.status === o.status) {
            print(out, flags, s, () => `${name}: ${s.stage}/${s.status}`);
            return;
          }
          if (s.status === 'failed' && o.status !== 'failed') {
            print(
              out,
              flags,
              s,
              () => `${name}: failed: ${s.error?.code}: ${s.error?.message}\n  advice: ${s.error?.advice}`,
            );
            setExit(1);
            return;
          }
          if (Date.now() > deadline) {
            print(out, flags, s, () => `${name}: timed out at ${s.stage}/${s.status}`);
            setExit(124);
            return;
          }
          await new Promise((r) => setTimeout(r, 500));
        }
      });
    });
}

function rateSettings(mbit: string, windows: string[]): RateSettings {
  const mbps = Number(mbit);
  if (!Number.isFinite(mbps) || mbps < 0)
    throw new FerryError('FERRY_CONFIG', `rate limit "${mbit}" is not a number of Mbit/s`);
  if (windows.length > 5) throw new FerryError('FERRY_CONFIG', 'at most five rate windows');
  return {
    mbps,
    windows: windows.map((w) => {
      const parsed = parseRateWindow(w);
      if (!parsed) throw new FerryError('FERRY_CONFIG', `rate window "${w}" is not HH:MM-HH:MM=MBIT`);
      return parsed;
    }),
  };
}

/** Follows the SSE stream; a bar on a TTY, one line per change otherwise. */
export async function watch(
  c: ConsoleClient,
  name: string,
  flags: ClientFlags,
  out: Out,
  until: (s: ServerView) => boolean = (s) => s.status !== 'running',
): Promise<ServerView | null> {
  const tty = Boolean(process.stdout.isTTY) && flags.output === 'table';
  const bar = tty
    ? new cliProgress.SingleBar(
        {
          format: '{stage} |{bar}| {percentage}% {doneBytes}/{totalBytes} {rate}/s eta {etaText} {detail}',
          hideCursor: true,
        },
        cliProgress.Presets.shades_classic,
      )
    : null;
  let started = false;
  let last: ServerView | null = null;
  let lastLine = '';
  const stream = c.events(`/api/v1/servers/${encodeURIComponent(name)}/events`, (event, data) => {
    if (event === 'deleted') return stream.close();
    if (event !== 'server') return;
    const s = JSON.parse(data) as ServerView;
    last = s;
    if (bar) {
      const payload = {
        stage: `${s.stage}/${s.status}`,
        doneBytes: bytes(s.progress.bytesDone),
        totalBytes: bytes(s.progress.bytesTotal),
        etaText: duration(s.progress.etaSeconds),
        rate: bytes(s.progress.rateBytesPerSecond),
        detail: s.statusDetail === 'reconnecting' ? '(reconnecting…)' : '',
      };
      if (!started) {
        bar.start(100, s.progress.percent, payload);
        started = true;
      } else bar.update(s.progress.percent, payload);
    } else {
      const line = flags.output === 'json' ? JSON.stringify(s) : statusLine(s);
      if (line !== lastLine) out.write(`${line}\n`);
      lastLine = line;
    }
    if (until(s)) stream.close();
  });
  await stream.done.catch(() => {});
  bar?.stop();
  return last;
}
