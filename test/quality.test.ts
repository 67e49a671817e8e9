import { execFileSync, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../src/errors/index.js';

const root = path.resolve(import.meta.dirname, '..');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) return sourceFiles(p);
    return p.endsWith('.ts') && !p.endsWith('.test.ts') ? [p] : [];
  });
}

function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]/g))
    out.push(m[1]!);
  for (const m of text.matchAll(/import\(\s*['"]([^'"]+)['"]\s*\)/g)) out.push(m[1]!);
  return out;
}

/** The folder under src/ an import lands in, or the bare module name. */
function target(file: string, spec: string): string {
  if (!spec.startsWith('.')) return spec;
  const abs = path.resolve(path.dirname(file), spec);
  const rel = path.relative(path.join(root, 'src'), abs);
  return rel.startsWith('..') ? `outside:${rel}` : `src/${rel.split(path.sep)[0]}`;
}

const RULES: { from: string; forbid: RegExp; why: string }[] = [
  { from: 'src/core', forbid: /^(node:|src\/(?!core|errors))/, why: 'the lifecycle core is pure' },
  { from: 'src/errors', forbid: /^(node:|src\/(?!errors))/, why: 'errors are pure data' },
  { from: 'src/control', forbid: /^(node:|src\/(?!control))/, why: 'control messages are pure schemas' },
  {
    from: 'src/protocol',
    forbid: /^(node:(?!stream)|src\/(?!protocol|errors|control))/,
    why: 'the wire codec does no I/O',
  },
  { from: 'src/agent', forbid: /^src\/(console|target|cli|demo)$/, why: 'the agent runs alone on a source' },
  {
    from: 'src/target',
    forbid: /^src\/(console|agent|cli|demo)$/,
    why: 'the target runs alone on a target server',
  },
  {
    from: 'src/console',
    forbid: /^src\/(agent|target|cli|demo|replication)$/,
    why: 'the console is never on the data path',
  },
  {
    from: 'src/transport',
    forbid: /^src\/(console|agent|target|cli|demo)$/,
    why: 'transport serves every program',
  },
  {
    from: 'src/replication',
    forbid: /^src\/(console|agent|target|cli|demo|transport)$/,
    why: 'the engine knows no programs',
  },
  {
    from: 'src/disks',
    forbid: /^src\/(console|agent|target|cli|demo|transport|replication)$/,
    why: 'disk layout work knows no programs',
  },
  { from: 'src/pki', forbid: /^src\/(console|agent|target|cli|demo|transport)$/, why: 'pki is a library' },
];

describe('architecture', () => {
  const files = sourceFiles(path.join(root, 'src'));

  it('has no forbidden imports', () => {
    const violations: string[] = [];
    for (const file of files) {
      const rel = path.relative(root, file);
      for (const rule of RULES) {
        if (!rel.startsWith(`${rule.from}/`)) continue;
        for (const spec of importsOf(file)) {
          const t = target(file, spec);
          if (rule.forbid.test(t)) violations.push(`${rel} imports ${spec} (${rule.why})`);
        }
      }
    }
    expect(violations).toEqual([]);
  });

  it('reads process.env only in the composition root', () => {
    const readers = files
      .filter((f) => /process\.env/.test(readFileSync(f, 'utf8')))
      .map((f) => path.relative(root, f));
    expect(readers).toEqual(['src/cli/main.ts']);
  });

  it('documents every folder in its index.ts', () => {
    for (const dir of [
      'core',
      'errors',
      'protocol',
      'control',
      'pki',
      'transport',
      'agent',
      'target',
      'replication/file',
      'disks',
    ]) {
      const text = readFileSync(path.join(root, 'src', dir, 'index.ts'), 'utf8');
      expect(text.startsWith('/**'), `src/${dir}/index.ts starts with its contract comment`).toBe(true);
    }
  });
});

describe('docs/errors.md', () => {
  const doc = readFileSync(path.join(root, 'docs/errors.md'), 'utf8');
  const rows = new Map(
    [...doc.matchAll(/^\| `(FERRY_[A-Z_]+)` \| (\d{3}) \| (yes|no) \| (.+) \|$/gm)].map((m) => [m[1]!, m]),
  );

  it('lists exactly the codes the code defines', () => {
    expect([...rows.keys()].sort()).toEqual(Object.keys(ERROR_CODES).sort());
  });

  it('gives each code the same HTTP status, retry class and advice as the code', () => {
    for (const [code, info] of Object.entries(ERROR_CODES)) {
      const row = rows.get(code)!;
      expect(Number(row[2]), code).toBe(info.http);
      expect(row[3], code).toBe(info.retryable ? 'yes' : 'no');
      expect(row[4], code).toContain(info.advice);
    }
  });
});

describe('code quality', () => {
  it('passes the formatter and linter (biome check)', () => {
    const r = spawnSync('npx', ['biome', 'check', '--diagnostic-level=error', '.'], {
      cwd: root,
      encoding: 'utf8',
    });
    expect(r.stdout + r.stderr).not.toMatch(/Found \d+ errors?/);
    expect(r.status).toBe(0);
  });

  it('type-checks, tests included', () => {
    const out = (() => {
      try {
        return execFileSync('npx', ['tsc', '--noEmit', '-p', 'tsconfig.json'], {
          cwd: root,
          encoding: 'utf8',
        });
      } catch (e) {
        return String((e as { stdout?: string }).stdout ?? e);
      }
    })();
    expect(out).toBe('');
  }, 120_000);
});
