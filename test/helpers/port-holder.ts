import { readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { LineChild, REPO_ROOT } from './child-process.js';

const PORT_HOLDER = join(REPO_ROOT, 'test', 'fixtures', 'port-holder.mjs');

/** Another process that holds 127.0.0.1:`port` (0: any free port); kill it to free the port. */
export async function holdPort(port: number): Promise<{ holder: LineChild; port: number }> {
  let held: number | undefined;
  const holder = new LineChild(PORT_HOLDER, [String(port)], (line) => {
    const message = JSON.parse(line) as { t: string; port: number };
    if (message.t === 'listening') held = message.port;
  });
  await holder.waitFor(() => held !== undefined, `a process holding port ${port}`, 20_000);
  return { holder, port: held! };
}

/** The TCP port of a multiaddr such as /ip4/127.0.0.1/tcp/4001/p2p/…. */
export function tcpPort(address: string): number {
  const match = /\/tcp\/(\d+)/.exec(address);
  if (!match) throw new Error(`no TCP port in ${address}`);
  return Number(match[1]);
}

/**
 * Ephemeral ports come from one pool that every port-0 listener and every outgoing connection
 * on this machine draws from, so under a busy parallel suite a port a node stopped holding can be
 * taken before the node starts again (and the node then rightly moves). A test about keeping a
 * port across restarts starts its devices on ports outside that pool instead: nothing but an
 * explicit request can take those.
 */
async function ephemeralPortRange(): Promise<{ low: number; high: number }> {
  try {
    const [low, high] = (await readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')).trim().split(/\s+/).map(Number);
    if (Number.isInteger(low) && Number.isInteger(high)) return { low: low!, high: high! };
  } catch {
    // Not Linux: the IANA dynamic range, which macOS and Windows use.
  }
  return { low: 49_152, high: 65_535 };
}

/** Whether 127.0.0.1:`port` can be listened on right now. */
function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen({ host: '127.0.0.1', port }, () => server.close(() => resolve(true)));
  });
}

/** `count` distinct free 127.0.0.1 ports outside the ephemeral pool (from a random start, so parallel tests rarely meet). */
export async function portsOutsideEphemeralPool(count: number): Promise<number[]> {
  const { low, high } = await ephemeralPortRange();
  const [from, to] = low - 10_000 >= 10_000 ? [10_000, low - 1] : [high + 1, 65_535];
  const span = to - from + 1;
  const ports: number[] = [];
  const start = Math.floor(Math.random() * span);
  for (let i = 0; i < span && ports.length < count; i += 1) {
    const port = from + ((start + i) % span);
    if (!ports.includes(port) && (await canListen(port))) ports.push(port);
  }
  if (ports.length < count) throw new Error(`no ${count} free ports in ${from}–${to}`);
  return ports;
}

/**
 * Makes the node on `dataDir` start its port-0 `listen` addresses on ports outside the ephemeral
 * pool, as if it had been given them at an earlier start (it remembers ports in
 * listen-ports.json); returns the ports by address.
 */
export async function rememberPortsOutsideEphemeralPool(dataDir: string, listen: readonly string[]): Promise<Record<string, number>> {
  const free = await portsOutsideEphemeralPool(listen.length);
  const ports = Object.fromEntries(listen.map((address, i) => [address, free[i]!]));
  await writeFile(join(dataDir, 'listen-ports.json'), JSON.stringify({ ports }));
  return ports;
}
