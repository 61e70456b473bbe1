import { multiaddr } from '@multiformats/multiaddr';

/**
 * Stable listen ports. A listen address with port 0 gets an ephemeral port from the OS, a new
 * one at every start: partners that know only the old one (its member row) could no longer dial
 * this device. So the port each such address was given is remembered (by the node, in its data
 * directory) and asked for again at the next start; only when it is taken does that address fall
 * back to port 0. Addresses with an explicit port are used as given. Pure: no I/O.
 */

/** The port last given to each port-0 listen address, keyed by the address as configured. */
export type ListenPorts = Record<string, number>;

/** One configured listen address and the address libp2p is asked to listen on for it. */
export interface ListenRequest {
  configured: string;
  address: string;
  /** Whether `address` carries a remembered port (so it may fall back to port 0). */
  remembered: boolean;
}

/** A TCP port component of value 0 (TCP and WebSockets both sit on one). */
const PORT_ZERO = /\/tcp\/0(?=\/|$)/;
const TCP_PORT = /\/tcp\/(\d+)(?=\/|$)/;
const WILDCARD_HOSTS = new Set(['0.0.0.0', '::']);

/**
 * What to listen on: each port-0 address with its remembered port, if there is one and no
 * address is configured with that port explicitly (it is the explicit one's: were both asked for,
 * the explicit one could be the one refused, and that failure is final).
 */
export function listenRequests(configured: readonly string[], remembered: ListenPorts): ListenRequest[] {
  const explicit = new Set(configured.map((text) => TCP_PORT.exec(canonicalAddress(text))?.[1]).filter((port) => port !== undefined && port !== '0'));
  return configured.map((text) => {
    const canonical = canonicalAddress(text);
    const port = remembered[text];
    if (port === undefined || explicit.has(String(port)) || !PORT_ZERO.test(canonical)) return { configured: text, address: canonical, remembered: false };
    return { configured: text, address: canonical.replace(PORT_ZERO, `/tcp/${port}`), remembered: true };
  });
}

/**
 * The requests whose remembered port this node cannot have now. libp2p 3 reports a listen failure
 * only as an `UnsupportedListenAddressesError` (after stopping the node) whose message has one
 * line per failed address, `<address>: <cause>`; the cause of a taken port is Node's
 * `listen EADDRINUSE: address already in use <host>:<port>` (@libp2p/tcp and @libp2p/websockets
 * both pass the server's 'error' through); of a port the system reserved since, `listen EACCES`
 * (Windows excludes port ranges anew at boot for Hyper-V, WSL and Docker; a port below the
 * unprivileged start on Linux, as a damaged file may name). Kept, either would stop every
 * later start. Any other failure (a host not on this machine) is not the port's: not ours to fix.
 */
export function takenRememberedPorts(err: unknown, requests: readonly ListenRequest[]): ListenRequest[] {
  if (!(err instanceof Error) || err.name !== 'UnsupportedListenAddressesError') return [];
  const lines = err.message.split('\n').map((line) => line.trim());
  return requests.filter(
    (r) => r.remembered && lines.some((line) => line.startsWith(`${r.address}: `) && /\b(EADDRINUSE|EACCES)\b/.test(line)),
  );
}

/**
 * Starts listening (`start` gets the addresses) on the remembered ports; an address whose
 * remembered port is taken is retried on port 0, the others keep theirs. Each retry forgets at
 * least one port, so this ends.
 */
export async function listenOnRememberedPorts<T>(
  configured: readonly string[],
  remembered: ListenPorts,
  start: (addresses: string[]) => Promise<T>,
): Promise<T> {
  const ports = { ...remembered };
  for (;;) {
    const requests = listenRequests(configured, ports);
    try {
      return await start(requests.map((r) => r.address));
    } catch (err) {
      const taken = takenRememberedPorts(err, requests);
      if (taken.length === 0) throw err;
      for (const request of taken) delete ports[request.configured];
    }
  }
}

interface TcpAddress {
  family: string;
  host: string;
  port: number;
  /** What runs over the TCP port: '' for plain TCP, 'ws', 'tls/ws'… */
  stack: string;
}

