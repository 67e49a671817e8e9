import Type, { type Static, type TSchema } from 'typebox';
import { Compile } from 'typebox/compile';
import { VerifyMode, VerifyReport } from '../control/verify.js';
import { FerryError } from '../errors/index.js';
import { decompressChunk } from './compression.js';
import { MAX_DATA_BYTES } from './frame-codec.js';
import { badSurrogate, pathBytes } from './paths.js';

export const FrameType = {
  HELLO: 0x01,
  WELCOME: 0x02,
  ENTRY: 0x10,
  DATA: 0x11,
  /** DATA compressed with zstd: u64 offset, u32 length once decompressed, zstd bytes. */
  DATA_Z: 0x16,
  FILE_END: 0x12,
  DELETE: 0x13,
  COMMIT: 0x14,
  CHECK: 0x15,
  ACK: 0x20,
  COMMITTED: 0x21,
  REJECT: 0x22,
  REPORT: 0x23,
  SUMS: 0x24,
  RAW: 0x17,
  /** A whole small file in one frame: u32 length of the JSON entry (with its hash), the JSON, the content. */
  FILE: 0x18,
  /**
   * Whole small files in one frame: u32 length of a JSON array of entries (each as in FILE,
   * with its size and hash), the array, then each file's content in the array's order.
   */
  FILES: 0x19,
  /**
   * The file of the current ENTRY cannot be read to its end on the source (an I/O error, a
   * refused read): the target drops what it received of it and keeps its previous copy.
   */
  FILE_ABORT: 0x1a,
  /**
   * Changed-block transfer: `length` bytes of the target's previous copy, from offset `from`,
   * belong at `offset` of the new file (a block the source found elsewhere than it was).
   */
  COPY: 0x1b,
  ERROR: 0x7f,
} as const;

export const ENTRY_KINDS = [
  'dir',
  'file',
  'symlink',
  'hardlink',
  'fifo',
  'chardev',
  'blockdev',
  'socket',
] as const;
export type EntryKind = (typeof ENTRY_KINDS)[number];

const MAX_PATH_BYTES = 4095;
const MAX_NAME_BYTES = 255;

const SLASH = 0x2f;
const DOT = 0x2e;

/**
 * A path from the wire is relative, `/`-separated, canonical (no empty, `.` or `..`
 * component, no NUL), at most 4095 bytes, each name at most 255 bytes. Anything else is
 * refused: it is the first line of the target's promise never to write outside its root.
 */
export function validatePath(p: string): string | null {
  if (typeof p !== 'string' || p.length === 0) return 'path is empty';
  // A UTF-16 code unit takes at most 3 bytes of UTF-8: most strings need no byte count.
  // Counted as the bytes the path stands for (a name that is not UTF-8: paths.ts).
  if (p.length * 3 > MAX_PATH_BYTES && pathBytes(p) > MAX_PATH_BYTES) return 'path is longer than 4095 bytes';
  const surrogate = badSurrogate(p);
  if (surrogate) return surrogate;
  if (p.includes('\0')) return 'path contains a NUL byte';
  if (p.charCodeAt(0) === SLASH) return 'path is absolute';
  for (let start = 0; ; ) {
    const slash = p.indexOf('/', start);
    const end = slash < 0 ? p.length : slash;
    const len = end - start;
    if (len === 0) return 'path has an empty component';
    if (len <= 2 && p.charCodeAt(start) === DOT && (len === 1 || p.charCodeAt(start + 1) === DOT))
      return `path has a "${len === 1 ? '.' : '..'}" component`;
    if (len * 3 > MAX_NAME_BYTES && pathBytes(p.slice(start, end)) > MAX_NAME_BYTES)
      return 'a path component is longer than 255 bytes';
    if (slash < 0) return null;
    start = slash + 1;
  }
}

const Int = (o: object = {}) => Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, ...o });
const NsString = Type.String({ pattern: '^-?[0-9]{1,20}$' });
const PathString = Type.String({ minLength: 1, maxLength: MAX_PATH_BYTES });

