import { hostname } from 'node:os';
import { SyncNode } from '../core/sync-node.js';
import { DEFAULT_SYNC_TUNING, type SyncTuning } from '../core/tuning.js';
import { ValidationError } from '../errors.js';
import type { Model } from '../models/define.js';
import { isDeviceName, MAX_DEVICE_NAME_LENGTH } from '../models/system.js';
import { parseBootstrap } from '../network/bootstrap.js';
import { DEFAULT_LISTEN, Libp2pTransport } from '../network/libp2p-transport.js';
import { loadOrCreatePeerKey } from '../network/peer-key.js';
import type { PrivateKey } from '@libp2p/interface';
import type { Signatures } from '../runtime/signatures.js';
import { deviceSignatures } from './native-signatures.js';
import { MAX_FRAME_BYTES, MAX_HANDSHAKE_FRAME_BYTES, PROTOCOL_ID } from '../protocol/messages.js';
import type { Transport } from '../protocol/transport.js';
import type { WallClock } from '../runtime/runtime.js';
import { systemRuntime } from '../runtime/system-runtime.js';
import { DataDir } from './data-dir.js';
import { openFileStorage } from './file-storage.js';
import { listenOnStablePorts } from './stable-ports.js';

export interface SyncNodeOptions {
  /** Directory for the device identity and one SQLite file per library. Created if missing. */
  dataDir: string;
  /** The application's models (see `defineModel`). */
  models: Model[];
  /** Wall clock in milliseconds; defaults to `Date.now`. Injected by tests and the simulator. */
  wallClock?: WallClock;
  /** Remote clocks further ahead of local wall time than this are refused. Default 60 000. */
  maxClockDriftMs?: number;
  /**
   * libp2p listen multiaddrs. Default: TCP and WebSockets on all interfaces, ephemeral ports.
   * `[]` listens nowhere (the node can still dial out).
   */
  listen?: string[];
  /** How partners are found besides their member rows. See docs/operations.md. */
  discovery?: DiscoveryOptions;
  /**
   * Always-on peers (a home server, a cloud VM running this package), as multiaddrs ending in
   * `/p2p/<PeerId>`. The node dials each at start and keeps it connected (redialled with the
   * partners' backoff). One that is a member of a library here is a meeting point: members that
   * know only it sync with it, learn of each other from the member rows it forwards, and keep a
   * relay slot on it, through which members that cannot dial each other connect.
   */
  bootstrap?: string[];
  /** Replication timings and limits; the defaults suit a LAN or the internet. */
  sync?: Partial<SyncTuning>;
  /**
   * A human-readable name for this device, shown to every member (`lib.members()`): a non-blank
   * string of at most 128 characters. Default: the host name (`os.hostname()`).
   */
  deviceName?: string;
}

export interface DiscoveryOptions {
  /**
   * Find members on the LAN with mDNS (and answer their queries). Default true. It runs only
   * while some listen address is reachable from the LAN: a node on loopback only sends no mDNS.
   */
  mdns?: boolean;
}

/**
 * Starts this device's sync node: the core (`SyncNode.create`) over libp2p (TCP and WebSockets,
 * on the ports remembered in the data directory, with the device's key from it), one
 * better-sqlite3 file per library in the locked data directory, and real time. Validates what
 * users pass before touching the disk (`ValidationError`). Call `node.stop()` before the
 * process exits.
 *
 * @example
 * ```ts
 * const Note = defineModel({ name: 'note', ownership: 'shared', conflict: 'lww-field', fields: { title: 'text' } });
 * const node = await createSyncNode({ dataDir: '/var/lib/my-app/sync', models: [Note], listen: ['/ip4/127.0.0.1/tcp/0'] });
 * const lib = await node.createLibrary({ name: 'Home' });
 * await lib.upsert('note', { title: 'Groceries' });
 * await node.stop();
 * ```
 */
export async function createSyncNode(options: SyncNodeOptions): Promise<SyncNode> {
  return createSyncNodeSigningWith(options, deviceSignatures);
}

/**
 * `createSyncNode` with another way to sign (`openFileStorage`). Internal (not exported by the
 * package): the benchmarks measure what signing costs against a baseline that signs nothing.
 */
export async function createSyncNodeSigningWith(options: SyncNodeOptions, signaturesFor: (key: PrivateKey) => Signatures): Promise<SyncNode> {
  return createNodeOverTransport(
    options,
    (dataDir, listen, discovery) =>
    async () => {
      const privateKey = await loadOrCreatePeerKey(dataDir.peerKeyFile);
      return listenOnStablePorts(dataDir, listen, (addresses) =>
        Libp2pTransport.start({
          privateKey,
          listen: addresses,
          protocol: PROTOCOL_ID,
          maxFrameBytes: MAX_FRAME_BYTES,
          maxFirstFrameBytes: MAX_HANDSHAKE_FRAME_BYTES,
          maxStreams: MAX_STREAMS_PER_CONNECTION,
          maxStrangerConnections: MAX_STRANGER_CONNECTIONS,
          mdns: discovery.mdns,
        }),
      );
    },
    signaturesFor,
  );
}

