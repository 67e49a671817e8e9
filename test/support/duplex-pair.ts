import { Duplex } from 'node:stream';

/**
 * Two connected in-memory Duplex ends, like a socket pair: what one writes the other
 * reads, end() on one ends the other's readable, destroy() on one ends both.
 * (Node 20 has no stream.duplexPair.) With `pieceBytes`, each write arrives cut into reads of
 * at most that many bytes, as a TLS socket delivers records.
 */
export function duplexPair(opts: { pieceBytes?: number } = {}): [Duplex, Duplex] {
  const piece = opts.pieceBytes ?? Number.POSITIVE_INFINITY;
  const ends: Duplex[] = [];
  const make = (peer: () => Duplex) =>
    new Duplex({
      read() {},
      write(chunk, _enc, cb) {
        const p = peer();
        if (!p.destroyed)
          // copied, as a socket does: the writer may reuse its buffer once cb() has run
          for (let at = 0; at < chunk.length; at += piece)
            p.push(Buffer.from(chunk.subarray(at, at + piece)));
        cb();
      },
      final(cb) {
        const p = peer();
        if (!p.destroyed) p.push(null);
        cb();
      },
      destroy(err, cb) {
        const p = peer();
        if (!p.destroyed) p.destroy();
        cb(err);
      },
    });
  ends.push(
    make(() => ends[1]!),
    make(() => ends[0]!),
  );
  return [ends[0]!, ends[1]!];
}