const Hello = Type.Object(
  {
    taskId: Type.String({ minLength: 1, maxLength: 64 }),
    runId: Int(),
    pass: Type.Union([
      Type.Literal('full'),
      Type.Literal('sync'),
      Type.Literal('final'),
      Type.Literal('verify'),
      Type.Literal('blocks'),
    ]),
    /** For a verify pass: compare metadata only (quick) or contents too (full). */
    verify: Type.Optional(VerifyMode),
    /**
     * For a verify pass: the task's exclusions (never copied, or copied once and not kept in
     * step), which the target leaves out of its report instead of counting them as extra.
     */
    ignore: Type.Optional(Type.Array(PathString, { maxItems: 2000 })),
  },
  { additionalProperties: false },
);
/**
 * A partly received file the target kept (written and fsync'd up to `offset`): the source
 * may continue it with an ENTRY carrying `resumeFrom: offset` if the file is still the same.
 */
const Resumable = Type.Object(
  { path: PathString, offset: Int(), size: Int(), mtimeNs: NsString },
  { additionalProperties: false },
);
const Welcome = Type.Object(
  { ok: Type.Literal(true), resume: Type.Optional(Resumable) },
  { additionalProperties: false },
);
const Xattr = Type.Object(
  { name: Type.String({ minLength: 1, maxLength: 255 }), value: Type.String({ maxLength: 90_000 }) },
  { additionalProperties: false },
);
const KindSchema = Type.Union([
  Type.Literal('dir'),
  Type.Literal('file'),
  Type.Literal('symlink'),
  Type.Literal('hardlink'),
  Type.Literal('fifo'),
  Type.Literal('chardev'),
  Type.Literal('blockdev'),
  Type.Literal('socket'),
]);
/** What ENTRY and CHECK both say of an entry: path, kind, owner, mode, time, size, link target. */
const EntryMeta = {
  path: PathString,
  kind: KindSchema,
  mode: Int({ maximum: 0o7777 }),
  uid: Int({ maximum: 0xffffffff }),
  gid: Int({ maximum: 0xffffffff }),
  mtimeNs: NsString,
  size: Type.Optional(Int()),
  linkTarget: Type.Optional(Type.String({ minLength: 1, maxLength: MAX_PATH_BYTES })),
};
const Entry = Type.Object(
  {
    seq: Int(),
    ...EntryMeta,
    linkTo: Type.Optional(PathString),
    rdevMajor: Type.Optional(Int({ maximum: 0xffffffff })),
    rdevMinor: Type.Optional(Int({ maximum: 0xffffffff })),
    xattrs: Type.Optional(Type.Array(Xattr, { maxItems: 256 })),
    /** The file continues the target's kept partial copy: DATA starts at this offset. */
    resumeFrom: Type.Optional(Int()),
    /**
     * A hard link made because the source renamed a file the target already holds (at
     * linkTo, deleted later in the pass): if that copy is gone, the target REJECTs the
     * entry instead of failing, and the source sends the file in full next pass.
     */
    renamed: Type.Optional(Type.Literal(true)),
    /**
     * Changed-block transfer: the target answers with SUMS of its current copy in blocks of
     * this size; DATA then carries only the blocks that differ, the rest comes from that copy.
     */
    deltaBlockSize: Type.Optional(Type.Integer({ minimum: 4096, maximum: 1 << 24 })),
    /**
     * A sparse file sent from its start: FILE_END's hash covers each DATA chunk as sent
     * (offset, length, bytes) and then the size, not the holes between the chunks, so that
     * neither side hashes the holes as zeros (replication/file/content-hash.ts).
     */
    holesUnhashed: Type.Optional(Type.Literal(true)),
    /**
     * The file grew by appends since the target's copy was sent. Its first appendFrom bytes
     * are that copy (which must be exactly that long); a FILE or FILES frame carries only the
     * size - appendFrom bytes that follow, and `hash` covers the whole file. In an ENTRY (a
     * whole file sent with compressed DATA), DATA starts at appendFrom and FILE_END's hash
     * covers the whole file.
     */
    appendFrom: Type.Optional(Int({ minimum: 1 })),
  },
  { additionalProperties: false },
);
const WholeFile = Type.Object(
  { ...Entry.properties, hash: Type.String({ pattern: '^[0-9a-f]{64}$' }) },
  { additionalProperties: false },
);
const checkWholeFile = Compile(WholeFile);
const FileEnd = Type.Object(
  { seq: Int(), hash: Type.String({ pattern: '^[0-9a-f]{64}$' }) },
  { additionalProperties: false },
);
const FileAbort = Type.Object(
  { seq: Int(), code: Type.String({ maxLength: 32, pattern: '^[A-Z][A-Z0-9_]*$' }) },
  { additionalProperties: false },
);
/**
 * One source entry as a verify pass describes it; in full mode `hash` (files) and `xattrs`
 * (every kind, a symlink's own included: the digest of its extended attributes, xattrsDigest
 * in replication/file/entry.ts).
 */
