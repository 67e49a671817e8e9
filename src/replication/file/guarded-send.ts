import type { Session } from '../../protocol/index.js';

/**
 * The send function of a pass whose replies are read by `reader`: once the reader fails
 * (the target reported an error or went away), the connection is destroyed and every send
 * throws the reader's error rather than a bare "connection closed".
 */
export function guardedSend(
  session: Session,
  reader: Promise<void>,
): (m: Parameters<Session['send']>[0]) => Promise<void> {
  let readerError: unknown = null;
  reader.catch((e) => {
    readerError = e;
    session.destroy();
  });
  return async (m) => {
    try {
      await session.send(m);
    } catch (e) {
      throw readerError ?? e;
    }
  };
}
