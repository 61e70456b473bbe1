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
