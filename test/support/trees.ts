/** Test support: the sample tree and the entry-by-entry comparison the demo also uses. */

import fs from 'node:fs';
import path from 'node:path';

export { compareTrees } from '../../src/demo/compare-trees.js';
export { addSmallFiles, buildSampleTree, LONG_NAME } from '../../src/demo/sample-tree.js';

/** Sum of the sizes of the regular files under root, each path counted (hard links too). */
export function contentBytes(root: string): number {
  let n = 0;
  for (const name of fs.readdirSync(root, { recursive: true }) as string[]) {
    const st = fs.lstatSync(path.join(root, name));
    if (st.isFile()) n += st.size;
  }
  return n;
}
