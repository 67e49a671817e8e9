import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { SyncRecord } from '../replication/file/index.js';
import { SqliteSyncState } from './sync-state.js';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-state-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const rec: SyncRecord = {
  path: 'etc/hosts',
  kind: 'file',
  size: 1234,
  mtimeNs: '1700000000123456789',
  ctimeNs: '1700000000987654321',
  ino: '424242',
  mode: 0o100644,
  uid: 0,
  gid: 0,
};

/** Whether the store's file holds the inode index now (read through a connection of its own). */
function hasInodeIndex(file: string): boolean {
  const db = new Database(file, { readonly: true });
  try {
    return (
      db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'entries_ino'").get() !==
      undefined
    );
  } finally {
    db.close();
  }
}

describe('SqliteSyncState', () => {
  it('keeps apart paths that differ only in bytes that are not UTF-8, and gives each back as it came', () => {
    const state = new SqliteSyncState(path.join(dir, 'state.db'));
    const gen = state.beginPass();
    // U+FFFD is what SQLite's UTF-8 would make of each escaped byte; U+0001 is the store's own escape
    const paths = [
      'd\udce9',
      'd\udce9/a\udce9',
      'd\udce9/a\udce8',
      'd\udce9/a\ufffd',
      'x\u0001y',
      'x\u0001e9',
      '😀\udcff',
    ];
    for (const [i, p] of paths.entries()) state.record({ ...rec, path: p, ino: String(i) }, gen);
    for (const [i, p] of paths.entries()) expect(state.lookup(p)).toMatchObject({ path: p, ino: String(i) });
    expect(state.byInode?.('1')).toEqual([expect.objectContaining({ path: 'd\udce9/a\udce9' })]);
    state.flush();
    const next = state.beginPass();
    state.markSeenUnder('d\udce9', next);
    expect(state.unseen(next).sort()).toEqual(['x\u0001e9', 'x\u0001y', '😀\udcff'].sort());
    state.remove('x\u0001y');
    expect(state.lookup('x\u0001y')).toBeUndefined();
    expect(state.lookup('x\u0001e9')).toBeDefined();
    state.close();
  });

  it('stamps an entry seen in one step only when every field is as recorded', () => {
    const state = new SqliteSyncState(path.join(dir, 'sync.db'));
    expect(state.isEmpty()).toBe(true);
    const g1 = state.beginPass();
    state.record(rec, g1);
    expect(state.isEmpty()).toBe(false); // within the pass's open transaction too
    state.record({ ...rec, path: 'etc/other' }, g1);
    expect(state.lookup('etc/hosts')).toEqual(rec);
    const g2 = state.beginPass();
    const changed: Partial<SyncRecord>[] = [
      { kind: 'symlink' },
      { size: 1235 },
      { mtimeNs: '1700000000123456780' },
      { ctimeNs: '1700000000987654320' },
      { ino: '424243' },
      { mode: 0o100600 },
      { uid: 1 },
      { gid: 1 },
      { path: 'etc/missing' },
    ];
    for (const c of changed)
      expect(state.markSeenIfUnchanged({ ...rec, ...c }, g2), JSON.stringify(c)).toBe(false);
    // none of those stamped anything: both entries are still unseen in this pass
    expect([...state.unseen(g2)].sort()).toEqual(['etc/hosts', 'etc/other']);
    expect(state.markSeenIfUnchanged(rec, g2)).toBe(true);
    expect([...state.unseen(g2)]).toEqual(['etc/other']);
    state.close();
    // recorded for good: a new process sees the same
    const again = new SqliteSyncState(path.join(dir, 'sync.db'));
    expect(again.isEmpty()).toBe(false);
    expect(again.lookup('etc/hosts')).toEqual(rec);
    again.close();
  });

  it('fills an empty store without the inode index and builds it before anyone asks by inode', () => {
    const file = path.join(dir, 'sync.db');
    const state = new SqliteSyncState(file);
    expect(hasInodeIndex(file)).toBe(true);
    const g1 = state.beginPass();
    expect(hasInodeIndex(file)).toBe(false); // a first pass inserts without it
    for (let i = 0; i < 50; i++) state.record({ ...rec, path: `f${i}`, ino: String(1000 + (i % 10)) }, g1);
    // asked during the pass (it is not, by a first pass, but the answer must hold)
    expect(
      state
        .byInode('1003')
        .map((r) => r.path)
        .sort(),
    ).toEqual(['f13', 'f23', 'f3', 'f33', 'f43']);
    expect(hasInodeIndex(file)).toBe(true);
    state.beginPass(); // not empty: the index stays
    expect(hasInodeIndex(file)).toBe(true);
    state.close();
    // a process that stopped mid-pass left the file without the index: opening builds it
    const raw = new Database(file);
    raw.exec('DROP INDEX entries_ino');
    raw.close();
    const reopened = new SqliteSyncState(file);
    expect(hasInodeIndex(file)).toBe(true);
    expect(reopened.byInode('1003')).toHaveLength(5);
    reopened.close();
  });

  it('keeps a content hash with a record, forgets it when told, and gives a store made before hashes the column', () => {
    const file = path.join(dir, 'sync.db');
    // a store of the previous version: no hash column, one record
    const raw = new Database(file);
    raw.exec(`CREATE TABLE entries (path TEXT PRIMARY KEY, kind TEXT NOT NULL, size INTEGER NOT NULL,
      mtime_ns TEXT NOT NULL, ctime_ns TEXT NOT NULL, ino TEXT NOT NULL, mode INTEGER NOT NULL,
      uid INTEGER NOT NULL, gid INTEGER NOT NULL, seen INTEGER NOT NULL) WITHOUT ROWID`);
    raw
      .prepare('INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)')
      .run(rec.path, rec.kind, rec.size, rec.mtimeNs, rec.ctimeNs, rec.ino, rec.mode, rec.uid, rec.gid);
    raw.close();
    const state = new SqliteSyncState(file);
    expect(state.lookup('etc/hosts')).toEqual(rec); // no hash: sent whole when it changes
    const g = state.beginPass();
    const hash = '0123456789abcdef0123456789abcdef';
    state.record({ ...rec, path: 'var/log/app.log', hash }, g);
    state.record({ ...rec, path: 'odd', hash: 'not hex' }, g); // never stored as anything but 16 bytes
    expect(state.lookup('var/log/app.log')).toEqual({ ...rec, path: 'var/log/app.log', hash });
    expect(state.byInode(rec.ino).find((r) => r.path === 'var/log/app.log')?.hash).toBe(hash);
    expect(state.lookup('odd')).toEqual({ ...rec, path: 'odd' });
    // the hash is no part of what makes an entry unchanged
    expect(state.markSeenIfUnchanged({ ...rec, path: 'var/log/app.log' }, g)).toBe(true);
    state.forgetHash('var/log/app.log');
    expect(state.lookup('var/log/app.log')).toEqual({ ...rec, path: 'var/log/app.log' });
    state.close();
  });
});
