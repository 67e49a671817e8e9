import os from 'node:os';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { parseHostPort } from '../transport/index.js';
import { buildApi } from './api.js';
import { openDataDir } from './data-dir.js';
import { Driver } from './driver.js';
import { ConsoleStore } from './store/store.js';

export interface ConsoleOptions {
  readonly listen: string;
  readonly dataDir: string;
  readonly logger: Logger;
  readonly version: string;
  readonly extraNames?: readonly string[];
  readonly syncIntervalSeconds: number;
  readonly heartbeatTimeoutMs?: number;
  /** How often an events stream looks at its server for progress (default 500 ms; changes of state go at once). */
  readonly eventsRefreshMs?: number;
}

export interface RunningConsole {
  readonly url: string;
  readonly app: FastifyInstance;
  readonly driver: Driver;
  close(): Promise<void>;
}

/** Starts `ferry console`: data dir, database, CA, HTTPS API. */
export async function startConsole(opts: ConsoleOptions): Promise<RunningConsole> {
  const { host, port } = parseHostPort(opts.listen, 7443);
  const names = ['localhost', '127.0.0.1', '::1', os.hostname(), ...(opts.extraNames ?? [])];
  if (host !== '0.0.0.0' && host !== '::') names.push(host);
  const secrets = await openDataDir(opts.dataDir, names);
  const store = await ConsoleStore.openSqlite(secrets.dbFile);
  const driver = new Driver(store, secrets.ca, secrets.registrationToken, {
    heartbeatTimeoutMs: opts.heartbeatTimeoutMs ?? 5000,
    syncIntervalSeconds: opts.syncIntervalSeconds,
  });
  const app = await buildApi({
    driver,
    adminToken: secrets.adminToken,
    logger: opts.logger,
    version: opts.version,
    ...(opts.eventsRefreshMs ? { eventsRefreshMs: opts.eventsRefreshMs } : {}),
    https: { key: secrets.server.keyPem, cert: secrets.server.certPem, ca: secrets.ca.certPem },
  });
  await app.listen({ host, port });
  const addr = app.server.address();
  const boundPort = typeof addr === 'object' && addr ? addr.port : port;
  const shownHost =
    host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  return {
    url: `https://${shownHost}:${boundPort}`,
    app,
    driver,
    async close() {
      await app.close();
      await store.close();
    },
  };
}
