import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentHeartbeatResponse, ServerView } from '../../src/control/index.js';
import { FerryError } from '../../src/errors/index.js';
import { createCa, generateKeyAndCsr, issueFromCsr } from '../../src/pki/index.js';
import { encodeFrame, FrameType, Session } from '../../src/protocol/index.js';
import { type RunningTarget, startTarget } from '../../src/target/index.js';
import { ConsoleClient, type Credential, connectData, enroll } from '../../src/transport/index.js';
import { quietLogger, startTestConsole, type TestConsole, tempDir } from './support.js';

let dir: string;
let tc: TestConsole;
let target: RunningTarget;
let agentA: Credential;
let agentB: Credential;
const targetLog = () => fs.readFileSync(path.join(dir, 'target.log'), 'utf8');

function raw(
  method: string,
  url: string,
  headers: Record<string, string> = {},
  body?: unknown,
  cert?: { key: string; cert: string },
) {
  return new Promise<{ status: number; body: Record<string, unknown> }>((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = https.request(
      url,
      {
        method,
        ca: tc.caPem,
        ...(cert ?? {}),
        headers: { ...headers, ...(payload ? { 'content-type': 'application/json' } : {}) },
      },
      (res) => {
        let text = '';
        res.on('data', (d) => {
          text += d;
        });
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body: /json/.test(String(res.headers['content-type'])) ? JSON.parse(text) : { text },
          }),
        );
      },
    );
    req.on('error', reject);
    if (payload) req.write(payload);
    req.end();
  });
}

async function beat(cred: Credential): Promise<AgentHeartbeatResponse> {
  const c = new ConsoleClient({
    url: tc.c.url,
    caPem: tc.caPem,
    cert: { keyPem: cred.keyPem, certPem: cred.certPem },
  });
  try {
    return await c.request<AgentHeartbeatResponse>('POST', '/api/v1/agent/heartbeat', { events: [] });
  } finally {
    c.close();
  }
}

beforeAll(async () => {
  dir = tempDir('security');
  tc = await startTestConsole(dir);
  const base = { consoleUrl: tc.c.url, caPem: tc.caPem, registrationTokenFile: tc.registrationTokenFile };
  agentA = await enroll({ ...base, role: 'agent', name: 'source-a', stateDir: path.join(dir, 'a') });
  agentB = await enroll({ ...base, role: 'agent', name: 'source-b', stateDir: path.join(dir, 'b') });
  target = await startTarget({
    consoleUrl: tc.c.url,
    caFile: tc.caFile,
    registrationTokenFile: tc.registrationTokenFile,
    name: 'target-1',
    listen: '127.0.0.1:0',
    root: path.join(dir, 'target-root'),
    stateDir: path.join(dir, 'target-state'),
    logger: quietLogger(path.join(dir, 'target.log')),
    heartbeatMs: 200,
  });
  fs.mkdirSync(path.join(dir, 'outside'));
  fs.writeFileSync(path.join(dir, 'outside/secret'), 'untouched');
});

