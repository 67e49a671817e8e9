import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { argsAsBytes } from './raw-argv.js';

const nul = (...parts: (string | number[])[]) =>
  Buffer.concat(parts.map((p) => Buffer.concat([Buffer.from(p as never), Buffer.from([0])])));

describe('command-line arguments as bytes', () => {
  it('gives an argument that is not UTF-8 its bytes as escapes, and leaves everything else alone', () => {
    const argv = [
      '/usr/bin/node',
      '/opt/ferry/bin/ferry.js',
      'configure',
      'web-1',
      '--exclude',
      '/srv/r\ufffdsum\ufffd',
    ];
    const cmdline = nul(
      'node',
      '--enable-source-maps',
      '/opt/ferry/bin/ferry.js',
      'configure',
      'web-1',
      '--exclude',
      [0x2f, 0x73, 0x72, 0x76, 0x2f, 0x72, 0xe9, 0x73, 0x75, 0x6d, 0xe9],
    );
    expect(argsAsBytes(argv, cmdline)).toEqual([...argv.slice(0, 5), '/srv/r\udce9sum\udce9']);
    // nothing to mend, no /proc, or arguments that do not line up: as Node gave them
    const plain = ['/usr/bin/node', 'ferry.js', 'status', 'café'];
    expect(argsAsBytes(plain, nul('node', 'ferry.js', 'status', 'café'))).toEqual(plain);
    expect(argsAsBytes(argv, null)).toEqual(argv);
    expect(argsAsBytes(argv, nul('node', 'ferry.js', 'configure', 'web-2', '--exclude', [0xe9]))).toEqual(
      argv,
    );
    expect(argsAsBytes(argv, nul('node'))).toEqual(argv);
  });

  it('reads them from /proc/self/cmdline in a real process started with raw bytes', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-argv-'));
    try {
      const script = path.join(dir, 'print.mts');
      const module = new URL('./raw-argv.ts', import.meta.url).pathname;
      fs.writeFileSync(
        script,
        `import { processArgs } from ${JSON.stringify(module)};\nprocess.stdout.write(JSON.stringify(processArgs(process.argv).slice(2)));\n`,
      );
      // the shell passes the bytes 0xE9 and 0xFF as they are, as a terminal would
      const out = execFileSync(
        'sh',
        [
          '-c',
          `exec "$0" --import tsx "$1" --exclude "$(printf '/r\\351sum\\351')" "$(printf 'caf\\303\\251')" "$(printf '\\377')"`,
          process.execPath,
          script,
        ],
        { encoding: 'utf8' },
      );
      expect(JSON.parse(out)).toEqual(['--exclude', '/r\udce9sum\udce9', 'café', '\udcff']);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
