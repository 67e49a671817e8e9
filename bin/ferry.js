#!/usr/bin/env -S node --max-semi-space-size=4 --initial-old-space-size=64
// The ferry executable: runs the compiled composition root (npm ci / npm run build make dist/).
// The flags on the first line size V8's heap for streaming: with the defaults, the young
// generation grows to 3 x 16 MiB and a small old generation then runs a full mark-compact
// every few tens of MiB received (a third of the target's CPU on large files). Node reads
// them only at start; src/demo/processes.ts passes the same flags when it spawns ferry.
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
