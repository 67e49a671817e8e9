import https from 'node:https';
import { type ErrorCode, FerryError, isErrorCode } from '../errors/index.js';

export interface ConsoleClientOptions {
  readonly url: string;
  readonly caPem: string;
  readonly token?: string;
  readonly cert?: { keyPem: string; certPem: string };
  readonly timeoutMs?: number;
}

export function parseHostPort(s: string, defaultPort?: number): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+))(?::(\d{1,5}))?$/.exec(s);
  const port = m?.[3] ? Number(m[3]) : defaultPort;
  if (!m || port === undefined || port < 0 || port > 65535) {
    throw new FerryError('FERRY_CONFIG', `"${s}" is not HOST:PORT`);
  }
  return { host: m[1] ?? m[2]!, port };
}

/** A small JSON client of the console API; non-2xx answers become FerryErrors with the problem's code. */
export class ConsoleClient {
  readonly #base: URL;
  readonly #agent: https.Agent;
  readonly #token: string | undefined;
  readonly #timeout: number;

  constructor(opts: ConsoleClientOptions) {
    this.#base = new URL(opts.url);
    if (this.#base.protocol !== 'https:')
      throw new FerryError('FERRY_CONFIG', `console URL must be https:// (got ${opts.url})`);
    this.#agent = new https.Agent({
      ca: opts.caPem,
      keepAlive: true,
      maxSockets: 4,
      ...(opts.cert ? { key: opts.cert.keyPem, cert: opts.cert.certPem } : {}),
    });
    this.#token = opts.token;
    this.#timeout = opts.timeoutMs ?? 15_000;
  }

  request<T>(method: string, path: string, body?: unknown, token = this.#token): Promise<T> {
    const url = new URL(path, this.#base);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise<T>((resolve, reject) => {
      const req = https.request(
        url,
        {
          method,
          agent: this.#agent,
          timeout: this.#timeout,
          headers: {
            accept: 'application/json',
            ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
            ...(token ? { authorization: `Bearer ${token}` } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const status = res.statusCode ?? 0;
            let parsed: unknown = null;
            try {
              parsed = text ? JSON.parse(text) : null;
            } catch {
              parsed = null;
            }
            if (status >= 200 && status < 300) return resolve(parsed as T);
            const p = parsed as { code?: string; detail?: string } | null;
            const code: ErrorCode = p?.code && isErrorCode(p.code) ? p.code : 'FERRY_INTERNAL';
            reject(
              new FerryError(code, p?.detail ?? `console answered HTTP ${status}`, {
                context: { status, body: parsed },
              }),
            );
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () =>
        req.destroy(new FerryError('FERRY_TIMEOUT', `no answer from the console at ${url.host}`)),
      );
      req.on('error', (e) => {
        if (e instanceof FerryError) return reject(e);
        const tlsish = /certificate|self.signed|CERT_|altnames|TLS|SSL/i.test(
          `${(e as NodeJS.ErrnoException).code} ${e.message}`,
        );
        reject(
          new FerryError(
            tlsish ? 'FERRY_TLS' : 'FERRY_CONNECTION_LOST',
            `cannot reach the console at ${url.host}: ${e.message}`,
            {
              cause: e,
            },
          ),
        );
      });
      if (payload) req.write(payload);
      req.end();
    });
  }

  /** Opens a Server-Sent Events stream and calls `onEvent` for each event until closed. */
  events(
    path: string,
    onEvent: (event: string, data: string) => void,
  ): { close(): void; done: Promise<void> } {
    const url = new URL(path, this.#base);
    let req: ReturnType<typeof https.request>;
    const done = new Promise<void>((resolve, reject) => {
      req = https.request(
        url,
        {
          method: 'GET',
          agent: this.#agent,
          headers: { accept: 'text/event-stream', authorization: `Bearer ${this.#token}` },
        },
        (res) => {
          if (res.statusCode !== 200) {
            reject(new FerryError('FERRY_NOT_FOUND', `events stream answered HTTP ${res.statusCode}`));
            res.resume();
            return;
          }
          let buf = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => {
            buf += c;
            for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
              const block = buf.slice(0, i);
              buf = buf.slice(i + 2);
              let event = 'message';
              const data: string[] = [];
              for (const line of block.split('\n')) {
                if (line.startsWith('event: ')) event = line.slice(7);
                else if (line.startsWith('data: ')) data.push(line.slice(6));
              }
              onEvent(event, data.join('\n'));
            }
          });
          res.on('end', () => resolve());
          res.on('close', () => resolve());
          res.on('error', reject);
        },
      );
      req.on('error', (e) => (closed ? resolve() : reject(e)));
      req.on('close', () => resolve());
      req.end();
    });
    let closed = false;
    return {
      close: () => {
        closed = true;
        req.destroy();
      },
      done,
    };
  }

  close(): void {
    this.#agent.destroy();
  }
}
