#!/usr/bin/env node
// The ferry executable: runs the compiled composition root (npm ci / npm run build make dist/).
import { existsSync } from 'node:fs';

const main = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(main)) {
  process.stderr.write(
    'ferry: FERRY_CONFIG: the program is not built; run `npm ci` (or `npm run build`) in the ferry checkout\n',
  );
  process.exit(1);
}
await import(main.href);
