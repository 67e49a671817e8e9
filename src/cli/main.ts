/**
 * cli: the `ferry` executable's composition root: the one place that reads process.env
 * and flags, builds loggers, and starts the console, agent or target, or talks to the
 * console API as a client. Flags > environment (FERRY_*) > defaults.
 */
import { createWriteStream, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import pino, { type Logger } from 'pino';
import { DEFAULT_EMPTY_DIRS, PSEUDO_FS_TYPES } from '../control/index.js';
import { FerryError, isFerryError } from '../errors/index.js';
import { addClientCommands, type ClientFlags } from './client-commands.js';
import { processArgs } from './raw-argv.js';

const VERSION = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

const env = process.env;
let exitCode = 0;
const setExit = (n: number) => {
  if (exitCode === 0 || n > exitCode) exitCode = n;
};
const out = { write: (s: string) => void process.stdout.write(s) };
// A reader that stops early (`ferry agent --help | head -3`) closes the pipe: stop quietly
// with the exit code so far, as other command-line tools do, instead of a stack trace.
for (const stream of [process.stdout, process.stderr])
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') throw e;
    process.exit(exitCode);
  });

function logger(opts: { logLevel: string; logFile?: string }): Logger {
  const dest = opts.logFile ? createWriteStream(opts.logFile, { flags: 'a', mode: 0o600 }) : process.stdout;
  return pino(
    { level: opts.logLevel, redact: ['token', '*.token', 'keyPem', '*.keyPem', 'req.headers.authorization'] },
    dest,
  );
}

function untilSignal(stop: () => Promise<void>): Promise<void> {
  return new Promise((resolve) => {
    const handler = () => {
      void stop().finally(resolve);
    };
    process.once('SIGINT', handler);
    process.once('SIGTERM', handler);
  });
}

function positiveNumber(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0)
      throw new FerryError('FERRY_CONFIG', `${name} takes a positive number (got "${v}")`);
    return n;
  };
}

const program = new Command('ferry')
  .description(
    'ferry moves a running Linux server to a target server. `ferry console` drives migrations, `ferry agent` ' +
      'runs on each source, `ferry target` on each target; the other commands are clients of the console API.',
  )
  .version(VERSION)
  .showHelpAfterError('(run with --help for usage)')
  .addOption(
    new Option('--console <url>', 'console URL').env('FERRY_CONSOLE_URL').default('https://127.0.0.1:7443'),
  )
  .addOption(
    new Option('--ca-file <file>', "console CA certificate (ca.pem in the console's data dir)")
      .env('FERRY_CA_FILE')
      .default('ferry-data/ca.pem'),
  )
  .addOption(
    new Option('--token-file <file>', 'admin bearer token file (admin.token, mode 0600)')
      .env('FERRY_TOKEN_FILE')
      .default('ferry-data/admin.token'),
  )
  .addOption(new Option('-o, --output <format>', 'output format').choices(['table', 'json']).default('table'))
  .addOption(
    new Option('--log-level <level>', 'daemon log level')
      .choices(['trace', 'debug', 'info', 'warn', 'error'])
      .default('info'),
  )
  .addOption(new Option('--log-file <file>', 'daemon log file (JSON lines; default stdout)'))
  .exitOverride() // sub-commands inherit it: usage errors become exit 2 in reportError
  .configureOutput({ writeErr: (s) => process.stderr.write(s) });

/** The global flags a daemon (agent, target) uses: where the console is, and its logger. */
/** `--hash-threads auto|0|1`, shared by agent and target (checked when the program starts). */
function hashThreadsOption(): Option {
  return new Option(
    '--hash-threads <n>',
    'hash large files in a worker thread (1) or on the main thread (0); auto = 1 from 4 cores',
  )
    .env('FERRY_HASH_THREADS')
    .default('auto');
}

/**
 * `--pool-nice N`, shared by agent and target: the nice value of the thread-pool threads
 * (batch reads and writes, listings, direct I/O), read by the native addon from
 * FERRY_POOL_NICE when each thread runs its first job.
 */
function poolNiceOption(): Option {
  return new Option(
    '--pool-nice <0-19>',
    "scheduling priority (nice) of the threads doing file I/O: above 0, below the event loop and the server's own work (on 2 cores, 5 measured no gain on small files and 5% slower large files)",
  )
    .env('FERRY_POOL_NICE')
    .default(0)
    .argParser((v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0 || n > 19)
        throw new FerryError('FERRY_CONFIG', `--pool-nice takes a whole number from 0 to 19 (got "${v}")`);
      return n;
    });
}

/** `--direct-io on|off`, shared by agent (reads) and target (writes). */
function directIoOption(what: 'read' | 'write'): Option {
  return new Option(
    '--direct-io <on|off>',
    `${what === 'read' ? 'read files' : 'write files of 8 MiB and more'} past the page cache (O_DIRECT) where the file system allows it`,
  )
    .env('FERRY_DIRECT_IO')
    .default('on');
}

