import { type ChildProcess, spawn } from 'node:child_process';
import { openSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

/** The ferry executable of this checkout. */
export const FERRY_BIN = fileURLToPath(new URL('../../bin/ferry.js', import.meta.url));

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
  return spawn(process.execPath, [FERRY_BIN, ...args], { stdio: ['ignore', fd, fd] });
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
