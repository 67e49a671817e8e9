/**
 * protocol: ferry's data-connection wire format between agent (source) and target.
 * A connection opens with an 8-byte preface (magic + version) from each side, then
 * carries length-prefixed frames whose lengths are checked before anything is allocated.
 * Pure codec and message validation plus a session over any Duplex (a TLS socket in
 * production, an in-memory pair in tests). Must not open sockets or touch files.
 */
export {
  type DecodedItem,
  encodeFrame,
  encodePreface,
  FrameDecoder,
  MAGIC,
  MAX_DATA_BYTES,
  MAX_FRAME_BYTES,
  MIN_PROTOCOL_VERSION,
  PROTOCOL_VERSION,
} from './frame-codec.js';
export { FramePool } from './frame-pool.js';
export {
  type AckMessage,
  type CheckMessage,
  type CommitMessage,
  type CommittedMessage,
  type CopyMessage,
  type DeleteMessage,
  decodeMessage,
  ENTRY_KINDS,
  type EntryKind,
  type EntryMessage,
  type ErrorMessage,
  encodeMessage,
  type FileEndMessage,
  FrameType,
  type HelloMessage,
  type Message,
  type RawMessage,
  type RejectMessage,
  type ResumableFile,
  type SumsMessage,
  validatePath,
  type WelcomeMessage,
  type WholeFileMessage,
} from './messages.js';
export { type ReadInto, Session } from './session.js';
