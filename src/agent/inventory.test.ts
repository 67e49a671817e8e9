import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { denyOpens, removeDenyOpenProgram, stopDenyingOpens } from '../../test/support/deny-open.js';
import { collectInventory, runChecks } from './inventory.js';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-inventory-'));
});
afterEach(async () => {
  await stopDenyingOpens();
  fs.rmSync(dir, { recursive: true, force: true });
});
afterAll(removeDenyOpenProgram);

describe('inventory and feasibility checks', () => {
  it('counts what will be migrated and passes a clean tree', async () => {
    fs.mkdirSync(path.join(dir, 'etc'));
    fs.writeFileSync(path.join(dir, 'etc/a'), 'abc');
    fs.writeFileSync(path.join(dir, 'etc/é'), 'de');
    const inv = await collectInventory(dir, []);
    expect(inv.migrate).toMatchObject({ usedBytes: 5, fileCount: 2, nonUtf8Count: 0 });
    const checks = await runChecks(dir, inv);
    expect(checks.find((c) => c.id === 'file-names')).toMatchObject({ passed: true });
    expect(checks.find((c) => c.id === 'source-listable')).toMatchObject({ passed: true });
    // this kernel has openat2: no path is read through a symlink (see batch-io.test.ts for without)
    expect(checks.find((c) => c.id === 'safe-opens')).toMatchObject({ passed: true });
    expect(checks.every((c) => typeof c.reason === 'string' && c.reason.length > 0)).toBe(true);
  });

  it('reuses earlier tree totals when given them, without walking the tree again', async () => {
    fs.writeFileSync(path.join(dir, 'a'), 'abc');
    const first = await collectInventory(dir, []);
    fs.writeFileSync(path.join(dir, 'b'), 'more bytes');
    const reused = await collectInventory(dir, [], first.migrate);
    expect(reused.migrate).toBe(first.migrate);
    expect((await collectInventory(dir, [])).migrate).toMatchObject({ fileCount: 2, usedBytes: 13 });
  });

  it('counts the file names that are not valid UTF-8, which are migrated byte for byte', async () => {
    const raw = Buffer.concat([
      Buffer.from(path.join(dir, 'latin1-')),
      Buffer.from([0xe9]),
      Buffer.from('.txt'),
    ]);
    fs.writeFileSync(raw, 'x');
    const inv = await collectInventory(dir, []);
    expect(inv.migrate).toMatchObject({ nonUtf8Count: 1, nonUtf8Names: ['latin1-\udce9.txt'], fileCount: 1 });
    const check = (await runChecks(dir, inv)).find((c) => c.id === 'file-names');
    expect(check).toMatchObject({ passed: true });
    expect(check?.reason).toContain('migrated byte for byte');
  });

  it('names a directory it cannot list, and counts the rest of the tree', async () => {
    fs.mkdirSync(path.join(dir, 'locked'));
    fs.writeFileSync(path.join(dir, 'locked/a'), 'abc');
    fs.writeFileSync(path.join(dir, 'b'), 'de');
    const allow = await denyOpens([path.join(dir, 'locked')]);
    const inv = await collectInventory(dir, []);
    await allow();
    expect(inv.migrate).toMatchObject({
      fileCount: 1,
      usedBytes: 2,
      unlistedCount: 1,
      unlistedDirs: ['locked (EPERM)'],
    });
    const check = (await runChecks(dir, inv)).find((c) => c.id === 'source-listable');
    expect(check).toMatchObject({ passed: false, code: 'FERRY_SOURCE_READ' });
    expect(check?.reason).toContain('locked (EPERM)');
  });
});
