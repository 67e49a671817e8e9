/**
 * protocol: ferry's data-connection wire format between agent (source) and target.
 * A connection opens with an 8-byte preface (magic + version) from each side, then
 * carries length-prefixed frames whose lengths are checked before anything is allocated.
 * Pure codec and message validation plus a session over any Duplex (a TLS socket in
 * production, an in-memory pair in tests). Must not open sockets or touch files.
 */
export {
  FrameDecoder,
  type DecodedItem,
  encodeFrame,
  encodePreface,
  MAGIC,
  MAX_FRAME_BYTES,
  MAX_DATA_BYTES,
  PROTOCOL_VERSION,
  MIN_PROTOCOL_VERSION,
} from './frame-codec.js';
export {
  FrameType,
  type EntryKind,
  ENTRY_KINDS,
  type EntryMessage,
  type HelloMessage,
  type WelcomeMessage,
  type FileEndMessage,
  type DeleteMessage,
  type CommitMessage,
  type AckMessage,
  type CommittedMessage,
  type RejectMessage,
  type ErrorMessage,
  type Message,
  decodeMessage,
  encodeMessage,
  validatePath,
} from './messages.js';
export { Session } from './session.js';
