import { timingSafeEqual, X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import swagger from '@fastify/swagger';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyInstance, type FastifyRequest, LogController } from 'fastify';
import type { Logger } from 'pino';
import { Counter, Gauge, Registry } from 'prom-client';
import Type from 'typebox';
import {
  AgentHeartbeat,
  AgentHeartbeatResponse,
  AgentJobResponse,
  ConfigureRequest,
  jobKey,
  Name,
  ordersKey,
  RateSettings,
  RegisterRequest,
  RegisterResponse,
  ServerView,
  TargetHeartbeat,
  TargetHeartbeatResponse,
  TargetOrders,
  TargetView,
  VerifyMode,
  WaitRequest,
} from '../control/index.js';
import { FerryError } from '../errors/index.js';
import { fingerprint, peerIdentity } from '../pki/index.js';
import { Heartbeat } from '../transport/index.js';
import type { Driver } from './driver.js';
import { problemHandler } from './problem.js';

type Auth = 'none' | 'admin' | 'registration' | 'agent' | 'target';

declare module 'fastify' {
  interface FastifyContextConfig {
    auth?: Auth;
  }
  interface FastifyRequest {
    peerId?: string;
  }
}

export interface ApiOptions {
  readonly driver: Driver;
  readonly adminToken: string;
  readonly logger: Logger;
  readonly https?: { key: string; cert: string; ca: string };
  readonly version: string;
  /** How often an events stream looks at its server for progress (default 500 ms; changes of state go at once). */
  readonly eventsRefreshMs?: number;
}

function bearer(req: FastifyRequest): string | null {
  const h = req.headers.authorization;
  if (typeof h !== 'string' || !h.startsWith('Bearer ')) return null;
  return h.slice(7).trim();
}

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

const NameParams = Type.Object({ name: Name }, { additionalProperties: false });
const Problem = Type.Object({
  type: Type.String(),
  title: Type.String(),
  status: Type.Integer(),
  detail: Type.String(),
  code: Type.String(),
  advice: Type.String(),
  errors: Type.Optional(Type.Array(Type.Object({ field: Type.String(), message: Type.String() }))),
});
const errors = { 400: Problem, 401: Problem, 404: Problem, 409: Problem };

