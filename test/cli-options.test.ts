import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FERRY_BIN, FERRY_NODE_FLAGS, ferryArgv } from '../src/demo/processes.js';

const FERRY = path.join(import.meta.dirname, '..', 'bin', 'ferry.js');

function ferry(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [FERRY, ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 30_000,
  });
}

describe('--hash-threads', () => {
  it('is listed by agent --help and target --help, with its environment variable', () => {
    for (const program of ['agent', 'target']) {
      const r = ferry([program, '--help']);
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/--hash-threads <n>[\s\S]*worker thread[\s\S]*FERRY_HASH_THREADS/);
    }
  });

  it('refuses anything but auto, 0 and 1 (flag or environment) with FERRY_CONFIG and exit code 2', () => {
    const common = ['--registration-token-file', '/nonexistent/token'];
    const bad = [
      ferry(['agent', ...common, '--hash-threads', '2']),
      ferry([
        'target',
        ...common,
        '--listen',
        '127.0.0.1:1',
        '--root',
        '/nonexistent',
        '--hash-threads',
        'many',
      ]),
      ferry(['agent', ...common], { FERRY_HASH_THREADS: '4' }),
    ];
    for (const r of bad) {
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/FERRY_CONFIG: --hash-threads must be auto, 0 or 1/);
    }
  });
});

describe('--direct-io', () => {
  it('is listed by agent --help (reads) and target --help (writes), with its environment variable', () => {
    for (const [program, verb] of [
      ['agent', 'read files past the page cache'],
      ['target', 'write files of 8 MiB and more past the page cache'],
    ] as const) {
      const r = ferry([program, '--help']);
      expect(r.status).toBe(0);
      const words = verb.replaceAll(' ', '\\s+'); // --help wraps long descriptions
      expect(r.stdout).toMatch(new RegExp(`--direct-io <on\\|off>[\\s\\S]*${words}[\\s\\S]*FERRY_DIRECT_IO`));
    }
  });

  it('refuses anything but on and off (flag or environment) with FERRY_CONFIG and exit code 2', () => {
    const common = ['--registration-token-file', '/nonexistent/token'];
    const bad = [
      ferry(['agent', ...common, '--direct-io', 'yes']),
      ferry(['target', ...common, '--listen', '127.0.0.1:1', '--root', '/nonexistent', '--direct-io', '1']),
      ferry(['target', ...common, '--listen', '127.0.0.1:1', '--root', '/nonexistent'], {
        FERRY_DIRECT_IO: 'auto',
      }),
    ];
    for (const r of bad) {
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/FERRY_CONFIG: --direct-io must be on or off/);
    }
  });
});

describe('--reuse-read-buffer', () => {
  it('is listed by target --help, with its environment variable and default', () => {
    const r = ferry(['target', '--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(
      /--reuse-read-buffer <on\|off>[\s\S]*one\s+reused\s+buffer[\s\S]*default: "on"[\s\S]*FERRY_READ_BUFFER/,
    );
  });

  it('refuses anything but on and off (flag or environment) with FERRY_CONFIG and exit code 2', () => {
    const common = ['--registration-token-file', '/nonexistent/token', '--listen', '127.0.0.1:1'];
    const bad = [
      ferry(['target', ...common, '--root', '/nonexistent', '--reuse-read-buffer', 'yes']),
      ferry(['target', ...common, '--root', '/nonexistent'], { FERRY_READ_BUFFER: '0' }),
    ];
    for (const r of bad) {
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/FERRY_CONFIG: --reuse-read-buffer must be on or off/);
    }
  });
});

describe('the ferry executable', () => {
  it('stops quietly when the reader of its output goes away (`ferry … | head`)', async () => {
    const r = spawnSync(
      'sh',
      ['-c', `"${FERRY}" agent --help | head -c 10 >/dev/null; "${FERRY}" --help | true`],
      {
        encoding: 'utf8',
        timeout: 30_000,
      },
    );
    expect(r.status).toBe(0);
    expect(r.stderr).not.toMatch(/EPIPE|Unhandled/);
  });

  it('runs by itself through its first line, with the heap flags every spawner passes too', () => {
    const r = spawnSync(FERRY, ['--version'], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    expect(FERRY_NODE_FLAGS).toEqual(['--max-semi-space-size=4', '--initial-old-space-size=64']);
    expect(ferryArgv(['agent'], ['--cpu-prof'])).toEqual([
      ...FERRY_NODE_FLAGS,
      '--cpu-prof',
      FERRY_BIN,
      'agent',
    ]);
    expect(FERRY_BIN).toBe(FERRY);
  });
});

describe('--pool-nice', () => {
  it('is listed by agent --help and target --help, with its environment variable and default', () => {
    for (const program of ['agent', 'target']) {
      const r = ferry([program, '--help']);
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(
        /--pool-nice <0-19>[\s\S]*threads\s+doing\s+file\s+I\/O[\s\S]*default: 0[\s\S]*FERRY_POOL_NICE/,
      );
    }
  });

  it('refuses anything but a whole number from 0 to 19 (flag or environment) with FERRY_CONFIG and exit code 2', () => {
    const common = ['--registration-token-file', '/nonexistent/token'];
    for (const r of [
      ferry(['agent', ...common, '--pool-nice', '20']),
      ferry(['agent', ...common, '--pool-nice', '-1']),
      ferry(['agent', ...common], { FERRY_POOL_NICE: 'low' }),
    ]) {
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/FERRY_CONFIG: --pool-nice takes a whole number from 0 to 19/);
    }
  });
});
