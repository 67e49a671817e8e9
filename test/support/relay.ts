/**
 * A TCP relay on loopback for tests: forwards connections to an upstream port, counts the
 * bytes each way, and can cut every connection and refuse new ones for a while (this
 * kernel has no netem). Used to measure what a transfer sent twice after interruptions.
 */
import net from 'node:net';

export class CountingRelay {
  bytesUp = 0;
  bytesDown = 0;
  #cut = false;
  readonly #sockets = new Set<net.Socket>();
  readonly #server: net.Server;

  constructor(readonly upstreamPort: number) {
    this.#server = net.createServer((client) => {
      if (this.#cut) return client.destroy();
      const up = net.connect(upstreamPort, '127.0.0.1');
      for (const s of [client, up]) {
        this.#sockets.add(s);
        s.on('close', () => this.#sockets.delete(s));
        s.on('error', () => {});
      }
      client.on('data', (d: Buffer) => {
        this.bytesUp += d.length;
        if (!up.write(d)) client.pause();
      });
      up.on('drain', () => client.resume());
      up.on('data', (d: Buffer) => {
        this.bytesDown += d.length;
        if (!client.write(d)) up.pause();
      });
      client.on('drain', () => up.resume());
      client.on('close', () => up.destroy());
      up.on('close', () => client.destroy());
    });
  }

  listen(): Promise<number> {
    return new Promise((resolve) =>
      this.#server.listen(0, '127.0.0.1', () => resolve((this.#server.address() as net.AddressInfo).port)),
    );
  }

  /** Drops every connection now and refuses new ones until restore(). */
  cut(): void {
    this.#cut = true;
    for (const s of this.#sockets) s.destroy();
  }

  restore(): void {
    this.#cut = false;
  }

  close(): Promise<void> {
    this.cut();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}
