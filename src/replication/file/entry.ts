import { closeSync, fstatSync } from 'node:fs';
import {
  decodeName,
  encodePath,
  ferryFs,
  parseXattrBlob,
  sortXattrs,
  type XattrList,
} from '../../native/index.js';
import type { EntryMessage } from '../../protocol/index.js';
import { wholeFileHash } from './content-hash.js';
import { xattrsOf } from './read-file.js';
import { goneSinceScan, type ScannedEntry } from './scan.js';

/** Reads every extended attribute the process may read (user., security., trusted., ACLs). */
export function readXattrs(abs: string): XattrList | undefined {
  let names: string[];
  try {
    names = ferryFs.listXattr(abs);
  } catch {
    return undefined; // file system without xattrs
  }
  if (names.length === 0) return undefined;
  const out: XattrList = [];
  for (const name of names) {
    try {
      out.push({ name, value: ferryFs.getXattr(abs, name).toString('base64') });
    } catch {
      /* vanished or unreadable: the next sync picks it up */
    }
  }
  return out.length ? sortXattrs(out) : undefined;
}

/**
 * A digest of an entry's extended attributes for a verify pass (CHECK `xattrs`): BLAKE3 of,
 * for each attribute in name order, its name's length (u32), name, value's length (u32) and
 * value. No attributes digest as the empty input. Both sides compute it the same way.
 */
export function xattrsDigest(list: XattrList | undefined): string {
  const parts: Buffer[] = [];
  const withLength = (b: Buffer) => {
    const length = Buffer.allocUnsafe(4);
    length.writeUInt32BE(b.length, 0);
    parts.push(length, b);
  };
  for (const { name, value } of sortXattrs([...(list ?? [])])) {
    withLength(encodePath(name)); // its bytes, escaped ones included
    withLength(Buffer.from(value, 'base64'));
  }
  return wholeFileHash(Buffer.concat(parts));
}

function devParts(rdev: bigint): { rdevMajor: number; rdevMinor: number } {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & 0xfffff000n);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & 0xffffff00n);
  return { rdevMajor: Number(major), rdevMinor: Number(minor) };
}

export function isSparse(e: ScannedEntry): boolean {
  return e.kind === 'file' && e.stat.blocks * 512n < e.stat.size;
}

/**
 * The ENTRY message for a scanned entry; `linkTo` makes it a hard link to an earlier path.
 * (A small file read with its attributes takes entryFromRecord instead; with `fileXattrs:
 * false` a regular file's attributes are left for the caller to read from its descriptor.)
 */
export async function entryFromScan(
  e: ScannedEntry,
  seq: number,
  linkTo?: string,
  opts: { fileXattrs?: boolean } = {},
): Promise<EntryMessage> {
  const st = e.stat;
  const msg: EntryMessage = {
    seq,
    path: e.path,
    kind: linkTo ? 'hardlink' : e.kind,
    mode: Number(st.mode & 0o7777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
    mtimeNs: st.mtimeNs.toString(),
  };
  if (linkTo) {
    msg.linkTo = linkTo;
    return msg;
  }
  if (e.kind === 'file') msg.size = Number(st.size);
  // in its parent opened through no symlink (a parent swapped since the scan: ELOOP)
  if (e.kind === 'symlink') msg.linkTarget = linkTargetOf(e.abs);
  if (e.kind === 'chardev' || e.kind === 'blockdev') Object.assign(msg, devParts(st.rdev));
  // a regular file's come from the descriptor its content is read from (fileXattrs: false)
  const xattrs = e.kind === 'file' && opts.fileXattrs === false ? undefined : entryXattrs(e);
  if (xattrs) msg.xattrs = xattrs;
  return msg;
}

/** A symlink's target, read in its parent opened through no symlink (a parent swapped since the scan: ELOOP). */
export function linkTargetOf(abs: string): string {
  return decodeName(ferryFs.readlinkSource(abs));
}

/**
 * Whether reading a scanned entry's link target or attributes (entryFromScan, linkTargetOf,
 * entryXattrs) failed because the entry is gone since the scan, or is no longer what the scan
 * found (EINVAL: readlink of something that is no longer a symlink): the entry is dropped,
 * not a failure.
 */
export function changedAtRead(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return goneSinceScan(code) || code === 'EINVAL';
}

/**
 * A scanned entry's extended attributes, read where no swap since the scan can redirect
 * them: a directory's from its own descriptor, anything else's inside its parent's.
 */
export function entryXattrs(e: Pick<ScannedEntry, 'kind' | 'abs'>): XattrList | undefined {
  return e.kind === 'dir' ? directoryXattrs(e.abs) : nodeXattrs(e.abs);
}

/**
 * `read()`, or the attributes read by path where it could not open what it reads them
 * through (refused, see unreadableCode); a path gone or swapped since the scan throws.
 */
function orByPath(abs: string, read: () => XattrList | undefined): XattrList | undefined {
  try {
    return read();
  } catch (err) {
    if (goneSinceScan((err as NodeJS.ErrnoException).code)) throw err;
    return readXattrs(abs);
  }
}

/**
 * A directory's extended attributes (default ACLs, labels), read from a descriptor opened
 * through no symlink (openSource), as a regular file's are: a parent directory swapped for
 * a symlink between the scan and this read fails with ELOOP (the pass then drops the entry)
 * instead of lending it another directory's attributes; so does the directory itself
 * replaced by something else (ENOTDIR).
 */
export function directoryXattrs(abs: string): XattrList | undefined {
  return orByPath(abs, () => {
    const fd = ferryFs.openSource(abs);
    try {
      if (!fstatSync(fd).isDirectory())
        throw Object.assign(new Error(`${abs} is no longer a directory`), { code: 'ENOTDIR' });
      return xattrsOf(fd);
    } finally {
      closeSync(fd);
    }
  });
}

/**
 * The extended attributes of an entry not opened for its content (a symlink's SELinux label,
 * a device node's), read inside its parent directory opened through no symlink
 * (`nodeXattrs`): a parent swapped for a symlink since the scan fails with ELOOP (the pass
 * then drops the entry) instead of lending it another entry's attributes.
 */
function nodeXattrs(abs: string): XattrList | undefined {
  return orByPath(abs, () => parseXattrBlob(ferryFs.nodeXattrs(abs), 1)[0]);
}

/**
 * The ENTRY of a regular file from what the sync state records of it (SyncRecord): the
 * same message entryFromScan makes (a test holds them equal), without converting its stat
 * again; `xattrs` as read with the content.
 */
export function entryFromRecord(
  rec: { path: string; mode: number; uid: number; gid: number; mtimeNs: string; size: number },
  seq: number,
  xattrs: XattrList | undefined,
): EntryMessage {
  const msg: EntryMessage = {
    seq,
    path: rec.path,
    kind: 'file',
    mode: rec.mode & 0o7777,
    uid: rec.uid,
    gid: rec.gid,
    mtimeNs: rec.mtimeNs,
    size: rec.size,
  };
  if (xattrs) msg.xattrs = xattrs;
  return msg;
}