/** Builds the console's HTTP API. With `https`, clients may present certificates (mTLS). */
export async function buildApi(opts: ApiOptions): Promise<FastifyInstance> {
  const { driver } = opts;
  const app = Fastify({
    loggerInstance: opts.logger,
    // no line per request (the option itself is deprecated at the top level in fastify 5.12)
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 4 * 1024 * 1024,
    ...(opts.https
      ? {
          https: {
            key: opts.https.key,
            cert: opts.https.cert,
            ca: opts.https.ca,
            requestCert: true,
            rejectUnauthorized: false,
          },
        }
      : {}),
    ajv: {
      customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: false },
    },
  }).withTypeProvider<TypeBoxTypeProvider>();

  app.setErrorHandler(problemHandler);
  app.setNotFoundHandler((req, reply) => {
    void reply
      .status(404)
      .type('application/problem+json')
      .send({
        type: 'urn:ferry:error:FERRY_NOT_FOUND',
        title: 'Not found',
        status: 404,
        detail: `no route ${req.method} ${req.url.split('?')[0]}`,
        code: 'FERRY_NOT_FOUND',
        advice: 'See /openapi.json for the routes.',
      });
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'ferry console API', version: opts.version },
      components: {
        securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      },
      security: [{ bearer: [] }],
    },
  });

  const registry = new Registry();
  const requests = new Counter({
    name: 'ferry_http_requests_total',
    help: 'HTTP requests answered by the console',
    labelNames: ['method', 'status'],
    registers: [registry],
  });
  new Gauge({
    name: 'ferry_servers',
    help: 'Source servers by stage and status',
    labelNames: ['stage', 'status'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const s of await driver.listServers()) this.inc({ stage: s.stage, status: s.status });
    },
  });
  new Gauge({
    name: 'ferry_replication_bytes_per_second',
    help: 'Current replication rate over all running tasks',
    registers: [registry],
    async collect() {
      const servers = await driver.listServers();
      this.set(
        servers.filter((s) => s.status === 'running').reduce((n, s) => n + s.progress.rateBytesPerSecond, 0),
      );
    },
  });
  app.addHook('onResponse', async (req, reply) => {
    requests.inc({ method: req.method, status: String(reply.statusCode) });
  });

  app.addHook('onRequest', async (req) => {
    const auth: Auth = req.routeOptions.config.auth ?? 'admin';
    if (auth === 'none' || auth === 'registration') return;
    if (auth === 'admin') {
      const token = bearer(req);
      if (!token || !same(token, opts.adminToken)) {
        throw new FerryError('FERRY_UNAUTHENTICATED', 'a valid admin bearer token is required');
      }
      return;
    }
    const socket = req.raw.socket as TLSSocket;
    if (typeof socket.getPeerCertificate !== 'function' || !socket.authorized) {
      throw new FerryError(
        'FERRY_UNAUTHENTICATED',
        'a client certificate issued by this console is required',
      );
    }
    const cert = socket.getPeerCertificate();
    const identity = peerIdentity(String(cert.subject?.CN ?? ''));
    if (!identity || identity.role !== auth) {
      throw new FerryError('FERRY_UNAUTHENTICATED', `this route needs a ${auth} certificate`);
    }
    await driver.authenticatePeer(identity.role, identity.id, fingerprint(new X509Certificate(cert.raw).raw));
    req.peerId = identity.id;
  });

  app.get('/healthz', { config: { auth: 'none' }, schema: { hide: true } }, async () => ({ ok: true }));
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    void reply.type(registry.contentType);
    return registry.metrics();
  });

  app.post(
    '/api/v1/register',
    {
      config: { auth: 'registration' },
      schema: {
        summary: 'Register an agent or target (registration token)',
        body: RegisterRequest,
        response: { 200: RegisterResponse, ...errors },
      },
    },
    async (req) => driver.register(bearer(req) ?? '', req.body),
  );
  app.post(
    '/api/v1/agent/heartbeat',
    {
      config: { auth: 'agent' },
      schema: {
        summary: 'Agent report and job poll (mTLS)',
        body: AgentHeartbeat,
        response: { 200: AgentHeartbeatResponse, ...errors },
      },
    },
    async (req) => driver.agentHeartbeat(req.peerId!, req.body),
  );
  app.post(
    '/api/v1/target/heartbeat',
    {
      config: { auth: 'target' },
      schema: {
        summary: 'Target report and assignment poll (mTLS)',
        body: TargetHeartbeat,
        response: { 200: TargetHeartbeatResponse, ...errors },
      },
    },
    async (req) => driver.targetHeartbeat(req.peerId!, req.body),
  );

  app.post(
    '/api/v1/agent/job',
    {
      config: { auth: 'agent' },
      schema: {
        summary: 'Long poll: the agent job, as soon as it differs from `current` (mTLS)',
        body: WaitRequest,
        response: { 200: AgentJobResponse, ...errors },
      },
    },
    async (req) => ({
      job: await driver.waitUntilChanged(
        () => driver.agentJob(req.peerId!),
        jobKey,
        req.body.current,
        req.body.timeoutMs,
      ),
    }),
  );
  app.post(
    '/api/v1/target/wait',
    {
      config: { auth: 'target' },
      schema: {
        summary: 'Long poll: the target orders, as soon as they differ from `current` (mTLS)',
        body: WaitRequest,
        response: { 200: TargetOrders, ...errors },
      },
    },
    async (req) =>
      driver.waitUntilChanged(
        () => driver.targetOrders(req.peerId!),
        ordersKey,
        req.body.current,
        req.body.timeoutMs,
      ),
  );
  app.get(
    '/api/v1/servers',
    { schema: { summary: 'List source servers', response: { 200: Type.Array(ServerView), ...errors } } },
    async () => driver.listServers(),
  );
  app.get(
    '/api/v1/servers/:name',
    {
      schema: {
        summary: 'Show one source server',
        params: NameParams,
        response: { 200: ServerView, ...errors },
      },
    },
    async (req) => driver.showServer(req.params.name),
  );
  app.post(
    '/api/v1/servers/:name/configure',
    {
      schema: {
        summary: 'Configure the target and migration settings',
        params: NameParams,
        body: ConfigureRequest,
        response: { 200: ServerView, ...errors },
      },
    },
    async (req) => driver.configure(req.params.name, req.body),
  );
  for (const action of ['start', 'pause', 'sync', 'launch'] as const) {
    app.post(
      `/api/v1/servers/:name/${action}`,
      {
        schema: {
          summary: `${action} the migration`,
          params: NameParams,
          response: { 200: ServerView, ...errors },
        },
      },
      async (req) => driver[action](req.params.name),
    );
  }
  app.post(
    '/api/v1/servers/:name/verify',
    {
      schema: {
        summary:
          'Sync, then check the target against the source per directory (quick: metadata; full: contents and extended attributes too); the report appears in the server view as `verification`',
        params: NameParams,
        body: Type.Object({ mode: Type.Optional(VerifyMode) }, { additionalProperties: false }),
        response: { 200: ServerView, ...errors },
      },
    },
    async (req) => driver.verify(req.params.name, req.body?.mode ?? 'quick'),
  );
  app.post(
    '/api/v1/servers/:name/rate-limit',
    {
      schema: {
        summary:
          'Change the rate limit (Mbit/s, 0 = none, up to five time-of-day windows), also while running',
        params: NameParams,
        body: RateSettings,
        response: { 200: ServerView, ...errors },
      },
    },
    async (req) => driver.setRateLimit(req.params.name, req.body),
  );
  app.delete(
    '/api/v1/servers/:name',
    {
      schema: {
        summary: 'Delete the migration task and release its target',
        params: NameParams,
        response: { 204: Type.Null(), ...errors },
      },
    },
    async (req, reply) => {
      await driver.deleteServer(req.params.name);
      return reply.status(204).send(null);
    },
  );
  app.get(
    '/api/v1/servers/:name/events',
    { schema: { summary: 'Live server view as Server-Sent Events', params: NameParams } },
    async (req, reply) => {
      await driver.showServer(req.params.name); // 404 before the stream starts
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        'content-type': 'text/event-stream',
        'cache-control': 'no-store',
        connection: 'keep-alive',
      });
      let last = '';
      let sentAt = 0;
      let closed = false;
      const look = async () => {
        try {
          const view = JSON.stringify(await driver.showServer(req.params.name));
          if (closed) return;
          if (view !== last || Date.now() - sentAt > 15_000) {
            res.write(`event: server\ndata: ${view}\n\n`);
            last = view;
            sentAt = Date.now();
          }
        } catch {
          if (!closed) res.write('event: deleted\ndata: {}\n\n');
          stop();
        }
      };
      // One look at a time, in order (a view never overtakes a newer one), as the daemons'
      // heartbeat loop runs: progress every refresh, and a change of state (a stage or
      // status, a sync done, a failure) at once, so that `ferry wait` and `status --watch`
      // see it when it happens.
      const looks = new Heartbeat(look, opts.eventsRefreshMs ?? 500);
      const unwatch = driver.onChange(() => looks.kick());
      const end = () => {
        closed = true;
        looks.stop();
        unwatch();
      };
      const stop = () => {
        end();
        res.end();
      };
      req.raw.on('close', end);
      looks.kick();
    },
  );

  app.get(
    '/api/v1/targets',
    { schema: { summary: 'List target servers', response: { 200: Type.Array(TargetView), ...errors } } },
    async () => driver.listTargets(),
  );
  app.get(
    '/api/v1/targets/:name',
    {
      schema: {
        summary: 'Show one target server',
        params: NameParams,
        response: { 200: TargetView, ...errors },
      },
    },
    async (req) => driver.showTarget(req.params.name),
  );
  app.delete(
    '/api/v1/targets/:name',
    {
      schema: {
        summary: 'Delete a target (refused while locked)',
        params: NameParams,
        response: { 204: Type.Null(), ...errors },
      },
    },
    async (req, reply) => {
      await driver.deleteTarget(req.params.name);
      return reply.status(204).send(null);
    },
  );

  return app as unknown as FastifyInstance;
}
