import type { Duplex } from 'node:stream';
import { FerryError, toFerryError } from '../errors/index.js';
import { compressChunk } from './compression.js';
import { encodeFrame, encodePreface, FrameDecoder, MAX_DATA_BYTES, MAX_FRAME_BYTES } from './frame-codec.js';
import { type FrameAlignment, FramePool } from './frame-pool.js';
import {
  decodeMessage,
  encodeMessage,
  FrameType,
  MAX_FILE_JSON_BYTES,
  MAX_FILES_PER_FRAME,
  type Message,
  wholeFilesFrameHead,
} from './messages.js';

const QUEUE_BYTES = 4 * 1024 * 1024;

/** A stream write's callback: null once written, the error when the stream failed first. */
type WriteDone = (err?: Error | null) => void;

/**
 * Takes over a stream's reads, or declines (false, and touches nothing): each read then goes
 * to `onRead`, whose chunk may be reused once the call returns.
 */
export type ReadInto = (stream: Duplex, onRead: (chunk: Buffer) => void) => boolean;

/**
 * One ferry protocol connection over any Duplex. Sends the preface at once, then frames;
 * `messages()` yields validated messages and ends when the peer closes. A malformed
 * frame makes it send an ERROR frame, destroy the stream and throw the FerryError.
 */
export class Session {
  readonly #stream: Duplex;
  readonly #pace: ((bytes: number) => Promise<void>) | undefined;
  readonly #compress: boolean;
  /** DATA bytes handed to send() and the bytes their frames carried (smaller when compressed). */
  readonly dataStats = { raw: 0, sent: 0 };
  /**
   * Where received DATA and FILE frames of 256 KiB and more are assembled: 16 buffers of the
   * largest frame are kept for reuse (see FramePool; received messages carry `release`).
   */
  readonly framePool: FramePool;
  readonly #readInto: ReadInto | undefined;
  /** Whether `readInto` took over this session's reads (else they come as 'data' events). */
  readsIntoReusedBuffer = false;
  #closed = false;
  #batching = false;
  #source: AsyncGenerator<Message> | null = null;

  /**
   * `pace`, when given, is awaited before each frame is written (a rate limiter).
   * `compress`: send DATA as zstd (DATA_Z) chunk by chunk where that makes it smaller.
   * `alignPayloads` (the target passes the native alignment): received DATA payloads are
   * placed at addresses aligned for direct writes (see FramePool); the codec does no I/O.
   * `readInto`, when given, is offered the stream before the first read: if it takes over
   * the reads (returns true), each arrives through `onRead` as a view valid only during the
   * call (transport's `reusedBufferReads`: one reused buffer instead of a Buffer per read).
   */
  constructor(
    stream: Duplex,
    opts: {
      pace?: (bytes: number) => Promise<void>;
      compress?: boolean;
      alignPayloads?: Omit<FrameAlignment, 'after'>;
      readInto?: ReadInto;
    } = {},
  ) {
    this.#readInto = opts.readInto;
    this.framePool = new FramePool({
      size: MAX_FRAME_BYTES + 4,
      from: 256 * 1024,
      keep: 16,
      // a DATA payload follows the 4-byte length, the type and the 8-byte offset
      ...(opts.alignPayloads ? { align: { after: 13, ...opts.alignPayloads } } : {}),
    });
    this.#stream = stream;
    this.#pace = opts.pace;
    this.#compress = opts.compress ?? false;
    stream.on('error', () => {
      /* surfaced through messages() / send() */
    });
    stream.write(encodePreface());
  }

  /**
   * Queues a message. Resolves at once while less than QUEUE_BYTES wait in the stream,
   * otherwise when it has drained: deep enough to keep the link busy while the sender
   * reads the next chunk, bounded so memory stays small. DATA frames are written as a
   * 13-byte header and the caller's buffer, without copying it. A DATA, FILE or FILES
   * message's `release`, when given, is called once the stream has written every buffer
   * of the message (never when the stream fails first): the caller may then reuse them.
   */
  async send(msg: Message): Promise<void> {
    const release = 'release' in msg ? msg.release : undefined;
    await this.#send(msg, release ? (err) => err || release() : undefined);
  }

