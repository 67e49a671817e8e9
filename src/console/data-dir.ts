import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { FerryError } from '../errors/index.js';
import { type CaMaterial, createCa, issueServerCertificate } from '../pki/index.js';

export interface ConsoleSecrets {
  readonly ca: CaMaterial;
  readonly server: { certPem: string; keyPem: string };
  readonly adminToken: string;
  readonly registrationToken: string;
  readonly dbFile: string;
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

/** Writes a secret with mode 0600 from the first byte (never readable by others, even briefly). */
export async function writeSecret(file: string, content: string): Promise<void> {
  await writeFile(file, content, { mode: 0o600, flag: 'w' });
  await chmod(file, 0o600);
}

async function secretOnce(file: string, make: () => Promise<string> | string): Promise<string> {
  if (await exists(file)) {
    const st = await stat(file);
    if ((st.mode & 0o077) !== 0) {
      throw new FerryError(
        'FERRY_CONFIG',
        `${file} is readable by group or others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`,
      );
    }
    return (await readFile(file, 'utf8')).trim();
  }
  const value = await make();
  await writeSecret(file, `${value}\n`);
  return value;
}

const token = () => randomBytes(32).toString('base64url');

/**
 * Opens the console data directory, creating on first start: the CA (ca.pem, ca.key),
 * the console's HTTPS certificate (console.pem, console.key, re-issued at each start for
 * the current names), admin.token and registration.token. Secrets are 0600.
 */
export async function openDataDir(dir: string, serverNames: string[]): Promise<ConsoleSecrets> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const caCertFile = path.join(dir, 'ca.pem');
  const caKeyFile = path.join(dir, 'ca.key');
  let ca: CaMaterial;
  if ((await exists(caCertFile)) && (await exists(caKeyFile))) {
    ca = { certPem: await readFile(caCertFile, 'utf8'), keyPem: await secretOnce(caKeyFile, () => '') };
  } else {
    ca = await createCa();
    await writeSecret(caKeyFile, ca.keyPem);
    await writeFile(caCertFile, ca.certPem, { mode: 0o644 });
  }
  const server = await issueServerCertificate(ca, [...new Set(serverNames)]);
  await writeSecret(path.join(dir, 'console.key'), server.keyPem);
  await writeFile(path.join(dir, 'console.pem'), server.certPem, { mode: 0o644 });
  const adminToken = await secretOnce(path.join(dir, 'admin.token'), token);
  const registrationToken = await secretOnce(path.join(dir, 'registration.token'), token);
  return { ca, server, adminToken, registrationToken, dbFile: path.join(dir, 'ferry.db') };
}
