import { FerryError, isFerryError, toFerryError } from '../../errors/index.js';
import type { Session, WholeFileMessage } from '../../protocol/index.js';
import type { TreeWriter, WriterLog } from './tree-writer.js';

export interface ReceiveResult {
  readonly committed: boolean;
  readonly entries: number;
  readonly bytes: number;
  /** Time spent applying directory metadata and syncing the file system at COMMIT. */
  readonly commitMs: number;
}

const ACK_EVERY = 64;
const ACK_DELAY_MS = 20;

/**
 * Applies one replication pass from a session to a TreeWriter. Acknowledges entries in
 * order (batched), REJECTs an entry whose hash does not match (the source resends it
 * next pass), and on anything unsafe or malformed tells the source why and closes.
 */
const rejectWhy = (err: FerryError) =>
  err.code === 'FERRY_STALE_ENTRY'
    ? "rejected a file's appended bytes: the target's copy is not the one appended to"
    : 'rejected a file whose hash did not match';

export async function receivePass(
  session: Session,
  writer: TreeWriter,
  log: WriterLog & { error(obj: object, msg: string): void },
  onBytes: (n: number) => void = () => {},
): Promise<ReceiveResult> {
  let lastDone = 0;
  let lastAcked = 0;
  let entries = 0;
  let bytes = 0;
  let timer: NodeJS.Timeout | null = null;
  const flush = async () => {
    if (timer) clearTimeout(timer);
    timer = null;
    if (lastDone > lastAcked) {
      lastAcked = lastDone;
      await session.send({ type: 'ack', body: { seq: lastDone } });
    }
  };
  /** Entries up to `seq` are done, `n` of them since the last call. */
  const done = async (seq: number, n = 1) => {
    lastDone = seq;
    entries += n;
    if (seq - lastAcked >= ACK_EVERY) await flush();
    else if (!timer) timer = setTimeout(() => void flush().catch(() => {}), ACK_DELAY_MS);
  };
  // Acknowledgements and rejections leave in entry order, after the entry is done: whole
  // small files are written in batches behind the frames (TreeWriter.queueFiles), so every
  // outcome is chained after the ones before it. The first failure stops the pass.
  let chain: Promise<void> = Promise.resolve();
  let failure: unknown = null;
  const inOrder = (step: () => Promise<void>) => {
    chain = chain.then(step);
    chain.catch((e) => {
      failure ??= e;
    });
  };
  const rejectInOrder = (seq: number, err: FerryError, why: string) =>
    inOrder(async () => {
      log.warn({ seq, err: err.message }, why);
      await flush();
      await session.send({ type: 'reject', body: { seq, code: err.code, message: err.message } });
    });
  let current = 0;
  /**
   * A file whose hash did not match, or whose appended bytes came for a copy the target does
   * not hold, is REJECTed (sent again, whole, next pass); any other error stops the pass.
   */
  const rejectMismatch = (seq: number, e: unknown) => {
    const err = toFerryError(e, 'FERRY_TARGET_WRITE');
    if (err.code !== 'FERRY_CHECKSUM_MISMATCH' && err.code !== 'FERRY_STALE_ENTRY') throw err;
    rejectInOrder(seq, err, rejectWhy(err));
  };
  /**
   * Whole small files (FILE or FILES): queued in the writer's batches; `release` once all are
   * written. Each run of files placed one after another is acknowledged once in place, in
   * order with the REJECT of any whose hash does not match.
   */
  const receiveWholeFiles = async (
    files: { body: WholeFileMessage; data: Buffer }[],
    release?: () => void,
  ) => {
    let size = 0;
    for (const f of files) size += f.data.length;
    current = files[files.length - 1]!.body.seq;
    bytes += size;
    onBytes(size);
    for (const q of await writer.queueFiles(files, release)) {
      if ('mismatch' in q) rejectInOrder(q.seq, q.mismatch, rejectWhy(q.mismatch));
      else
        inOrder(async () => {
          await q.placed;
          await done(q.lastSeq, q.count);
        });
    }
  };
  let committed = false;
  let commitStarted = 0;
  let commitMs = 0;
  try {
    for await (const msg of session.messages()) {
      if (failure) throw failure;
      if (committed) throw new FerryError('FERRY_PROTOCOL_VIOLATION', `${msg.type} frame after COMMIT`);
      switch (msg.type) {
        case 'entry': {
          current = msg.body.seq;
          const seq = current;
          let sums: Awaited<ReturnType<TreeWriter['entry']>>;
          try {
            sums = await writer.entry(msg.body);
          } catch (e) {
            if (!(isFerryError(e) && e.code === 'FERRY_STALE_ENTRY')) throw e;
            rejectInOrder(seq, e, 'rejected an entry that relied on a stale target copy');
            break;
          }
          if (msg.body.kind !== 'file') inOrder(() => done(seq));
          else if (sums) await session.send({ type: 'sums', body: sums });
          break;
        }
        case 'data':
          await writer.data(msg.offset, msg.data, msg.release);
          bytes += msg.data.length;
          onBytes(msg.data.length);
          break;
        case 'copy':
          await writer.copy(msg.body);
          break;
        case 'file':
          // a whole small file: the same steps as ENTRY, DATA and FILE_END
          await receiveWholeFiles([{ body: msg.body, data: msg.data }], msg.release);
          break;
        case 'files':
          await receiveWholeFiles(msg.files, msg.release);
          break;
        case 'file-end':
          if (msg.body.seq !== current)
            throw new FerryError('FERRY_PROTOCOL_VIOLATION', 'FILE_END for another entry');
          try {
            await writer.fileEnd(msg.body.hash);
            const seq = current;
            inOrder(() => done(seq));
          } catch (e) {
            rejectMismatch(current, e);
          }
          break;
        case 'file-abort': {
          if (msg.body.seq !== current)
            throw new FerryError('FERRY_PROTOCOL_VIOLATION', 'FILE_ABORT for another entry');
          await writer.abandonFile();
          const seq = current;
          inOrder(() => done(seq)); // the source records nothing for it: the ACK only keeps the order
          break;
        }
        case 'delete': {
          const seq = msg.body.seq;
          await writer.delete(msg.body.path);
          inOrder(() => done(seq));
          break;
        }
        case 'commit':
          if (committed) throw new FerryError('FERRY_PROTOCOL_VIOLATION', 'a second COMMIT in one pass');
          commitStarted = performance.now();
          await writer.drain();
          await chain.catch(() => {});
          if (failure) throw failure;
          await writer.commit(msg.body.root);
          commitMs = performance.now() - commitStarted;
          await flush();
          await session.send({ type: 'committed', body: { seq: msg.body.seq } });
          committed = true; // the source closes next; anything else is a violation
          break;
        case 'error':
          throw new FerryError(
            'FERRY_CONNECTION_LOST',
            `source gave up: ${msg.body.code}: ${msg.body.message}`,
          );
        default:
          throw new FerryError('FERRY_PROTOCOL_VIOLATION', `unexpected ${msg.type} frame during a pass`);
      }
    }
    session.close();
    return { committed, entries, bytes, commitMs: Math.round(commitMs) };
  } catch (e) {
    const err = toFerryError(e, 'FERRY_TARGET_WRITE');
    if (timer) clearTimeout(timer);
    await writer.abort();
    if (err.code === 'FERRY_UNSAFE_PATH')
      log.error({ err: err.message }, 'refused an unsafe path from the source');
    if (err.code !== 'FERRY_CONNECTION_LOST') session.fail(err);
    else session.destroy();
    throw err;
  } finally {
    if (timer) clearTimeout(timer);
    writer.close();
  }
}