function daemonFlags(cmd: Command): { console: { consoleUrl: string; caFile: string }; logger: Logger } {
  const g = cmd.optsWithGlobals() as { console: string; caFile: string; logLevel: string; logFile?: string };
  return { console: { consoleUrl: g.console, caFile: g.caFile }, logger: logger(g) };
}

function flagsOf(cmd: Command): ClientFlags {
  const o = cmd.optsWithGlobals() as {
    console: string;
    caFile: string;
    tokenFile: string;
    output: 'table' | 'json';
  };
  return { console: o.console, caFile: o.caFile, tokenFile: o.tokenFile, output: o.output };
}

program
  .command('console')
  .description(
    'run the control plane: HTTPS API, state database, internal CA (creates the data dir on first start)',
  )
  .addOption(
    new Option('--listen <host:port>', 'HTTPS address').env('FERRY_LISTEN').default('127.0.0.1:7443'),
  )
  .addOption(
    new Option('--data-dir <dir>', 'database, CA, certificates and tokens')
      .env('FERRY_DATA_DIR')
      .default('./ferry-data'),
  )
  .option(
    '--san <name>',
    'extra host name or IP for the console certificate (repeatable)',
    (v: string, a: string[]) => [...a, v],
    [],
  )
  .option('--sync-interval <seconds>', 'continuous-sync interval', positiveNumber('--sync-interval'), 60)
  .action(
    async (o: { listen: string; dataDir: string; san: string[]; syncInterval: number }, cmd: Command) => {
      const g = cmd.optsWithGlobals() as { logLevel: string; logFile?: string };
      const log = logger(g);
      // each program loads only its own modules: an agent does not carry the console's
      // web server and database layer in its memory
      const { startConsole } = await import('../console/main.js');
      const c = await startConsole({
        listen: o.listen,
        dataDir: o.dataDir,
        logger: log,
        version: VERSION,
        extraNames: o.san,
        syncIntervalSeconds: o.syncInterval,
      });
      log.info({ url: c.url, dataDir: path.resolve(o.dataDir) }, 'console listening');
      await untilSignal(() => c.close());
    },
  );

program
  .command('agent')
  .description(
    'run on a source server: register, report inventory and checks, replicate to the assigned target',
  )
  .addHelpText(
    'after',
    `\nNever migrated (created on the target as empty directories): ${DEFAULT_EMPTY_DIRS.join(', ')}, and every\n` +
      `mount point under --root of a pseudo or network file system (${PSEUDO_FS_TYPES.slice(0, 12).join(', ')}, …).\n` +
      'More exclusions are per migration: `ferry configure SOURCE --exclude PATH`.',
  )
  .addOption(
    new Option('--registration-token-file <file>', 'registration.token from the console')
      .env('FERRY_REGISTRATION_TOKEN_FILE')
      .makeOptionMandatory(),
  )
  .addOption(new Option('--name <name>', 'source server name').env('FERRY_NAME').default(os.hostname()))
  .addOption(new Option('--root <dir>', 'root of the server to migrate').env('FERRY_ROOT').default('/'))
  .addOption(
    new Option('--state-dir <dir>', 'credential and sync state')
      .env('FERRY_STATE_DIR')
      .default('/var/lib/ferry/agent'),
  )
  .option(
    '--retry-deadline <seconds>',
    'keep retrying a broken transfer this long before failing the task',
    positiveNumber('--retry-deadline'),
    3600,
  )
  .addOption(hashThreadsOption())
  .addOption(directIoOption('read'))
  .addOption(poolNiceOption())
  .action(
    async (
      o: {
        registrationTokenFile: string;
        name: string;
        root: string;
        stateDir: string;
        retryDeadline: number;
        hashThreads: string;
        directIo: string;
        poolNice: number;
      },
      cmd: Command,
    ) => {
      const g = daemonFlags(cmd);
      process.env.FERRY_POOL_NICE = String(o.poolNice); // for the addon's threads
      const { startAgent } = await import('../agent/index.js');
      const a = await startAgent({
        ...g.console,
        registrationTokenFile: o.registrationTokenFile,
        name: o.name,
        root: o.root,
        stateDir: o.stateDir,
        logger: g.logger,
        retryDeadlineMs: o.retryDeadline * 1000,
        hashThreads: o.hashThreads,
        directIo: o.directIo,
      });
      await Promise.race([untilSignal(() => a.stop()), a.done]);
    },
  );

