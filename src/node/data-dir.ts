import { mkdir, open, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { SyncError } from '../errors.js';
import { isDeviceId } from '../hlc/index.js';
import { type ListenPorts, parseListenPorts } from '../network/listen-ports.js';
import { loadOrCreatePeerKey } from '../network/peer-key.js';
import { deviceIdForPeer } from '../membership/device-id.js';

/** Data directories open in this process: a lock file alone cannot tell two of our own apart. */
const openInThisProcess = new Set<string>();

/**
 * The node's directory:
 *   node.json                 { "deviceId": "<uuid>" }, created once: derived from the peer
 *                             key (a pre-2.0 directory keeps its random id)
 *   peer.key                  libp2p Ed25519 private key (protobuf), mode 0600, created once
 *   node.lock                 pid of the process that has the directory open
 *   listen-ports.json         { "ports": { "<listen address>": port } }: the port each port-0
 *                             listen address was given, asked for again at the next start
 *   libraries/<id>.sqlite     one database per library
 */
export class DataDir {
  readonly path: string;

  constructor(path: string) {
    this.path = resolve(path);
  }

  get librariesPath(): string {
    return join(this.path, 'libraries');
  }

  /** The libp2p private key (Ed25519, mode 0600): the device's stable PeerId. */
  get peerKeyFile(): string {
    return join(this.path, 'peer.key');
  }

  libraryFile(id: string): string {
    return join(this.librariesPath, `${id}.sqlite`);
  }

  get listenPortsFile(): string {
    return join(this.path, 'listen-ports.json');
  }

  /** The remembered listen ports; none when the file is missing or unreadable (it is only a hint). */
  async listenPorts(): Promise<ListenPorts> {
    try {
      return parseListenPorts(JSON.parse(await readFile(this.listenPortsFile, 'utf8')));
    } catch (err) {
      if (err instanceof SyntaxError || (err as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw err;
    }
  }

  /** Replaces the remembered listen ports, atomically (via rename). */
  async saveListenPorts(ports: ListenPorts): Promise<void> {
    await writeAtomically(this.listenPortsFile, JSON.stringify({ ports }, null, 2) + '\n');
  }

  async ensure(): Promise<void> {
    await mkdir(this.librariesPath, { recursive: true });
  }

  /**
   * Reads the persisted device id, creating it on first start (atomically, via rename) from the
   * peer key, so that no member can bind it to another key (`membership/device-id.ts`).
   */
  async deviceId(): Promise<string> {
    const file = join(this.path, 'node.json');
    try {
      const parsed = JSON.parse(await readFile(file, 'utf8')) as { deviceId?: unknown };
      if (!isDeviceId(parsed.deviceId)) throw new SyncError('SCHEMA_MISMATCH', `${file} holds no valid deviceId`);
      return parsed.deviceId;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const deviceId = deviceIdForPeer(peerIdFromPrivateKey(await loadOrCreatePeerKey(this.peerKeyFile)).toString());
    await writeAtomically(file, JSON.stringify({ deviceId }, null, 2) + '\n');
    return deviceId;
  }

  /**
   * Claims the directory for this node. Two live nodes on one directory would both issue
   * sequence numbers and clocks for the same device. The lock file is created exclusively; one
   * left by a dead process is removed and the claim retried once.
   */
  async lock(): Promise<() => Promise<void>> {
    if (openInThisProcess.has(this.path)) {
      throw new SyncError('STOPPED', `data directory ${this.path} is already open in this process`);
    }
    const file = join(this.path, 'node.lock');
    for (let attempt = 0; ; attempt++) {
      try {
        const handle = await open(file, 'wx');
        await handle.writeFile(`${process.pid}\n`);
        await handle.close();
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw err;
        const pid = Number((await readFile(file, 'utf8').catch(() => '')).trim());
        if (Number.isInteger(pid) && pid > 0 && isAlive(pid)) {
          throw new SyncError('STOPPED', `data directory ${this.path} is in use by process ${pid}`);
        }
        await rm(file, { force: true });
      }
    }
    openInThisProcess.add(this.path);
    return async () => {
      openInThisProcess.delete(this.path);
      const holder = (await readFile(file, 'utf8').catch(() => '')).trim();
      if (holder === String(process.pid)) await rm(file, { force: true });
    };
  }

  async libraryIds(): Promise<string[]> {
    const names = await readdir(this.librariesPath);
    return names.filter((n) => n.endsWith('.sqlite')).map((n) => n.slice(0, -'.sqlite'.length));
  }
}

/** Writes `file` whole or not at all: a crash leaves the old content or the new one. */
async function writeAtomically(file: string, content: string): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, content, { mode: 0o600 });
  await rename(tmp, file);
}

function isAlive(pid: number): boolean {
  // Our own pid in a lock we do not hold is stale: a previous process got the same pid (common
  // in containers); this process's own open directories are tracked in `openInThisProcess`.
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