afterAll(async () => {
  await target?.stop();
  tc?.admin.close();
  await tc?.c.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('console authentication', () => {
  it('answers /healthz without credentials and everything else only with them', async () => {
    expect((await raw('GET', `${tc.c.url}/healthz`)).status).toBe(200);
    for (const p of ['/api/v1/servers', '/openapi.json', '/metrics', '/api/v1/targets']) {
      const r = await raw('GET', `${tc.c.url}${p}`);
      expect(r.status, p).toBe(401);
      expect(r.body.code).toBe('FERRY_UNAUTHENTICATED');
    }
  });

  it('refuses a wrong admin token with a problem body', async () => {
    const r = await raw('GET', `${tc.c.url}/api/v1/servers`, { authorization: 'Bearer not-the-token' });
    expect(r.status).toBe(401);
    expect(r.body).toMatchObject({
      status: 401,
      code: 'FERRY_UNAUTHENTICATED',
      type: 'urn:ferry:error:FERRY_UNAUTHENTICATED',
    });
    expect(typeof r.body.advice).toBe('string');
  });

  it('refuses a registration with a wrong token', async () => {
    const { csrPem } = await generateKeyAndCsr('x');
    const r = await raw(
      'POST',
      `${tc.c.url}/api/v1/register`,
      { authorization: 'Bearer wrong' },
      { role: 'agent', name: 'evil', csr: csrPem },
    );
    expect(r.status).toBe(401);
    expect(r.body.code).toBe('FERRY_REGISTRATION_DENIED');
  });

  it('refuses an agent call with a certificate from a foreign CA', async () => {
    const foreign = await createCa('someone else');
    const { keyPem, csrPem } = await generateKeyAndCsr('x');
    const certPem = await issueFromCsr(foreign, csrPem, `ferry-agent:${agentA.id}`);
    const r = await raw(
      'POST',
      `${tc.c.url}/api/v1/agent/heartbeat`,
      {},
      { events: [] },
      { key: keyPem, cert: certPem },
    );
    expect(r.status).toBe(401);
    expect(r.body.code).toBe('FERRY_UNAUTHENTICATED');
  });

  it('refuses an agent call with a target certificate and with no certificate', async () => {
    expect((await raw('POST', `${tc.c.url}/api/v1/agent/heartbeat`, {}, { events: [] })).status).toBe(401);
  });

  it('serves OpenAPI 3.1 and Prometheus metrics to the admin', async () => {
    const doc = await tc.admin.request<{ openapi: string; paths: Record<string, unknown> }>(
      'GET',
      '/openapi.json',
    );
    expect(doc.openapi).toBe('3.1.0');
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining(['/api/v1/servers', '/api/v1/servers/{name}/configure']),
    );
    const r = await raw('GET', `${tc.c.url}/metrics`, {
      authorization: `Bearer ${fs.readFileSync(tc.adminTokenFile, 'utf8').trim()}`,
    });
    expect(r.status).toBe(200);
    expect(String(r.body.text)).toContain('ferry_servers');
  });
});

describe('API input validation', () => {
  it('names the field of bad input in a 400 problem body, never a 500', async () => {
    const token = fs.readFileSync(tc.adminTokenFile, 'utf8').trim();
    const auth = { authorization: `Bearer ${token}` };
    const missing = await raw('POST', `${tc.c.url}/api/v1/servers/source-a/configure`, auth, {
      method: 'file',
    });
    expect(missing.status).toBe(400);
    expect(missing.body.code).toBe('FERRY_BAD_REQUEST');
    expect((missing.body.errors as { field: string }[])[0]!.field).toBe('body.target');
    const wrongType = await raw('POST', `${tc.c.url}/api/v1/servers/source-a/configure`, auth, {
      target: 'x',
      method: 'file',
      continuousSync: 'sometimes',
    });
    expect(wrongType.status).toBe(400);
    expect(String(wrongType.body.detail)).toContain('continuousSync');
    const badName = await raw('GET', `${tc.c.url}/api/v1/servers/${encodeURIComponent('../etc')}`, auth);
    expect(badName.status).toBe(400);
    const notJson = await new Promise<number>((resolve) => {
      const req = https.request(
        `${tc.c.url}/api/v1/servers/source-a/configure`,
        { method: 'POST', ca: tc.caPem, headers: { ...auth, 'content-type': 'application/json' } },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.end('{oops');
    });
    expect(notJson).toBe(400);
    const unknown = await raw('GET', `${tc.c.url}/api/v1/nothing`, auth);
    expect(unknown.status).toBe(404);
  });
});

describe('lifecycle through the API', () => {
  it('refuses illegal transitions with their codes', async () => {
    await expect(tc.admin.request('POST', '/api/v1/servers/source-a/start')).rejects.toMatchObject({
      code: 'FERRY_TARGET_NOT_CONFIGURED',
    });
    await expect(tc.admin.request('POST', '/api/v1/servers/source-a/launch')).rejects.toMatchObject({
      code: 'FERRY_ILLEGAL_TRANSITION',
    });
    await expect(tc.admin.request('POST', '/api/v1/servers/source-a/pause')).rejects.toMatchObject({
      code: 'FERRY_ILLEGAL_TRANSITION',
    });
    await expect(
      tc.admin.request('POST', '/api/v1/servers/source-a/configure', { target: 'target-1', method: 'block' }),
    ).rejects.toMatchObject({ code: 'FERRY_UNSUPPORTED_METHOD' });
    await expect(
      tc.admin.request('POST', '/api/v1/servers/source-a/configure', {
        target: 'no-such-target',
        method: 'file',
      }),
    ).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND' });
  });

  it('locks the target from start: no reconfigure, no other source, no delete', async () => {
    await beat(agentA);
    await beat(agentB);
    const configured = await tc.admin.request<ServerView>('POST', '/api/v1/servers/source-a/configure', {
      target: 'target-1',
      method: 'file',
    });
    expect(`${configured.stage}/${configured.status}`).toBe('full-replication/ready');
    const started = await tc.admin.request<ServerView>('POST', '/api/v1/servers/source-a/start');
    expect(started.status).toBe('running');
    await expect(
      tc.admin.request('POST', '/api/v1/servers/source-a/configure', { target: 'target-1', method: 'file' }),
    ).rejects.toMatchObject({ code: 'FERRY_TARGET_LOCKED' });
    await expect(
      tc.admin.request('POST', '/api/v1/servers/source-b/configure', { target: 'target-1', method: 'file' }),
    ).rejects.toMatchObject({ code: 'FERRY_TARGET_LOCKED' });
    await expect(tc.admin.request('DELETE', '/api/v1/targets/target-1')).rejects.toMatchObject({
      code: 'FERRY_TARGET_LOCKED',
    });
    const targets = await tc.admin.request<{ name: string; locked: boolean; lockedBy: string }[]>(
      'GET',
      '/api/v1/targets',
    );
    expect(targets[0]).toMatchObject({ name: 'target-1', locked: true, lockedBy: 'source-a' });
    const job = await beat(agentA);
    expect(job.job.kind).toBe('replicate');
  });
});

describe('target data connections', () => {
  const waitAssigned = async () => {
    for (let i = 0; i < 50 && !targetLog().includes('locked by a migration'); i++)
      await new Promise((r) => setTimeout(r, 100));
  };

  it('refuses a TLS client whose certificate is not from the console CA', async () => {
    const foreign = await createCa('intruder');
    const { keyPem, csrPem } = await generateKeyAndCsr('x');
    const certPem = await issueFromCsr(foreign, csrPem, `ferry-agent:${agentA.id}`);
    const [host, port] = target.address.split(':');
    const outcome = await new Promise<string>((resolve) => {
      const s = tls.connect({
        host,
        port: Number(port),
        key: keyPem,
        cert: certPem,
        ca: tc.caPem,
        checkServerIdentity: () => undefined,
      });
      s.on('secureConnect', () =>
        s
          .once('data', () => resolve('data'))
          .once('close', () => resolve('closed'))
          .once('error', () => resolve('error')),
      );
      s.on('error', () => resolve('error'));
    });
    expect(outcome).not.toBe('data');
  });

  it('refuses a TLS 1.2 handshake, even from a client the console CA vouches for', async () => {
    const [host, port] = target.address.split(':');
    const outcome = await new Promise<string>((resolve) => {
      const s = tls.connect({
        host,
        port: Number(port),
        key: agentA.keyPem,
        cert: agentA.certPem,
        ca: tc.caPem,
        maxVersion: 'TLSv1.2',
        checkServerIdentity: () => undefined,
      });
      s.on('secureConnect', () => {
        resolve(`connected with ${s.getProtocol()}`);
        s.destroy();
      });
      s.on('error', (e) => resolve(/protocol version/.test(e.message) ? 'refused' : e.message));
    });
    expect(outcome).toBe('refused');
  });

  it('refuses a registered agent that is not the assigned source', async () => {
    await waitAssigned();
    const socket = await connectData({ address: target.address, cred: agentB, expectTargetId: target.id });
    // TLS 1.3 with the suite ferry prefers (the cheapest per byte with AES-NI)
    expect(socket.getProtocol()).toBe('TLSv1.3');
    expect(socket.getCipher().name).toBe('TLS_AES_128_GCM_SHA256');
    const s = new Session(socket);
    await s.send({ type: 'hello', body: { taskId: 'x', runId: 1, pass: 'full' } });
    const m = await s.next();
    expect(m).toMatchObject({ type: 'error', body: { code: 'FERRY_PEER_REFUSED' } });
    s.destroy();
  });

  it('refuses a traversal path from the assigned source and writes nothing outside the root', async () => {
    await waitAssigned();
    const task = (await beat(agentA)).job;
    expect(task.kind).toBe('replicate');
    if (task.kind !== 'replicate') return;
    const socket = await connectData({ address: target.address, cred: agentA, expectTargetId: target.id });
    const s = new Session(socket);
    await s.send({ type: 'hello', body: { taskId: task.taskId, runId: task.runId, pass: 'full' } });
    expect((await s.next())?.type).toBe('welcome');
    const evil = {
      seq: 1,
      path: '../outside/secret',
      kind: 'file',
      size: 4,
      mode: 0o644,
      uid: 0,
      gid: 0,
      mtimeNs: '1',
    };
    socket.write(encodeFrame(FrameType.ENTRY, Buffer.from(JSON.stringify(evil))));
    const m = await s.next();
    expect(m).toMatchObject({ type: 'error', body: { code: 'FERRY_UNSAFE_PATH' } });
    expect(fs.readFileSync(path.join(dir, 'outside/secret'), 'utf8')).toBe('untouched');
    expect(fs.readdirSync(path.join(dir, 'outside'))).toEqual(['secret']);
    await new Promise((r) => setTimeout(r, 100));
    expect(targetLog()).toContain('refused an unsafe path from the source');
    s.destroy();
  });

  it('does not let the agent talk to a server that is not its target', async () => {
    await expect(
      connectData({
        address: target.address,
        cred: agentA,
        expectTargetId: '00000000-0000-0000-0000-000000000000',
      }),
    ).rejects.toBeInstanceOf(FerryError);
  });
});

describe('rate limit', () => {
  it('changes while the task runs and reaches the agent in its job', async () => {
    const windows = [{ start: '22:00', end: '06:00', mbps: 0 }];
    const s = await tc.admin.request<ServerView>('POST', '/api/v1/servers/source-a/rate-limit', {
      mbps: 250,
      windows,
    });
    expect(s.status).toBe('running');
    expect(s.rateLimit).toEqual({ mbps: 250, windows });
    const job = (await beat(agentA)).job;
    expect(job.kind === 'replicate' && job.rateLimit).toEqual({ mbps: 250, windows });
  });

  it('refuses bad limits with the field named', async () => {
    const six = Array.from({ length: 6 }, () => ({ start: '01:00', end: '02:00', mbps: 1 }));
    await expect(
      tc.admin.request('POST', '/api/v1/servers/source-a/rate-limit', { mbps: 1, windows: six }),
    ).rejects.toMatchObject({
      code: 'FERRY_BAD_REQUEST',
    });
    await expect(
      tc.admin.request('POST', '/api/v1/servers/source-a/rate-limit', {
        mbps: 1,
        windows: [{ start: '25:00', end: '02:00', mbps: 1 }],
      }),
    ).rejects.toMatchObject({ code: 'FERRY_BAD_REQUEST', message: expect.stringContaining('windows') });
    await expect(
      tc.admin.request('POST', '/api/v1/servers/source-a/rate-limit', { mbps: -1, windows: [] }),
    ).rejects.toMatchObject({
      code: 'FERRY_BAD_REQUEST',
    });
  });
});

describe('delete', () => {
  it('removes the task, releases the target and forgets the agent credential', async () => {
    await tc.admin.request('DELETE', '/api/v1/servers/source-a');
    const targets = await tc.admin.request<{ locked: boolean }[]>('GET', '/api/v1/targets');
    expect(targets[0]!.locked).toBe(false);
    await expect(tc.admin.request('GET', '/api/v1/servers/source-a')).rejects.toMatchObject({
      code: 'FERRY_NOT_FOUND',
    });
    await expect(beat(agentA)).rejects.toMatchObject({ code: 'FERRY_REGISTRATION_REVOKED' });
  });
});
