import {
  namedUnreadable,
  type PassStats,
  type ServerView,
  type TargetView,
  type VerifyReport,
} from '../control/index.js';
import { formatBytes } from '../disks/index.js';
import { replaceEscapedBytes } from '../protocol/paths.js';

/** Bytes for people (one formatter for the whole program). */
export const bytes = formatBytes;

export function duration(s: number | null): string {
  if (s === null) return '-';
  if (s < 60) return `${Math.round(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** The one-line human status, e.g. "full-replication/running 42.0% 1.2 GiB/3.0 GiB 80.0 MiB/s eta 23s". */
export function statusLine(s: ServerView): string {
  const p = s.progress;
  const parts = [`${s.stage}/${s.status}`];
  if (s.statusDetail === 'reconnecting') parts.push('(reconnecting…)');
  if (s.status === 'running' || p.bytesTotal > 0) {
    parts.push(
      `${p.percent.toFixed(1)}%`,
      `${bytes(p.bytesDone)}/${bytes(p.bytesTotal)}`,
      `${bytes(p.rateBytesPerSecond)}/s`,
    );
    parts.push(`eta ${duration(p.etaSeconds)}`);
  }
  const unreadable = unreadableOf(s);
  if (unreadable) parts.push(`(${unreadable.unreadable} unreadable on the source)`);
  if (s.error) parts.push(`error ${s.error.code}: ${s.error.message}`);
  return parts.join(' ');
}

/** The last pass's stats (PassStats, with when it ended), if a pass has ended. */
function lastPass(s: ServerView): (PassStats & { at?: string }) | null {
  return s.lastSync as (PassStats & { at?: string }) | null;
}

/** The last pass's stats when it met source entries it could not read. */
function unreadableOf(s: ServerView): (PassStats & { at?: string }) | null {
  const last = lastPass(s);
  return last?.unreadable ? last : null;
}

export function serversTable(list: ServerView[]): string {
  return table([
    ['NAME', 'CONNECTED', 'STAGE', 'STATUS', 'PROGRESS', 'TARGET', 'METHOD'],
    ...list.map((s) => [
      s.name,
      s.connected ? 'yes' : 'no',
      s.stage,
      s.statusDetail === 'reconnecting' ? `${s.status} (reconnecting…)` : s.status,
      `${s.progress.percent.toFixed(1)}%`,
      s.target ?? '-',
      s.method,
    ]),
  ]);
}

export function serverDetails(s: ServerView): string {
  const lines = [
    `name:            ${s.name}`,
    `connected:       ${s.connected ? 'yes' : 'no'}${s.lastSeenAt ? ` (last seen ${s.lastSeenAt})` : ''}`,
    `stage/status:    ${s.stage} / ${s.status}${s.statusDetail ? ` (${s.statusDetail})` : ''}`,
    `target:          ${s.target ?? '-'}`,
    `method:          ${s.method}`,
    `continuous sync: ${s.continuousSync ? `yes, every ${s.syncIntervalSeconds ? `${s.syncIntervalSeconds} s` : '--sync-interval of the console (60 s unless set)'} and on \`ferry sync\`` : 'no'}`,
    `excludes:        ${s.excludes.length ? s.excludes.join(', ') : '-'}`,
    `sync excludes:   ${s.syncExcludes.length ? s.syncExcludes.join(', ') : '-'}`,
    `progress:        ${statusLine(s)}`,
  ];
  lines.push(`compression:     ${s.compression}`);
  lines.push(`verify after replication: ${s.verifyAfterReplication}`);
  if (s.verification) {
    const t = s.verification.report.totals;
    lines.push(
      `last verification: ${s.verification.report.identical ? 'identical' : 'DIFFERENT'} (${s.verification.report.mode}, ${s.verification.report.finishedAt}): ${t.files} entries, ${t.different} different, ${t.missing} missing, ${t.extra} extra`,
    );
  }
  const last = lastPass(s);
  if (last)
    lines.push(
      `last pass:       ${last.at ?? '?'}: ${last.entriesSent} entries sent, ${last.deleted} deleted, ${last.unchanged} unchanged; ` +
        `${bytes(last.bytesSent)} of content sent${last.bytesMatched ? `, ${bytes(last.bytesMatched)} found in the target's copies` : ''}` +
        `${last.appended ? ` (${last.appended} ${last.appended === 1 ? 'file' : 'files'} sent as appended bytes)` : ''}, ${last.seconds.toFixed(1)} s`,
    );
  const unreadable = unreadableOf(s);
  if (unreadable) {
    const named = namedUnreadable(unreadable.unreadable!, unreadable.unreadableEntries ?? [], showPath);
    lines.push(
      `unreadable:      ${unreadable.unreadable} source file(s) or directories could not be read by the last pass (${unreadable.at ?? '?'}): ${named}`,
      '                 the target keeps what it had of them, every pass tries again, and the target is not launched while any remain',
    );
  }
  if (s.diskPlan) {
    lines.push('disks:');
    for (const d of s.diskPlan.disks) {
      const parts = d.partitions.map(
        (p) =>
          `${p.number}: ${bytes(p.size * d.sectorSize)} ${p.fs?.type ?? 'raw'}${p.fs?.mountpoint ? ` ${p.fs.mountpoint}` : ''}`,
      );
      lines.push(
        `  ${d.source} -> ${d.target} (${d.table ?? `whole disk ${d.fs?.type ?? ''}`})${parts.length ? `: ${parts.join(', ')}` : ''}`,
      );
    }
  }
  if (s.error)
    lines.push(`error:           ${s.error.code}: ${s.error.message}`, `advice:          ${s.error.advice}`);
  if (s.checks.length) {
    lines.push('checks:');
    for (const c of s.checks) lines.push(`  [${c.passed ? 'pass' : 'FAIL'}] ${c.title}: ${c.reason}`);
  }
  return lines.join('\n');
}

/**
 * A path for people: each byte of a name that is not UTF-8 (carried as a lone surrogate,
 * protocol/paths.ts) as \xNN, which a terminal would otherwise show as U+FFFD.
 */
export function showPath(p: string): string {
  return replaceEscapedBytes(p, (b) => `\\x${b.toString(16)}`);
}

/** A consistency report for people: totals, then the directories that differ, then examples. */
export function verifyReport(r: VerifyReport): string {
  const t = r.totals;
  const lines = [
    `${r.identical ? 'identical' : 'DIFFERENT'} (${r.mode} check, ${r.seconds.toFixed(1)} s, ${r.finishedAt}): ` +
      `${t.files} entries, ${t.different} different, ${t.missing} missing on target, ${t.extra} extra on target`,
  ];
  if (r.changedOnSource)
    lines.push(
      `${r.changedOnSource} entries were removed or replaced on the source while it was checked ` +
        '(a live source): they count as extra where the target has them; the next sync copies the change',
    );
  const bad = r.directories.filter((d) => d.different + d.missing + d.extra > 0);
  if (bad.length) {
    lines.push(
      table([
        ['DIRECTORY', 'FILES', 'DIFFERENT', 'MISSING', 'EXTRA'],
        ...bad.map((d) => [
          showPath(d.path),
          String(d.files),
          String(d.different),
          String(d.missing),
          String(d.extra),
        ]),
      ]),
    );
  }
  if (r.examples.length) {
    lines.push('examples:');
    for (const e of r.examples.slice(0, 20)) lines.push(`  ${showPath(e.path)}: ${e.problem}`);
  }
  return lines.join('\n');
}

export function targetsTable(list: TargetView[]): string {
  return table([
    ['NAME', 'CONNECTED', 'ADDRESS', 'LOCKED', 'LOCKED BY'],
    ...list.map((t) => [
      t.name,
      t.connected ? 'yes' : 'no',
      t.address,
      t.locked ? 'yes' : 'no',
      t.lockedBy ?? '-',
    ]),
  ]);
}
