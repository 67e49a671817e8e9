import Type, { type Static } from 'typebox';

const Count = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });

export const VERIFY_MODES = ['quick', 'full'] as const;
export const VerifyMode = Type.Union([Type.Literal('quick'), Type.Literal('full')]);
export type VerifyMode = Static<typeof VerifyMode>;

/** Entries the source has in one directory, and how the target compares. */
export const VerifyCounts = Type.Object(
  { files: Count, different: Count, missing: Count, extra: Count },
  { additionalProperties: false },
);
export type VerifyCounts = Static<typeof VerifyCounts>;

export const VerifyDirectory = Type.Object(
  { path: Type.String({ maxLength: 4096 }), files: Count, different: Count, missing: Count, extra: Count },
  { additionalProperties: false },
);
export type VerifyDirectory = Static<typeof VerifyDirectory>;

/**
 * A consistency check of the target against the source: per directory, the entries the
 * source has (`files`), those that differ on the target, are missing there, or exist only
 * there. quick compares type, size, mtime, mode, owner and symlink targets; full also
 * compares file contents by hash. Directories without a difference are listed only while
 * there is room (`truncated` says some were left out); the totals always cover everything.
 */
export const VerifyReport = Type.Object(
  {
    mode: VerifyMode,
    identical: Type.Boolean(),
    totals: VerifyCounts,
    directories: Type.Array(VerifyDirectory, { maxItems: 1000 }),
    examples: Type.Array(
      Type.Object(
        { path: Type.String({ maxLength: 4096 }), problem: Type.String({ maxLength: 300 }) },
        { additionalProperties: false },
      ),
      { maxItems: 100 },
    ),
    truncated: Type.Boolean(),
    seconds: Type.Number({ minimum: 0 }),
    finishedAt: Type.String({ maxLength: 40 }),
    /**
     * Entries the source's walk found and then lost before it could describe them (removed,
     * or replaced by another kind, on a live source): they count as extra where the target
     * has them. Set by the source side; absent in a report from before it was counted.
     */
    changedOnSource: Type.Optional(Count),
  },
  { additionalProperties: false },
);
export type VerifyReport = Static<typeof VerifyReport>;
