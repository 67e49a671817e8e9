import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

let built: string | undefined;

/** deny-open.c, compiled once per test process (cc is among what `npm test` installs). */
function denyOpenProgram(): string {
  if (built) return built;
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-deny-open-')), 'deny-open');
  execFileSync('cc', ['-O2', '-o', out, fileURLToPath(new URL('./deny-open.c', import.meta.url))]);
  built = out;
  return out;
}

const running = new Set<ChildProcess>();

/**
 * Makes every open of `paths` (files or directories) fail with EPERM until the returned
 * function is called, as an on-access scanner refusing them would: a real fanotify
 * listener (deny-open.c), not a stand-in. With `readsAfter`, the files open and that many
 * reads of them succeed, then every read fails with EPERM (as past a bad sector). Call
 * stopDenyingOpens() in afterEach as well, so that a failed test leaves no listener behind.
 */
export async function denyOpens(
  paths: string[],
  opts: { readsAfter?: number } = {},
): Promise<() => Promise<void>> {
  const args = opts.readsAfter === undefined ? paths : ['--reads', String(opts.readsAfter), ...paths];
  const child = spawn(denyOpenProgram(), args, { stdio: ['pipe', 'pipe', 'inherit'] });
  running.add(child);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('ready\n')) resolve();
    });
    child.on('exit', (code) => reject(new Error(`deny-open exited with ${code} before it was ready`)));
  });
  return () => stop(child);
}

function stop(child: ChildProcess): Promise<void> {
  running.delete(child);
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.stdin!.end(); // it exits when its stdin closes; the kernel allows what was pending
  });
}

/** Stops every listener denyOpens started and has not stopped yet. */
export async function stopDenyingOpens(): Promise<void> {
  await Promise.all([...running].map(stop));
}

/** Removes the compiled program (afterAll). */
export function removeDenyOpenProgram(): void {
  if (built) fs.rmSync(path.dirname(built), { recursive: true, force: true });
  built = undefined;
}