const Check = Type.Object(
  {
    ...EntryMeta,
    hash: Type.Optional(Type.String({ pattern: '^[0-9a-f]{64}$' })),
    xattrs: Type.Optional(Type.String({ pattern: '^[0-9a-f]{64}$' })),
  },
  { additionalProperties: false },
);
/**
 * A blocks pass: partition `index` of the task's block copies follows as DATA (all-zero
 * blocks left out: the target writes zeros there), then FILE_END with the hash of all of it.
 */
const Raw = Type.Object(
  { seq: Int(), index: Type.Integer({ minimum: 0, maximum: 1023 }), size: Int() },
  { additionalProperties: false },
);

/**
 * The target's copy of a file in blocks: 16 bytes of BLAKE3 per block, base64 (`hashes`),
 * and each block's weak rolling sum as a big-endian u32, base64 (`weak`, native/rolling.c).
 */
const Sums = Type.Object(
  {
    seq: Int(),
    blockSize: Type.Integer({ minimum: 4096, maximum: 1 << 24 }),
    size: Int(),
    hashes: Type.String({ maxLength: 1_000_000, pattern: '^[A-Za-z0-9+/]*={0,2}$' }),
    weak: Type.Optional(Type.String({ maxLength: 300_000, pattern: '^[A-Za-z0-9+/]*={0,2}$' })),
  },
  { additionalProperties: false },
);
/** Changed-block transfer: bytes [from, from + length) of the target's previous copy go at `offset`. */
const Copy = Type.Object(
  { offset: Int(), from: Int(), length: Type.Integer({ minimum: 1, maximum: 1 << 24 }) },
  { additionalProperties: false },
);
const Delete = Type.Object({ seq: Int(), path: PathString }, { additionalProperties: false });
/**
 * The end of a pass. A file pass's COMMIT carries the source root's own owner, mode,
 * extended attributes and modification time (`root`): the target gives them to its root
 * last, as the root is no entry of the tree.
 */