/**
 * How the Node edge starts a node's transport, given its data directory (where the peer key
 * lives) and the validated `listen` and `discovery` options.
 */
export type TransportStarter = (dataDir: DataDir, listen: string[], discovery: Required<DiscoveryOptions>) => () => Promise<Transport>;

/**
 * `createSyncNode` with another transport: the same validation, storage and runtime. Internal
 * (not exported by the package): tests run nodes over the in-memory network with it, so that
 * what they test besides libp2p is built exactly as users get it.
 */
export async function createNodeOverTransport(
  options: SyncNodeOptions,
  startTransport: TransportStarter,
  signaturesFor: (key: PrivateKey) => Signatures = deviceSignatures,
): Promise<SyncNode> {
  if (typeof options?.dataDir !== 'string' || options.dataDir === '') {
    throw new ValidationError('createSyncNode: dataDir must be a directory path');
  }
  if (!Array.isArray(options.models)) throw new ValidationError('createSyncNode: models must be an array');
  const drift = options.maxClockDriftMs;
  if (drift !== undefined && (!Number.isFinite(drift) || drift < 0)) {
    throw new ValidationError('createSyncNode: maxClockDriftMs must be a non-negative number');
  }
  const tuning = checkTuning(options.sync);
  const deviceName = options.deviceName === undefined ? defaultDeviceName() : options.deviceName;
  if (options.deviceName !== undefined && !isDeviceName(deviceName)) {
    throw new ValidationError(`createSyncNode: deviceName must be a non-blank string of at most ${MAX_DEVICE_NAME_LENGTH} characters`);
  }
  const listen = options.listen ?? DEFAULT_LISTEN;
  if (!Array.isArray(listen) || !listen.every((a) => typeof a === 'string')) {
    throw new ValidationError('createSyncNode: listen must be an array of multiaddr strings');
  }
  const discovery = checkDiscovery(options.discovery);
  const bootstrap = parseBootstrap(options.bootstrap);
  const dataDir = new DataDir(options.dataDir);
  return SyncNode.create({
    models: options.models,
    openStorage: () => openFileStorage(dataDir, signaturesFor),
    startTransport: startTransport(dataDir, listen, discovery),
    runtime: { ...systemRuntime(), wallClock: options.wallClock ?? Date.now },
    maxClockDriftMs: drift,
    tuning,
    deviceName,
    bootstrap,
  });
}

/**
 * One stream per library two devices share, plus short join streams: a few. Together with the
 * handshake frame limit this bounds what one connection can make this node buffer.
 */
const MAX_STREAMS_PER_CONNECTION = 64;
/** Connections with peers that are members of no library here (joiners, strangers), at once. */
const MAX_STRANGER_CONNECTIONS = 8;

/** The host name, cut to a device name's length; null if there is none. */
function defaultDeviceName(): string | null {
  const name = hostname().trim().slice(0, MAX_DEVICE_NAME_LENGTH);
  return isDeviceName(name) ? name : null;
}

function checkDiscovery(input: DiscoveryOptions | undefined): Required<DiscoveryOptions> {
  if (input === undefined) return { mdns: true };
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new ValidationError('createSyncNode: discovery must be an object such as { mdns: false }');
  }
  // An unknown key is most likely a misspelt `mdns`: silently keeping mDNS on would be worse.
  const unknown = Object.keys(input).filter((key) => key !== 'mdns');
  if (unknown.length > 0) throw new ValidationError(`createSyncNode: discovery has unknown option(s) ${unknown.join(', ')}`);
  if (input.mdns !== undefined && typeof input.mdns !== 'boolean') {
    throw new ValidationError('createSyncNode: discovery.mdns must be true or false');
  }
  return { mdns: input.mdns ?? true };
}

function checkTuning(input: Partial<SyncTuning> | undefined): SyncTuning {
  const tuning = { ...DEFAULT_SYNC_TUNING, ...input };
  for (const [key, value] of Object.entries(tuning)) {
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
      throw new ValidationError(`createSyncNode: sync.${key} must be a positive number`);
    }
  }
  if (tuning.peerTimeoutMs <= tuning.heartbeatMs) {
    throw new ValidationError('createSyncNode: sync.peerTimeoutMs must be longer than sync.heartbeatMs');
  }
  return tuning;
}

