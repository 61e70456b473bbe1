import { boundListenPorts, listenOnRememberedPorts, sameListenPorts } from '../network/listen-ports.js';
import type { Libp2pTransport } from '../network/libp2p-transport.js';
import type { DataDir } from './data-dir.js';

/**
 * Starts the transport on the ports its port-0 listen addresses had last time (kept in the data
 * directory), so partners find this device where its member row says; a port another socket
 * took since is replaced by a fresh one. Then remembers the ports given now.
 */
export async function listenOnStablePorts(
  dataDir: DataDir,
  listen: readonly string[],
  start: (addresses: string[]) => Promise<Libp2pTransport>,
): Promise<Libp2pTransport> {
  const remembered = await dataDir.listenPorts();
  const transport = await listenOnRememberedPorts(listen, remembered, start);
  const bound = boundListenPorts(listen, transport.addresses());
  if (!sameListenPorts(bound, remembered)) {
    try {
      await dataDir.saveListenPorts(bound);
    } catch (err) {
      await transport.stop();
      throw err;
    }
  }
  return transport;
}