const Commit = Type.Object(
  {
    seq: Int(),
    root: Type.Optional(
      Type.Object(
        {
          mode: EntryMeta.mode,
          uid: EntryMeta.uid,
          gid: EntryMeta.gid,
          mtimeNs: NsString,
          xattrs: Type.Optional(Type.Array(Xattr, { maxItems: 256 })),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);
const Ack = Type.Object({ seq: Int() }, { additionalProperties: false });
const Committed = Type.Object({ seq: Int() }, { additionalProperties: false });
const Reject = Type.Object(
  { seq: Int(), code: Type.String({ maxLength: 64 }), message: Type.String({ maxLength: 4096 }) },
  { additionalProperties: false },
);
const ErrorMsg = Type.Object(
  { code: Type.String({ maxLength: 64 }), message: Type.String({ maxLength: 4096 }) },
  { additionalProperties: false },
);

export type HelloMessage = Static<typeof Hello>;
export type WelcomeMessage = Static<typeof Welcome>;
export type ResumableFile = Static<typeof Resumable>;
export type EntryMessage = Static<typeof Entry>;
export type FileEndMessage = Static<typeof FileEnd>;
export type FileAbortMessage = Static<typeof FileAbort>;
export type WholeFileMessage = Static<typeof WholeFile>;
export type DeleteMessage = Static<typeof Delete>;
export type CheckMessage = Static<typeof Check>;
export type SumsMessage = Static<typeof Sums>;
export type CopyMessage = Static<typeof Copy>;
export type RawMessage = Static<typeof Raw>;
export type CommitMessage = Static<typeof Commit>;
export type AckMessage = Static<typeof Ack>;
export type CommittedMessage = Static<typeof Committed>;
export type RejectMessage = Static<typeof Reject>;
export type ErrorMessage = Static<typeof ErrorMsg>;

export type Message =
  | { type: 'hello'; body: HelloMessage }
  | { type: 'welcome'; body: WelcomeMessage }
  | { type: 'entry'; body: EntryMessage }
  /**
   * `release`, on a received message, gives `data`'s buffer back to the session's frame pool:
   * call it once nothing reads `data` any more (after its write has completed). Not calling
   * it only costs an allocation; calling it early lets the next frame overwrite `data`.
   * On a message given to `Session.send`, the session calls it once the stream has written
   * the message's buffers (the sender may then reuse them; see ReadBuffers).
   */
  | { type: 'data'; offset: number; data: Buffer; release?: () => void }
  | { type: 'file'; body: WholeFileMessage; data: Buffer; release?: () => void }
  /** Several whole files (FILES): the same as that many FILE messages, in order; `release` as for FILE, once for all. */
  | { type: 'files'; files: { body: WholeFileMessage; data: Buffer }[]; release?: () => void }
  | { type: 'file-end'; body: FileEndMessage }
  | { type: 'file-abort'; body: FileAbortMessage }
  | { type: 'delete'; body: DeleteMessage }
  | { type: 'check'; body: CheckMessage }
  | { type: 'sums'; body: SumsMessage }
  | { type: 'copy'; body: CopyMessage }
  | { type: 'raw'; body: RawMessage }
  | { type: 'report'; body: VerifyReport }
  | { type: 'commit'; body: CommitMessage }
  | { type: 'ack'; body: AckMessage }
  | { type: 'committed'; body: CommittedMessage }
  | { type: 'reject'; body: RejectMessage }
  | { type: 'error'; body: ErrorMessage };

type JsonType = Exclude<Message['type'], 'data' | 'file' | 'files'>;

/** The most files one FILES frame may carry. */
export const MAX_FILES_PER_FRAME = 1024;
/** The longest entry a FILE frame may carry (its JSON, large extended attributes included). */
export const MAX_FILE_JSON_BYTES = 96 * 1024;

/**
 * The first bytes of a FILE or FILES frame: the frame's length and type, then the u32
 * length of the entries' JSON and the JSON; `contentBytes` of contents follow it.
 */
export function wholeFilesFrameHead(type: number, json: Buffer, contentBytes: number): Buffer {
  const head = Buffer.allocUnsafe(9 + json.length);
  head.writeUInt32BE(1 + 4 + json.length + contentBytes, 0);
  head.writeUInt8(type, 4);
  head.writeUInt32BE(json.length, 5);
  json.copy(head, 9);
  return head;
}

const JSON_TYPES: Record<JsonType, { code: number; schema: TSchema }> = {
  hello: { code: FrameType.HELLO, schema: Hello },
  welcome: { code: FrameType.WELCOME, schema: Welcome },
  entry: { code: FrameType.ENTRY, schema: Entry },
  'file-end': { code: FrameType.FILE_END, schema: FileEnd },
  'file-abort': { code: FrameType.FILE_ABORT, schema: FileAbort },
  delete: { code: FrameType.DELETE, schema: Delete },
  check: { code: FrameType.CHECK, schema: Check },
  sums: { code: FrameType.SUMS, schema: Sums },
  copy: { code: FrameType.COPY, schema: Copy },
  raw: { code: FrameType.RAW, schema: Raw },
  report: { code: FrameType.REPORT, schema: VerifyReport },
  commit: { code: FrameType.COMMIT, schema: Commit },
  ack: { code: FrameType.ACK, schema: Ack },
  committed: { code: FrameType.COMMITTED, schema: Committed },
  reject: { code: FrameType.REJECT, schema: Reject },
  error: { code: FrameType.ERROR, schema: ErrorMsg },
};

const BY_CODE = new Map<number, { type: JsonType; check: ReturnType<typeof Compile> }>(
  Object.entries(JSON_TYPES).map(([type, { code, schema }]) => [
    code,
    { type: type as JsonType, check: Compile(schema) },
  ]),
);

function violation(message: string): FerryError {
  return new FerryError('FERRY_PROTOCOL_VIOLATION', message);
}

/** One whole file's entry from a FILE or FILES frame, checked completely. */
function wholeFileEntry(body: unknown, frame: string): WholeFileMessage {
  if (!checkWholeFile.Check(body)) {
    const first = [...checkWholeFile.Errors(body)][0];
    throw violation(
      `${frame} frame invalid at "${first?.instancePath ?? ''}": ${first?.message ?? 'invalid'}`,
    );
  }
  const e = body as WholeFileMessage;
  checkEntry(e);
  if (
    e.kind !== 'file' ||
    e.resumeFrom !== undefined ||
    e.deltaBlockSize !== undefined ||
    e.holesUnhashed !== undefined
  )
    throw violation(`${frame} frame holds something other than whole regular files`);
  // the target reads what precedes the appended bytes into memory: only a small file's worth
  if (e.appendFrom !== undefined && (e.size ?? 0) > MAX_DATA_BYTES)
    throw violation(`${frame} frame holds appended bytes of a file larger than ${MAX_DATA_BYTES} bytes`);
  return e;
}

/** The JSON after a FILE or FILES frame's u32 length, and where the content starts. */
function framedJson(payload: Buffer, frame: string, maxJson: number): { json: unknown; contentAt: number } {
  if (payload.length < 4) throw violation(`${frame} frame shorter than its 4-byte header`);
  const jsonLen = payload.readUInt32BE(0);
  if (jsonLen > maxJson || 4 + jsonLen > payload.length)
    throw violation(`${frame} frame entry length out of range`);
  try {
    return { json: JSON.parse(payload.toString('utf8', 4, 4 + jsonLen)), contentAt: 4 + jsonLen };
  } catch {
    throw violation(`${frame} frame entry is not valid JSON`);
  }
}

/** Validates a frame completely (schema, then paths) before anything acts on it. */
export function decodeMessage(type: number, payload: Buffer): Message {
  if (type === FrameType.FILE) {
    const { json, contentAt } = framedJson(payload, 'FILE', MAX_FILE_JSON_BYTES);
    const e = wholeFileEntry(json, 'FILE');
    const data = payload.subarray(contentAt);
    if ((e.size ?? 0) - (e.appendFrom ?? 0) !== data.length)
      throw violation('FILE frame is not one whole regular file of its stated size');
    return { type: 'file', body: e, data };
  }
  if (type === FrameType.FILES) {
    const { json, contentAt } = framedJson(payload, 'FILES', payload.length);
    if (!Array.isArray(json) || json.length === 0 || json.length > MAX_FILES_PER_FRAME)
      throw violation(`FILES frame must list 1 to ${MAX_FILES_PER_FRAME} files`);
    const files: { body: WholeFileMessage; data: Buffer }[] = [];
    let at = contentAt;
    let lastSeq = -1;
    for (const body of json) {
      const e = wholeFileEntry(body, 'FILES');
      if (e.seq <= lastSeq) throw violation('FILES frame entries out of order');
      lastSeq = e.seq;
      const size = (e.size ?? 0) - (e.appendFrom ?? 0); // what follows the target's copy, when appended to
      if (size > payload.length - at) throw violation('FILES frame is shorter than its files add up to');
      files.push({ body: e, data: payload.subarray(at, at + size) });
      at += size;
    }
    if (at !== payload.length) throw violation('FILES frame is longer than its files add up to');
    return { type: 'files', files };
  }
  if (type === FrameType.DATA_Z) {
    if (payload.length < 12) throw violation('DATA_Z frame shorter than its 12-byte header');
    const offset = Number(payload.readBigUInt64BE(0));
    if (!Number.isSafeInteger(offset)) throw violation('DATA offset out of range');
    const raw = payload.readUInt32BE(8);
    if (raw > MAX_DATA_BYTES) throw violation('DATA_Z frame expands beyond the largest DATA frame');
    const data = decompressChunk(payload.subarray(12), raw);
    if (!data) throw violation('DATA_Z frame does not decompress to its declared length');
    return { type: 'data', offset, data };
  }
  if (type === FrameType.DATA) {
    if (payload.length < 8) throw violation('DATA frame shorter than its 8-byte offset');
    const offset = Number(payload.readBigUInt64BE(0));
    if (!Number.isSafeInteger(offset)) throw violation('DATA offset out of range');
    const data = payload.subarray(8);
    if (data.length > MAX_DATA_BYTES) throw violation('DATA frame larger than allowed');
    return { type: 'data', offset, data };
  }
  const entry = BY_CODE.get(type);
  if (!entry) throw violation(`unknown frame type 0x${type.toString(16)}`);
  let body: unknown;
  try {
    body = JSON.parse(payload.toString('utf8'));
  } catch {
    throw violation(`${entry.type} frame is not valid JSON`);
  }
  if (!entry.check.Check(body)) {
    const first = [...entry.check.Errors(body)][0];
    throw violation(
      `${entry.type} frame invalid at "${first?.instancePath ?? ''}": ${first?.message ?? 'invalid'}`,
    );
  }
  const msg = { type: entry.type, body } as Message;
  if (msg.type === 'entry') checkEntry(msg.body);
  if (msg.type === 'commit') checkXattrNames(msg.body.root?.xattrs);
  if (msg.type === 'delete' || msg.type === 'check') {
    const why = validatePath(msg.body.path);
    if (why)
      throw new FerryError('FERRY_UNSAFE_PATH', `refused path ${JSON.stringify(msg.body.path)}: ${why}`);
  }
  return msg;
}

/**
 * Refuses extended attribute names the target could not set as sent: a NUL (the name would
 * end there), a lone surrogate that stands for no byte (paths.ts), more than 255 bytes.
 */
function checkXattrNames(list: readonly { name: string }[] | undefined): void {
  for (const { name } of list ?? []) {
    if (name.includes('\0')) throw violation('extended attribute name contains NUL');
    if (badSurrogate(name)) throw violation('extended attribute name holds a lone surrogate');
    if (pathBytes(name) > 255) throw violation('extended attribute name longer than 255 bytes');
  }
}

function checkEntry(e: EntryMessage): void {
  for (const p of [e.path, e.linkTo]) {
    if (p === undefined) continue;
    const why = validatePath(p);
    if (why) throw new FerryError('FERRY_UNSAFE_PATH', `refused path ${JSON.stringify(p)}: ${why}`);
  }
  checkXattrNames(e.xattrs);
  if (e.kind === 'file' && e.size === undefined) throw violation('file entry without size');
  if (e.kind === 'symlink' && e.linkTarget === undefined) throw violation('symlink entry without linkTarget');
  if (e.kind === 'hardlink' && e.linkTo === undefined) throw violation('hardlink entry without linkTo');
  if (
    (e.kind === 'chardev' || e.kind === 'blockdev') &&
    (e.rdevMajor === undefined || e.rdevMinor === undefined)
  ) {
    throw violation('device entry without rdev');
  }
  if (e.linkTarget?.includes('\0')) throw violation('symlink target contains NUL');
  if (e.linkTarget !== undefined && badSurrogate(e.linkTarget))
    throw violation('symlink target holds a lone surrogate');
  if (
    e.holesUnhashed !== undefined &&
    (e.kind !== 'file' || e.resumeFrom !== undefined || e.deltaBlockSize !== undefined)
  )
    throw violation('holesUnhashed is for a regular file sent whole from its start');
  if (
    e.appendFrom !== undefined &&
    (e.kind !== 'file' ||
      e.resumeFrom !== undefined ||
      e.deltaBlockSize !== undefined ||
      e.holesUnhashed !== undefined ||
      e.appendFrom >= (e.size ?? 0))
  )
    throw violation('appendFrom is for a regular file longer than the copy it continues');
}

export function encodeMessage(msg: Message): { type: number; payload: Buffer } {
  if (msg.type === 'file' || msg.type === 'files') {
    const [type, bodies, datas] =
      msg.type === 'file'
        ? [FrameType.FILE, msg.body, [msg.data]]
        : [FrameType.FILES, msg.files.map((f) => f.body), msg.files.map((f) => f.data)];
    const content = datas.reduce((n, d) => n + d.length, 0);
    const head = wholeFilesFrameHead(type, Buffer.from(JSON.stringify(bodies)), content);
    return { type, payload: Buffer.concat([head.subarray(5), ...datas]) }; // encodeFrame adds length and type
  }
  if (msg.type === 'data') {
    const payload = Buffer.allocUnsafe(8 + msg.data.length);
    payload.writeBigUInt64BE(BigInt(msg.offset), 0);
    msg.data.copy(payload, 8);
    return { type: FrameType.DATA, payload };
  }
  return { type: JSON_TYPES[msg.type].code, payload: Buffer.from(JSON.stringify(msg.body)) };
}
