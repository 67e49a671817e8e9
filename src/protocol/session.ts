import type { Duplex } from 'node:stream';
import { FerryError, toFerryError } from '../errors/index.js';
import { compressChunk } from './compression.js';
import { encodeFrame, encodePreface, FrameDecoder, MAX_DATA_BYTES, MAX_FRAME_BYTES } from './frame-codec.js';
import { type FrameAlignment, FramePool } from './frame-pool.js';
import { decodeMessage, encodeMessage, FrameType, MAX_FILES_PER_FRAME, type Message } from './messages.js';

const QUEUE_BYTES = 4 * 1024 * 1024;

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
  #closed = false;
  #batching = false;
  #source: AsyncGenerator<Message> | null = null;

  /**
   * `pace`, when given, is awaited before each frame is written (a rate limiter).
   * `compress`: send DATA as zstd (DATA_Z) chunk by chunk where that makes it smaller.
   * `alignPayloads` (the target passes the native alignment): received DATA payloads are
   * placed at addresses aligned for direct writes (see FramePool); the codec does no I/O.
   */
  constructor(
    stream: Duplex,
    opts: {
      pace?: (bytes: number) => Promise<void>;
      compress?: boolean;
      alignPayloads?: Omit<FrameAlignment, 'after'>;
    } = {},
  ) {
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

  /** Resolves when the frame is handed to the stream and the stream has room again. */
  /**
   * Queues a message. Resolves at once while less than QUEUE_BYTES wait in the stream,
   * otherwise when it has drained: deep enough to keep the link busy while the sender
   * reads the next chunk, bounded so memory stays small. DATA frames are written as a
   * 13-byte header and the caller's buffer, without copying it.
   */
  async send(msg: Message): Promise<void> {
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
    let filesJson: Buffer | null = null;
    let filesContent = 0;
    if (msg.type === 'files') {
      if (msg.files.length === 0) return;
      filesJson = this.#compress ? null : Buffer.from(JSON.stringify(msg.files.map((f) => f.body)));
      for (const f of msg.files) filesContent += f.data.length;
      if (
        !filesJson ||
        9 + filesJson.length + filesContent > MAX_FRAME_BYTES + 4 ||
        msg.files.length > MAX_FILES_PER_FRAME
      ) {
        // compressed DATA, or more than one frame holds: file by file
        for (const f of msg.files) await this.send({ type: 'file', body: f.body, data: f.data });
        return;
      }
    }
    const packed = msg.type === 'data' && this.#compress ? compressChunk(msg.data) : null;
    if (this.#pace)
      await this.#pace(
        msg.type === 'data'
          ? packed
            ? packed.length + 17
            : msg.data.length + 13
          : msg.type === 'file'
            ? msg.data.length + 300
            : msg.type === 'files'
              ? msg.files.reduce((n, f) => n + f.data.length + 300, 0)
              : 64,
      );
    if (msg.type === 'files' && filesJson) {
      // the entries in one JSON array, then the contents without copying them
      const json = filesJson;
      const content = filesContent;
      const head = Buffer.allocUnsafe(9 + json.length);
      head.writeUInt32BE(1 + 4 + json.length + content, 0);
      head.writeUInt8(FrameType.FILES, 4);
      head.writeUInt32BE(json.length, 5);
      json.copy(head, 9);
      this.dataStats.raw += content;
      this.dataStats.sent += content;
      this.#stream.write(head);
      for (const f of msg.files) if (f.data.length > 0) this.#stream.write(f.data);
    } else if (msg.type === 'file') {
      // header and entry in one buffer, the content without copying it
      const json = Buffer.from(JSON.stringify(msg.body));
      if (this.#compress || 9 + json.length + msg.data.length > MAX_FRAME_BYTES || json.length > 96 * 1024) {
        // compressed DATA, or too big for one frame (large xattrs): the same file as ENTRY,
        // DATA (compressed where it pays), FILE_END
        const { hash, ...entry } = msg.body;
        await this.send({ type: 'entry', body: entry });
        if (msg.data.length > 0) await this.send({ type: 'data', offset: 0, data: msg.data });
        await this.send({ type: 'file-end', body: { seq: entry.seq, hash } });
        return;
      }
      const head = Buffer.allocUnsafe(9 + json.length);
      head.writeUInt32BE(1 + 4 + json.length + msg.data.length, 0);
      head.writeUInt8(FrameType.FILE, 4);
      head.writeUInt32BE(json.length, 5);
      json.copy(head, 9);
      this.dataStats.raw += msg.data.length;
      this.dataStats.sent += msg.data.length;
      this.#stream.write(head);
      if (msg.data.length > 0) this.#stream.write(msg.data);
    } else if (msg.type === 'data') {
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
      this.#stream.write(body);
      this.#stream.uncork();
    } else {
      const { type, payload } = encodeMessage(msg);
      this.#stream.write(encodeFrame(type, payload));
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
    const onData = (chunk: Buffer) => {
      try {
        for (const item of decoder.push(chunk)) {
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
    stream.on('data', onData);
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
