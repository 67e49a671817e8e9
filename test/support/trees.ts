/** Test support: the sample tree and the entry-by-entry comparison the demo also uses. */

export { compareTrees } from '../../src/demo/compare-trees.js';
export { addSmallFiles, buildSampleTree, LONG_NAME } from '../../src/demo/sample-tree.js';