program
  .command('target')
  .description(
    'run on a target server: register, accept data only from the assigned source, write under --root only, or onto the --disk devices only',
  )
  .addHelpText(
    'after',
    '\nGive exactly one of --root and --disk.\n' +
      '  --root DIR   the migrated files are written under DIR (the disks are yours to prepare).\n' +
      '  --disk DEV…  when a migration starts, these whole disks are ERASED and the source layout is\n' +
      '               re-created on them: partition table (GPT or MBR) with the same types, names and\n' +
      '               UUIDs; ext2/3/4, xfs and btrfs file systems and swap with the same labels and UUIDs;\n' +
      '               partition nodes are requested with partx where there is no udev. The file systems\n' +
      '               are mounted under --staging in the source hierarchy while data arrives, and\n' +
      '               unmounted at launch. Disks are paired with source disks in order unless\n' +
      '               `ferry configure --disk-map SRC=TGT` says otherwise. EFI system, BIOS boot and\n' +
      '               unmounted partitions are copied block for block. LVM sources are refused.\n',
  )
  .addOption(
    new Option('--registration-token-file <file>', 'registration.token from the console')
      .env('FERRY_REGISTRATION_TOKEN_FILE')
      .makeOptionMandatory(),
  )
  .addOption(
    new Option('--listen <host:port>', 'data address agents connect to')
      .env('FERRY_LISTEN')
      .makeOptionMandatory(),
  )
  .addOption(
    new Option('--advertise <host:port>', 'address agents should use, if not --listen').env(
      'FERRY_ADVERTISE',
    ),
  )
  .addOption(new Option('--name <name>', 'target server name').env('FERRY_NAME').default(os.hostname()))
  .addOption(new Option('--root <dir>', 'directory the migrated system is written under').env('FERRY_ROOT'))
  .addOption(
    new Option('--disk <device...>', 'whole disks to re-create the source layout on (erased at start)'),
  )
  .addOption(
    new Option(
      '--staging <dir>',
      'where --disk file systems are mounted while data arrives (default: STATE_DIR/staging)',
    ),
  )
  .addOption(
    new Option('--state-dir <dir>', 'credential and journal')
      .env('FERRY_STATE_DIR')
      .default('/var/lib/ferry/target'),
  )
  .addOption(hashThreadsOption())
  .addOption(directIoOption('write'))
  .addOption(
    new Option(
      '--reuse-read-buffer <on|off>',
      "read the data connection into one reused buffer (off: a new buffer per TLS record, Node's ordinary way; measured here: 1-3 CPU s more per 3-4 GB received)",
    )
      .env('FERRY_READ_BUFFER')
      .default('on'),
  )
  .addOption(poolNiceOption())
  .action(
    async (
      o: {
        registrationTokenFile: string;
        listen: string;
        advertise?: string;
        name: string;
        root?: string;
        disk?: string[];
        staging?: string;
        stateDir: string;
        hashThreads: string;
        directIo: string;
        reuseReadBuffer: string;
        poolNice: number;
      },
      cmd: Command,
    ) => {
      const g = daemonFlags(cmd);
      process.env.FERRY_POOL_NICE = String(o.poolNice); // for the addon's threads
      if (!o.root === !o.disk?.length)
        throw new FerryError('FERRY_CONFIG', 'give exactly one of --root DIR and --disk DEVICE…');
      const { startTarget } = await import('../target/index.js');
      const t = await startTarget({
        ...g.console,
        registrationTokenFile: o.registrationTokenFile,
        name: o.name,
        listen: o.listen,
        ...(o.advertise ? { advertise: o.advertise } : {}),
        ...(o.root ? { root: o.root } : {}),
        ...(o.disk?.length ? { disks: o.disk, ...(o.staging ? { staging: o.staging } : {}) } : {}),
        stateDir: o.stateDir,
        logger: g.logger,
        hashThreads: o.hashThreads,
        directIo: o.directIo,
        reuseReadBuffer: o.reuseReadBuffer,
      });
      await Promise.race([untilSignal(() => t.stop()), t.done]);
    },
  );

addClientCommands(program, flagsOf, out, setExit);

program
  .command('demo')
  .description(
    'migrate a sample server end to end on loopback: console, agent and target as separate processes',
  )
  .option('--exit', 'stop everything at the end instead of keeping the console running')
  .option('--dir <dir>', 'working directory for the demo (default: a new temporary directory)')
  .action(async (o: { exit?: boolean; dir?: string }) => {
    const { runDemo } = await import('../demo/demo.js');
    const ok = await runDemo({ keepRunning: !o.exit, ...(o.dir ? { dir: o.dir } : {}), out });
    if (!ok) setExit(1);
  });

function reportError(e: unknown): number {
  if (e instanceof CommanderError) {
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help')
      return 0;
    return 2;
  }
  const json = (program.opts() as { output?: string }).output === 'json';
  if (isFerryError(e)) {
    if (json) process.stderr.write(`${JSON.stringify({ error: e.toJSON() })}\n`);
    else process.stderr.write(`ferry: ${e.code}: ${e.message}\n  advice: ${e.advice}\n`);
    return e.code === 'FERRY_CONFIG' ? 2 : 1;
  }
  process.stderr.write(`ferry: FERRY_INTERNAL: ${(e as Error)?.stack ?? String(e)}\n`);
  return 1;
}

try {
  await program.parseAsync(processArgs(process.argv));
} catch (e) {
  setExit(reportError(e));
}
process.exitCode = exitCode;
if (env.FERRY_EXIT_IMMEDIATELY !== '0') {
  // Client commands end here; daemons returned only after a signal or a fatal error.
  setImmediate(() => process.exit(exitCode));
}