  /** send(), with `written` given to the last write of the message. */
  async #send(msg: Message, written: WriteDone | undefined): Promise<void> {
    if (this.#closed || this.#stream.destroyed) {
      throw new FerryError('FERRY_CONNECTION_LOST', 'the data connection is closed');
    }
    // Frames sent in the same turn of the event loop leave together: fewer, fuller TLS
    // records and write calls (three frames per small file otherwise cost three of each).
    if (!this.#batching) {
      this.#batching = true;
      this.#stream.cork();
      setImmediate(() => {
        this.#batching = false;
        this.#stream.uncork();
      });
    }
    if (msg.type === 'file' || msg.type === 'files') {
      await this.#sendWholeFiles(msg, written);
    } else {
      const packed = msg.type === 'data' && this.#compress ? compressChunk(msg.data) : null;
      if (this.#pace)
        await this.#pace(msg.type === 'data' ? (packed ? packed.length + 17 : msg.data.length + 13) : 64);
      if (msg.type === 'data') {
        if (msg.data.length > MAX_DATA_BYTES)
          throw new FerryError('FERRY_INTERNAL', 'DATA chunk larger than allowed');
        const body = packed ?? msg.data;
        const head = Buffer.allocUnsafe(packed ? 17 : 13);
        head.writeUInt32BE(head.length - 4 + body.length, 0);
        head.writeUInt8(packed ? FrameType.DATA_Z : FrameType.DATA, 4);
        head.writeBigUInt64BE(BigInt(msg.offset), 5);
        if (packed) head.writeUInt32BE(msg.data.length, 13);
        this.dataStats.raw += msg.data.length;
        this.dataStats.sent += body.length;
        this.#stream.cork();
        this.#stream.write(head);
        this.#stream.write(body, written);
        this.#stream.uncork();
      } else {
        const { type, payload } = encodeMessage(msg);
        this.#stream.write(encodeFrame(type, payload), written);
      }
    }
    if (this.#stream.writableLength > QUEUE_BYTES) {
      await new Promise<void>((resolve, reject) => {
        const onDrain = () => {
          cleanup();
          resolve();
        };
        const onClose = () => {
          cleanup();
          reject(new FerryError('FERRY_CONNECTION_LOST', 'the data connection closed while sending'));
        };
        const cleanup = () => {
          this.#stream.off('drain', onDrain);
          this.#stream.off('close', onClose);
        };
        this.#stream.on('drain', onDrain);
        this.#stream.on('close', onClose);
      });
    }
  }

