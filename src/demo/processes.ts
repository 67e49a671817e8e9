import { type ChildProcess, spawn } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

/** The ferry executable of this checkout. */
export const FERRY_BIN = fileURLToPath(new URL('../../bin/ferry.js', import.meta.url));

/**
 * The Node flags on the executable's first line (`#!/usr/bin/env -S node FLAGS`): the heap
 * sizing every ferry process is meant to run with (see bin/ferry.js). Read from the file
 * so that a process spawned as `node FLAGS bin/ferry.js` runs exactly as `ferry` does.
 */
export const FERRY_NODE_FLAGS: readonly string[] = (() => {
  const first = readFileSync(FERRY_BIN, 'utf8').split('\n', 1)[0] ?? '';
  const m = /^#!\/usr\/bin\/env -S node((?: --[a-z0-9-]+=\S+)*)$/.exec(first);
  if (!m) throw new Error(`${FERRY_BIN}: unexpected first line ${JSON.stringify(first)}`);
  return m[1]!.split(' ').filter(Boolean);
})();

/** The argument list for `process.execPath` that runs `ferry ARGS…` (extra Node flags after ferry's own). */
export function ferryArgv(args: readonly string[], nodeFlags: readonly string[] = []): string[] {
  return [...FERRY_NODE_FLAGS, ...nodeFlags, FERRY_BIN, ...args];
}

/** A free loopback TCP port (bound, then released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Starts `ferry ARGS…` as its own process, output appended to `logFile`. */
export function spawnFerry(args: string[], logFile: string): ChildProcess {
  const fd = openSync(logFile, 'a', 0o600);
  return spawn(process.execPath, ferryArgv(args), { stdio: ['ignore', fd, fd] });
}

/** Kills a child and waits for it; SIGKILL after `graceMs`. */
export async function stopProcess(p: ChildProcess | undefined, graceMs = 3000): Promise<void> {
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}

/** Polls `probe` until it returns a value other than undefined, or throws after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${lastError ? `: ${(lastError as Error).message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}
