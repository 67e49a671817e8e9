import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { RegisterResponse } from '../control/index.js';
import { FerryError } from '../errors/index.js';
import { generateKeyAndCsr } from '../pki/index.js';
import { ConsoleClient } from './console-client.js';

export interface Credential {
  readonly id: string;
  readonly name: string;
  readonly keyPem: string;
  readonly certPem: string;
  readonly caPem: string;
}

/** Reads a secret file, refusing one that group or others can read. */
export async function readSecretFile(file: string, what: string): Promise<string> {
  let st: Awaited<ReturnType<typeof stat>>;
  try {
    st = await stat(file);
  } catch (e) {
    throw new FerryError('FERRY_CONFIG', `${what} file ${file} cannot be read: ${(e as Error).message}`, {
      cause: e,
    });
  }
  if ((st.mode & 0o077) !== 0) {
    throw new FerryError('FERRY_CONFIG', `${what} file ${file} is readable by group or others; chmod 600 it`);
  }
  return (await readFile(file, 'utf8')).trim();
}

async function writeSecret(file: string, content: string): Promise<void> {
  await writeFile(file, content, { mode: 0o600 });
  await chmod(file, 0o600);
}

/**
 * Returns this program's credential from its state directory, registering with the
 * console first if there is none (the registration token is used once; afterwards the
 * client certificate is the credential). The private key never leaves the machine.
 */
export async function enroll(opts: {
  role: 'agent' | 'target';
  name: string;
  consoleUrl: string;
  caPem: string;
  registrationTokenFile: string;
  stateDir: string;
  address?: string;
}): Promise<Credential> {
  await mkdir(opts.stateDir, { recursive: true, mode: 0o700 });
  const idFile = path.join(opts.stateDir, `${opts.role}.json`);
  const keyFile = path.join(opts.stateDir, `${opts.role}.key`);
  const certFile = path.join(opts.stateDir, `${opts.role}.pem`);
  try {
    const saved = JSON.parse(await readFile(idFile, 'utf8')) as { id: string; name: string; console: string };
    if (saved.console === opts.consoleUrl) {
      return {
        id: saved.id,
        name: saved.name,
        keyPem: await readSecretFile(keyFile, 'key'),
        certPem: await readFile(certFile, 'utf8'),
        caPem: opts.caPem,
      };
    }
  } catch {
    /* not registered yet */
  }
  const token = await readSecretFile(opts.registrationTokenFile, 'registration token');
  const { keyPem, csrPem } = await generateKeyAndCsr(`ferry-${opts.role}`);
  const client = new ConsoleClient({ url: opts.consoleUrl, caPem: opts.caPem });
  try {
    const res = await client.request<RegisterResponse>(
      'POST',
      '/api/v1/register',
      { role: opts.role, name: opts.name, csr: csrPem, ...(opts.address ? { address: opts.address } : {}) },
      token,
    );
    await writeSecret(keyFile, keyPem);
    await writeFile(certFile, res.certificate, { mode: 0o644 });
    await writeFile(
      idFile,
      JSON.stringify({ id: res.id, name: res.name, console: opts.consoleUrl }, null, 2),
    );
    return { id: res.id, name: res.name, keyPem, certPem: res.certificate, caPem: opts.caPem };
  } finally {
    client.close();
  }
}

/** Forgets the stored credential (after the console deleted this registration). */
export async function forgetCredential(stateDir: string, role: 'agent' | 'target'): Promise<void> {
  const { rm } = await import('node:fs/promises');
  await rm(path.join(stateDir, `${role}.json`), { force: true });
}
