import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { v4 as uuidv4 } from 'uuid';
import { SyncError } from '../errors.js';
import { isDeviceId } from '../hlc/index.js';

/**
 * The node's directory:
 *   node.json                 { "deviceId": "<uuid>" }, created once
 *   node.lock                 pid of the process that has the directory open
 *   libraries/<id>.sqlite     one database per library
 */
export class DataDir {
  constructor(readonly path: string) {}

  get librariesPath(): string {
    return join(this.path, 'libraries');
  }

  libraryFile(id: string): string {
    return join(this.librariesPath, `${id}.sqlite`);
  }

  async ensure(): Promise<void> {
    await mkdir(this.librariesPath, { recursive: true });
  }

  /** Reads the persisted device id, creating it on first start (atomically, via rename). */
  async deviceId(): Promise<string> {
    const file = join(this.path, 'node.json');
    try {
      const parsed = JSON.parse(await readFile(file, 'utf8')) as { deviceId?: unknown };
      if (!isDeviceId(parsed.deviceId)) throw new SyncError('SCHEMA_MISMATCH', `${file} holds no valid deviceId`);
      return parsed.deviceId;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const deviceId = uuidv4();
    const tmp = `${file}.${process.pid}.tmp`;
    await writeFile(tmp, JSON.stringify({ deviceId }, null, 2) + '\n', { mode: 0o600 });
    await rename(tmp, file);
    return deviceId;
  }

  /**
   * Claims the directory for this process. Two live nodes on one directory would both issue
   * sequence numbers for the same device; a lock left by a dead process is taken over.
   */
  async lock(): Promise<() => Promise<void>> {
    const file = join(this.path, 'node.lock');
    try {
      const pid = Number((await readFile(file, 'utf8')).trim());
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid)) {
        throw new SyncError('STOPPED', `data directory ${this.path} is in use by process ${pid}`);
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    await writeFile(file, `${process.pid}\n`);
    return () => rm(file, { force: true });
  }

  async libraryIds(): Promise<string[]> {
    const names = await readdir(this.librariesPath);
    return names.filter((n) => n.endsWith('.sqlite')).map((n) => n.slice(0, -'.sqlite'.length));
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
