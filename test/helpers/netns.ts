/**
 * A private two-host LAN for tests that need a real network (mDNS): two network namespaces
 * joined by a veth pair, each with a private address, `lo` up and a multicast route. Nothing
 * in them can reach this machine's own interfaces, so their traffic never leaves the machine.
 * Needs root and iproute2's `ip`; `netnsUnavailable()` says why not where they are missing.
 */
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';

const exec = promisify(execFile);

/** Why namespaces cannot be made here (the test is skipped with this reason), or undefined. */
export function netnsUnavailable(): string | undefined {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'creating network namespaces needs root';
  const probe = `lsync-probe-${process.pid}`;
  const added = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' });
  if (added.error) return `iproute2's ip is not usable: ${added.error.message}`;
  if (added.status !== 0) return `ip netns add failed: ${added.stderr.trim()}`;
  spawnSync('ip', ['netns', 'del', probe]);
  return undefined;
}

export interface LanHost {
  /** The namespace's name, for `ip netns exec`. */
  ns: string;
  /** Its private IPv4 address on the veth link. */
  address: string;
  /** Its end of the veth link (an interface in its namespace). */
  link: string;
}

export interface Lan {
  hosts: [LanHost, LanHost];
  /** Deletes both namespaces (and so the veth pair). Safe to call more than once. */
  destroy(): Promise<void>;
}

async function ip(...args: string[]): Promise<void> {
  await exec('ip', args);
}

/**
 * Makes namespaces `<tag>-a` and `<tag>-b` (tag unique per test process, e.g. `lsync-<pid>`)
 * with addresses 10.213.0.1 and 10.213.0.2 on a /24. On any failure what was made is removed.
 */
export async function createLan(tag: string): Promise<Lan> {
  const hosts: [LanHost, LanHost] = [
    { ns: `${tag}-a`, address: '10.213.0.1', link: 'veth-a' },
    { ns: `${tag}-b`, address: '10.213.0.2', link: 'veth-b' },
  ];
  const made: string[] = [];
  const destroy = async () => {
    for (const ns of made.splice(0)) await ip('netns', 'del', ns).catch(() => undefined);
  };
  try {
    for (const host of hosts) {
      await ip('netns', 'add', host.ns);
      made.push(host.ns);
    }
    // Interface names are at most 15 characters: made in namespace A, so no clash with others.
    await ip('-n', hosts[0].ns, 'link', 'add', hosts[0].link, 'type', 'veth', 'peer', 'name', hosts[1].link, 'netns', hosts[1].ns);
    for (const host of hosts) {
      await ip('-n', host.ns, 'link', 'set', 'lo', 'up');
      await ip('-n', host.ns, 'addr', 'add', `${host.address}/24`, 'dev', host.link);
      await ip('-n', host.ns, 'link', 'set', host.link, 'up');
      // No default route in the namespace: multicast (mDNS's 224.0.0.251) needs its own.
      await ip('-n', host.ns, 'route', 'add', '224.0.0.0/4', 'dev', host.link);
    }
  } catch (err) {
    await destroy();
    throw err;
  }
  return { hosts, destroy };
}

/** Gives `host`'s link one more address (`cidr`, e.g. `10.213.0.11/24`), as a new lease would. */
export async function addAddress(host: LanHost, cidr: string): Promise<void> {
  await ip('-n', host.ns, 'addr', 'add', cidr, 'dev', host.link);
}

/** Takes an address added with `addAddress` away again, as an expired lease would. */
export async function removeAddress(host: LanHost, cidr: string): Promise<void> {
  await ip('-n', host.ns, 'addr', 'del', cidr, 'dev', host.link);
}
