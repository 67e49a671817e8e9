/** Test support: the sample tree and the entry-by-entry comparison the demo also uses. */

import path from 'node:path';
import { lstatSync, readdirSync } from '../../src/native/fs-bytes.js';

export { compareTrees } from '../../src/demo/compare-trees.js';
export { addSmallFiles, buildSampleTree, LONG_NAME } from '../../src/demo/sample-tree.js';

/** Sum of the sizes of the regular files under root, each path counted (hard links too), names as bytes. */
export function contentBytes(root: string): number {
  let n = 0;
  for (const name of readdirSync(root)) {
    const abs = path.join(root, name);
    const st = lstatSync(abs);
    if (st.isFile()) n += st.size;
    else if (st.isDirectory()) n += contentBytes(abs);
  }
  return n;
}
