#!/usr/bin/env node
// The ferry executable: runs the compiled composition root (npm ci / npm run build make dist/).
import { existsSync } from 'node:fs';

// Reads and writes of small files run as batches in libuv's thread pool: more threads than
// the default 4 keep more requests in front of the disk (set before the pool first starts).
process.env.UV_THREADPOOL_SIZE ??= '8';

const main = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(main)) {
  process.stderr.write(
    'ferry: FERRY_CONFIG: the program is not built; run `npm ci` (or `npm run build`) in the ferry checkout\n',
  );
  process.exit(1);
}
await import(main.href);
