#!/usr/bin/env node
/**
 * The bench's userspace link impairment (this kernel has no netem): a TCP relay that adds a
 * one-way delay in each direction and emulates loss. TCP hides a lost segment behind a
 * retransmission; what the application sees is a stall, so with probability `loss` per
 * 1448-byte segment the relay holds that data (and everything after it, order kept) for
 * one retransmission timeout (200 ms plus the delay).
 *
 *   node bench/relay.mjs LISTEN_HOST LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT DELAY_MS LOSS
 *
 * Run inside the target's namespace (nsenter), in front of the real port.
 */
import net from 'node:net';

const [host, port, upHost, upPort, delayArg, lossArg] = process.argv.slice(2);
const delayMs = Number(delayArg ?? 0);
const loss = Number(lossArg ?? 0);
const SEGMENT = 1448;
const RTO_MS = 200;

/** Forwards `from` to `to` with the delay and stalls, keeping order; honours backpressure. */
function pipeImpaired(from, to) {
  const queue = [];
  let timer = null;
  let releaseAt = 0;
  const pump = () => {
    timer = null;
    const now = Date.now();
    while (queue.length && queue[0].at <= now) {
      const { data } = queue.shift();
      if (!to.write(data)) from.pause();
    }
    if (queue.length) timer = setTimeout(pump, Math.max(1, queue[0].at - now));
    else if (done) to.end(); // the sender finished: pass its end on once its data is out
  };
  let done = false;
  to.on('drain', () => from.resume());
  from.on('data', (data) => {
    let at = Date.now() + delayMs;
    const segments = Math.max(1, Math.ceil(data.length / SEGMENT));
    if (loss > 0 && 1 - (1 - loss) ** segments > Math.random()) at += RTO_MS;
    releaseAt = Math.max(releaseAt, at); // never overtake earlier data
    queue.push({ at: releaseAt, data });
    if (!timer) timer = setTimeout(pump, Math.max(1, releaseAt - Date.now()));
  });
  // 'end' (a half-close) or 'close' (also after a reset): the data already queued still goes
  const finish = () => {
    if (done) return;
    done = true;
    if (!queue.length && !timer) to.end();
  };
  from.on('end', finish);
  from.on('close', finish);
}

const server = net.createServer({ allowHalfOpen: true }, (client) => {
  const up = net.connect({ port: Number(upPort), host: upHost, allowHalfOpen: true });
  for (const s of [client, up]) s.on('error', () => {});
  // each direction ends on its own (half-close); the pair goes when both have
  pipeImpaired(client, up);
  pipeImpaired(up, client);
});
server.listen(Number(port), host, () =>
  process.stdout.write(`relay ${host}:${port} -> ${upHost}:${upPort}\n`),
);
process.on('SIGTERM', () => process.exit(0));