/**
 * The port each port-0 address of `configured` was given, read from the addresses the node
 * listens on (`listening`; a wildcard host shows as one address per interface, all on one port).
 * An address with a specific host takes the port whose addresses include that host and fewest
 * others; a wildcard one the port with most addresses; explicit ports of other configured
 * addresses are never taken. Two port-0 wildcard addresses of one kind may swap ports between
 * runs: both are remembered, so both stay stable enough to be found again.
 */
export function boundListenPorts(configured: readonly string[], listening: readonly string[]): ListenPorts {
  const parsedConfig = configured.map((text) => ({ text, address: tcpAddress(text) }));
  const explicit = new Set(parsedConfig.flatMap(({ address: a }) => (a && a.port !== 0 ? [groupKey(a, a.port)] : [])));
  const groups = new Map<string, { hosts: Set<string>; port: number }>();
  for (const text of listening) {
    const a = tcpAddress(text);
    if (!a) continue;
    const key = groupKey(a, a.port);
    if (explicit.has(key)) continue;
    const group = groups.get(key) ?? { hosts: new Set<string>(), port: a.port };
    group.hosts.add(a.host);
    groups.set(key, group);
  }
  const ports: ListenPorts = {};
  const claimed = new Set<string>();
  // Specific hosts first: a wildcard address would otherwise claim a loopback-only port.
  const portZero = parsedConfig.filter((c) => c.address?.port === 0);
  const ordered = [...portZero.filter((c) => !WILDCARD_HOSTS.has(c.address!.host)), ...portZero.filter((c) => WILDCARD_HOSTS.has(c.address!.host))];
  for (const { text, address } of ordered) {
    const wildcard = WILDCARD_HOSTS.has(address!.host);
    let best: { key: string; size: number; port: number } | undefined;
    for (const [key, group] of groups) {
      if (claimed.has(key) || key !== groupKey(address!, group.port)) continue;
      if (!wildcard && !group.hosts.has(address!.host)) continue;
      const size = group.hosts.size;
      if (!best || (wildcard ? size > best.size : size < best.size)) best = { key, size, port: group.port };
    }
    if (!best) continue;
    claimed.add(best.key);
    ports[text] = best.port;
  }
  return ports;
}

export function sameListenPorts(a: ListenPorts, b: ListenPorts): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((key) => a[key] === b[key]);
}

/** The remembered ports in `value` (a parsed JSON file); anything malformed is dropped. */
export function parseListenPorts(value: unknown): ListenPorts {
  const ports: ListenPorts = {};
  const entries = (value as { ports?: unknown } | null)?.ports;
  if (typeof entries !== 'object' || entries === null || Array.isArray(entries)) return ports;
  for (const [address, port] of Object.entries(entries)) {
    if (Number.isInteger(port) && (port as number) > 0 && (port as number) <= 65_535) ports[address] = port as number;
  }
  return ports;
}

function canonicalAddress(text: string): string {
  try {
    return multiaddr(text).toString();
  } catch {
    // libp2p refuses it at listen with its own error: pass it on unchanged.
    return text;
  }
}

function groupKey(a: TcpAddress, port: number): string {
  return `${a.family} ${a.stack} ${port}`;
}

/** `/ip4|ip6/<host>/tcp/<port>[/…]` with an optional trailing `/p2p/<self>`; else undefined. */
function tcpAddress(text: string): TcpAddress | undefined {
  let components;
  try {
    components = multiaddr(text).getComponents();
  } catch {
    return undefined;
  }
  if (components.at(-1)?.name === 'p2p') components = components.slice(0, -1);
  const [ip, tcp, ...rest] = components;
  if ((ip?.name !== 'ip4' && ip?.name !== 'ip6') || tcp?.name !== 'tcp' || ip.value === undefined) return undefined;
  // A relayed address (…/p2p/<relay>/p2p-circuit) is the relay's port, not ours.
  if (rest.some((c) => c.name === 'p2p' || c.name === 'p2p-circuit')) return undefined;
  return { family: ip.name, host: ip.value, port: Number(tcp.value), stack: rest.map((c) => c.name).join('/') };
}
