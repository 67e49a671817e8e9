/**
 * node:fs calls that take ferry's paths, each path given to the system as the bytes it
 * stands for (protocol/paths.ts: a name that is not valid UTF-8 carries its bytes escaped), and
 * names read back the same way. Use these instead of node:fs wherever a path comes from a
 * scanned tree or from the source: node:fs alone would write such a name's escapes as
 * U+FFFD, naming another file.
 */
import * as fs from 'node:fs';
import { decodeName, osPath } from '../protocol/paths.js';

const p = osPath as (path: string) => string; // node:fs takes a Buffer wherever a path goes

export const chmodSync = ((path: string, mode: fs.Mode) =>
  fs.chmodSync(p(path), mode)) as typeof fs.chmodSync;
export const lchownSync = ((path: string, uid: number, gid: number) =>
  fs.lchownSync(p(path), uid, gid)) as typeof fs.lchownSync;
export const linkSync = ((existing: string, created: string) =>
  fs.linkSync(p(existing), p(created))) as typeof fs.linkSync;
export const lstatSync = ((path: string, opts?: fs.StatSyncOptions) =>
  fs.lstatSync(p(path), opts)) as typeof fs.lstatSync;
export const mkdirSync = ((path: string, opts?: fs.MakeDirectoryOptions) =>
  fs.mkdirSync(p(path), opts)) as typeof fs.mkdirSync;
export const openSync = ((path: string, flags: fs.OpenMode, mode?: fs.Mode) =>
  fs.openSync(p(path), flags, mode)) as typeof fs.openSync;
export const renameSync = ((from: string, to: string) =>
  fs.renameSync(p(from), p(to))) as typeof fs.renameSync;
export const rmSync = ((path: string, opts?: fs.RmOptions) => fs.rmSync(p(path), opts)) as typeof fs.rmSync;
export const symlinkSync = ((target: string, path: string) =>
  fs.symlinkSync(p(target), p(path))) as typeof fs.symlinkSync;
export const unlinkSync = ((path: string) => fs.unlinkSync(p(path))) as typeof fs.unlinkSync;

/** The names in a directory, each as ferry carries it. */
export function readdirSync(path: string): string[] {
  return fs.readdirSync(p(path), { encoding: 'buffer' }).map(decodeName);
}

/** A symlink's target, as ferry carries it (a target that is not valid UTF-8 keeps its bytes). */
export function readlinkSync(path: string): string {
  return decodeName(fs.readlinkSync(p(path), { encoding: 'buffer' }));
}

/** The canonical path of `path` (symlinks resolved), as ferry carries it. */
export function realpathSync(path: string): string {
  return decodeName(fs.realpathSync(p(path), { encoding: 'buffer' }));
}