  /**
   * Whole files: one FILE or FILES frame (the entries as JSON, then the contents without
   * copying them) when that frame holds them and DATA is not compressed; otherwise, decided
   * before anything is paced or written, a FILE as ENTRY, DATA (compressed where it pays),
   * FILE_END, and FILES as one FILE each.
   */
  async #sendWholeFiles(
    msg: Extract<Message, { type: 'file' | 'files' }>,
    written: WriteDone | undefined,
  ): Promise<void> {
    const files = msg.type === 'file' ? [msg] : msg.files;
    if (files.length === 0) {
      written?.(null);
      return;
    }
    const json = this.#compress
      ? null
      : Buffer.from(JSON.stringify(msg.type === 'file' ? msg.body : files.map((f) => f.body)));
    let content = 0;
    for (const f of files) content += f.data.length;
    const fits =
      json !== null &&
      5 + json.length + content <= MAX_FRAME_BYTES &&
      (msg.type === 'file' ? json.length <= MAX_FILE_JSON_BYTES : files.length <= MAX_FILES_PER_FRAME);
    if (!fits && msg.type === 'files') {
      for (let i = 0; i < files.length; i++) {
        const f = files[i]!;
        await this.#send(
          { type: 'file', body: f.body, data: f.data },
          i === files.length - 1 ? written : undefined,
        );
      }
      return;
    }
    if (!fits) {
      const { hash, ...entry } = files[0]!.body;
      await this.#send({ type: 'entry', body: entry }, undefined);
      // a grown file's appended bytes go where they belong (the target has what precedes them)
      if (content > 0)
        await this.#send({ type: 'data', offset: entry.appendFrom ?? 0, data: files[0]!.data }, undefined);
      await this.#send({ type: 'file-end', body: { seq: entry.seq, hash } }, written);
      return;
    }
    await this.#pace?.(content + 300 * files.length);
    this.dataStats.raw += content;
    this.dataStats.sent += content;
    const head = wholeFilesFrameHead(msg.type === 'file' ? FrameType.FILE : FrameType.FILES, json!, content);
    if (content === 0) {
      this.#stream.write(head, written);
      return;
    }
    this.#stream.write(head);
    let last = files.length - 1;
    while (files[last]!.data.length === 0) last--;
    for (let i = 0; i <= last; i++) {
      const data = files[i]!.data;
      if (data.length > 0) this.#stream.write(data, i === last ? written : undefined);
    }
  }

  /** The next validated message, or null when the peer has closed. One reader at a time. */
  async next(): Promise<Message | null> {
    this.#source ??= this.#read();
    const r = await this.#source.next();
    return r.done ? null : r.value;
  }

  /** Yields messages until the peer closes; breaking out leaves the rest for next(). */
  async *messages(): AsyncGenerator<Message> {
    for (;;) {
      const m = await this.next();
      if (!m) return;
      yield m;
    }
  }

  /**
   * Decodes the stream as it arrives ('data' events: each read as delivered, never the
   * concatenation of several that the stream's own iterator makes when the reader lags) into
   * a queue of messages, pausing the stream while more than QUEUE_BYTES of frames wait.
   */
  async *#read(): AsyncGenerator<Message> {
    const stream = this.#stream;
    const decoder = new FrameDecoder({ pool: this.framePool });
    // decoded messages not yet taken: queue[head..]; each counts at least 64 bytes, so a
    // flood of tiny frames is bounded in number too
    let queue: ({ msg: Message; bytes: number } | undefined)[] = [];
    let head = 0;
    let queued = 0;
    let prefaceSeen = false;
    let ended = false;
    let failure: unknown = null;
    let wake: (() => void) | null = null;
    const notify = () => {
      const w = wake;
      wake = null;
      w?.();
    };
    const stop = (e: unknown) => {
      failure ??= e;
      stream.off('data', onData);
      stream.pause();
      notify();
    };
    let detached = false; // the reader is done: later reads are dropped, as with 'data' off
    const onData = (chunk: Buffer, transient = false) => {
      if (failure !== null || detached) return;
      try {
        for (const item of decoder.push(chunk, transient)) {
          if (item.kind === 'preface') {
            prefaceSeen = true;
            continue;
          }
          let msg: Message;
          try {
            msg = decodeMessage(item.type, item.payload);
          } catch (e) {
            item.release();
            throw e;
          }
          // DATA and FILE hand out views of the frame: their consumer releases it. Everything
          // else (DATA_Z included: its data is the decompressed copy) is done with it now.
          if (
            (msg.type === 'data' && item.type === FrameType.DATA) ||
            msg.type === 'file' ||
            msg.type === 'files'
          )
            msg.release = item.release;
          else item.release();
          const bytes = Math.max(64, item.payload.length);
          queue.push({ msg, bytes });
          queued += bytes;
        }
      } catch (e) {
        stop(e);
        return;
      }
      if (queued > QUEUE_BYTES) stream.pause();
      notify();
    };
    const onEnd = () => {
      ended = true;
      notify();
    };
    const onClose = () => {
      if (!ended) stop(new FerryError('FERRY_CONNECTION_LOST', 'the data connection closed'));
    };
    const onError = (e: Error) => stop(e);
    this.readsIntoReusedBuffer = this.#readInto?.(stream, (chunk) => onData(chunk, true)) ?? false;
    if (!this.readsIntoReusedBuffer) stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('close', onClose);
    stream.once('error', onError);
    // a stream that closed before the first read emits nothing more
    if (stream.readableEnded) ended = true;
    else if (stream.destroyed || stream.errored)
      stop(stream.errored ?? new FerryError('FERRY_CONNECTION_LOST', 'the data connection closed'));
    try {
      for (;;) {
        const next = queue[head];
        if (next) {
          queue[head++] = undefined; // taken: not kept alive by the queue
          if (head === queue.length) {
            queue = [];
            head = 0;
          } else if (head >= 1024 && head * 2 >= queue.length) {
            queue = queue.slice(head);
            head = 0;
          }
          queued -= next.bytes;
          if (queued <= QUEUE_BYTES / 2 && stream.isPaused() && failure === null) stream.resume();
          yield next.msg;
          continue;
        }
        if (failure !== null) throw failure;
        if (ended) break;
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      }
    } catch (e) {
      const err = toFerryError(e, 'FERRY_CONNECTION_LOST');
      if (
        err.code === 'FERRY_PROTOCOL_VIOLATION' ||
        err.code === 'FERRY_PROTOCOL_VERSION' ||
        err.code === 'FERRY_UNSAFE_PATH'
      ) {
        this.fail(err);
      } else {
        this.close();
      }
      throw err;
    } finally {
      detached = true;
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('close', onClose);
      stream.off('error', onError);
    }
    if (!prefaceSeen)
      throw new FerryError('FERRY_CONNECTION_LOST', 'the peer closed before its protocol preface');
    if (decoder.pendingBytes > 0)
      throw new FerryError('FERRY_CONNECTION_LOST', 'the peer closed in the middle of a frame');
  }

  /** Tells the peer why, then closes. */
  fail(err: FerryError): void {
    if (this.#closed) return;
    try {
      const { type, payload } = encodeMessage({
        type: 'error',
        body: { code: err.code, message: err.message.slice(0, 4000) },
      });
      this.#stream.write(encodeFrame(type, payload));
    } catch {
      /* the stream may already be gone */
    }
    this.close();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#stream.end();
    setTimeout(() => this.#stream.destroy(), 2000).unref();
  }

  destroy(): void {
    this.#closed = true;
    this.#stream.destroy();
  }
}
