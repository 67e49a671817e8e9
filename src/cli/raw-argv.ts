import { readFileSync } from 'node:fs';
import { decodeName } from '../protocol/paths.js';

/**
 * The command line with each argument as ferry carries a path (protocol/paths.ts): an
 * argument that is not valid UTF-8 (`--exclude` naming a Latin-1 directory, typed or
 * completed by the shell as its bytes) keeps each such byte as U+DC80–U+DCFF, where Node
 * gives it as U+FFFD and two such names would become one. The bytes come from `cmdline`
 * (`/proc/self/cmdline`: every argument, NUL-terminated); the last arguments there are
 * the script's, as Node's own come before the script. Anything that does not line up (no
 * /proc, an argument Node decoded otherwise) leaves `argv` as Node gave it.
 */
export function argsAsBytes(argv: readonly string[], cmdline: Buffer | null): string[] {
  const given = argv.slice(2);
  if (!cmdline || !given.some((a) => a.includes('\uFFFD'))) return [...argv];
  const raw: Buffer[] = [];
  for (let at = 0; at < cmdline.length; ) {
    let end = cmdline.indexOf(0, at);
    if (end < 0) end = cmdline.length;
    raw.push(cmdline.subarray(at, end));
    at = end + 1;
  }
  if (raw.length < given.length) return [...argv];
  const mine = raw.slice(raw.length - given.length);
  if (mine.some((b, i) => b.toString('utf8') !== given[i])) return [...argv];
  return [...argv.slice(0, 2), ...mine.map((b) => decodeName(b))];
}

/** This process's arguments (`argv`: process.argv) as argsAsBytes gives them. */
export function processArgs(argv: readonly string[]): string[] {
  let cmdline: Buffer | null = null;
  try {
    cmdline = readFileSync('/proc/self/cmdline');
  } catch {
    /* no /proc: as Node gave them */
  }
  return argsAsBytes(argv, cmdline);
}
