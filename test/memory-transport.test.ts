import { describe, expect, it } from 'vitest';
import { NetworkError } from '../src/errors.js';
import type { FrameStream } from '../src/protocol/transport.js';
import { systemRuntime } from '../src/runtime/system-runtime.js';
import { type FaultEvent, type LinkFaults, MemoryNetwork, type MemoryTransport } from '../src/sim/memory-transport.js';
import { SeededRandom } from '../src/sim/prng.js';
import { runTransportTests } from './helpers/transport-conformance.js';
import { SimDriver, VirtualScheduler } from '../src/sim/virtual-scheduler.js';

runTransportTests('MemoryTransport', async (count, limits) => {
  const network = new MemoryNetwork({ scheduler: systemRuntime().scheduler, random: new SeededRandom(1) });
  const transports = Array.from({ length: count }, (_, i) => network.createTransport(`peer-${i}`, limits));
  return { transports, teardown: async () => void (await Promise.all(transports.map((t) => t.stop()))) };
});

/** A memory network on virtual time, with `names` as its peers. */
function virtualNetwork(seed: number, faults: Partial<LinkFaults> = {}, names = ['a', 'b']) {
  const scheduler = virtualTime();
  const network = new MemoryNetwork({ scheduler, random: new SeededRandom(seed), faults });
  const events: FaultEvent[] = [];
  network.onFault((event) => events.push(event));
  const peers = names.map((name) => network.createTransport(name, { maxBufferedBytes: 4096 }));
  return { scheduler, network, events, peers };
}

/** The simulator's virtual time, as a scheduler these tests can also run until no timer is left. */
function virtualTime() {
  const time = new VirtualScheduler();
  const driver = new SimDriver(time);
  return Object.assign(time.scope(), {
    async runUntilIdle(): Promise<void> {
      while (await driver.step());
    },
  });
}

/** Runs `scenario` to its end on `scheduler`'s virtual time. */
async function drive<T>(scheduler: ReturnType<typeof virtualTime>, scenario: Promise<T>): Promise<T> {
  let done = false;
  scenario.then(
    () => (done = true),
    () => (done = true),
  );
  while (!done) await scheduler.runUntilIdle();
  return scenario;
}

/** Connects a to b and opens a stream: its end on a (`out`) and on b (`stream`). */
async function openPair(a: MemoryTransport, b: MemoryTransport): Promise<{ out: FrameStream; stream: FrameStream }> {
  const accepted = new Promise<FrameStream>((resolve) => b.handle(resolve));
  await a.connect(b.localPeer, b.addresses());
  const out = await a.openStream(b.localPeer);
  return { out, stream: await accepted };
}

/**
 * Sends frames 0..count-1 (each frame holds its index) from a to b on one stream, then closes it;
 * resolves with the indexes b read, in order, and how each side ended.
 */
async function transfer(a: MemoryTransport, b: MemoryTransport, count: number) {
  const { out, stream } = await openPair(a, b);
  const sending = (async () => {
    for (let i = 0; i < count; i++) await out.send(new Uint8Array(100).fill(i));
    await out.close();
  })().then(
    () => undefined,
    (err: unknown) => err,
  );
  const received: number[] = [];
  let readError: unknown;
  try {
    for await (const frame of stream.frames()) received.push(frame[0]!);
  } catch (err) {
    readError = err;
  }
  return { received, readError, sendError: await sending };
}

const indexes = (count: number) => Array.from({ length: count }, (_, i) => i);

describe('memory transport faults', () => {
  it('replays a run exactly for one seed, and another seed runs differently', async () => {
    const faults = { delay: { minMs: 1, maxMs: 30 }, duplication: 0.2, reordering: 0.2 };
    const run = async (seed: number) => {
      const { scheduler, events, peers } = virtualNetwork(seed, faults);
      const result = await drive(scheduler, transfer(peers[0]!, peers[1]!, 60));
      return { received: result.received, events: events.map((e) => e.kind), endedAt: scheduler.monotonicNow() };
    };
    const first = await run(7);
    expect(await run(7)).toEqual(first);
    expect(await run(8)).not.toEqual(first);
  });

  it('without faults delivers every frame once, in order', async () => {
    const { scheduler, network, peers } = virtualNetwork(1);
    const result = await drive(scheduler, transfer(peers[0]!, peers[1]!, 50));
    expect(result).toEqual({ received: indexes(50), readError: undefined, sendError: undefined });
    expect(Object.values(network.faultCounts()).every((n) => n === 0)).toBe(true);
  });

  it('delays frames on the scheduler without reordering them', async () => {
    const { scheduler, network, peers } = virtualNetwork(2, { delay: { minMs: 10, maxMs: 50 } });
    const result = await drive(scheduler, transfer(peers[0]!, peers[1]!, 50));
    expect(result.received).toEqual(indexes(50));
    expect(scheduler.monotonicNow()).toBeGreaterThanOrEqual(10);
    expect(network.faultCounts().delay).toBeGreaterThan(50);
  });

  it('loss resets the stream at the lost frame: both sides fail, the reader got exactly the frames before it', async () => {
    const { scheduler, network, events, peers } = virtualNetwork(3, { loss: 0.1 });
    const result = await drive(scheduler, transfer(peers[0]!, peers[1]!, 200));
    expect(network.faultCounts().loss).toBe(1);
    expect(events).toEqual([{ kind: 'loss', from: 'a', to: 'b' }]);
    expect(result.readError).toBeInstanceOf(NetworkError);
    expect(result.sendError).toBeInstanceOf(NetworkError);
    expect(result.received).toEqual(indexes(result.received.length));
    expect(result.received.length).toBeLessThan(200);
  });

  it('duplication delivers a frame twice in a row, and nothing else changes', async () => {
    const { scheduler, network, peers } = virtualNetwork(4, { duplication: 0.3 });
    const result = await drive(scheduler, transfer(peers[0]!, peers[1]!, 100));
    const duplicates = network.faultCounts().duplication;
    expect(duplicates).toBeGreaterThan(0);
    expect(result.received).toHaveLength(100 + duplicates);
    expect(result.received.filter((n, i) => i === 0 || result.received[i - 1] !== n)).toEqual(indexes(100));
  });

  it('reordering delivers a held-back frame after the next one, and every frame once', async () => {
    const { scheduler, network, peers } = virtualNetwork(5, { reordering: 0.3 });
    const result = await drive(scheduler, transfer(peers[0]!, peers[1]!, 100));
    expect(network.faultCounts().reordering).toBeGreaterThan(0);
    expect(result.received).not.toEqual(indexes(100));
    expect([...result.received].sort((x, y) => x - y)).toEqual(indexes(100));
    // A held-back frame is overtaken by one frame only.
    result.received.forEach((n, i) => expect(Math.abs(n - i)).toBeLessThanOrEqual(1));
  });

  it('a held-back frame with no follower still arrives, the maximum delay later', async () => {
    const { scheduler, peers } = virtualNetwork(6, { reordering: 1, delay: { minMs: 0, maxMs: 40 } });
    const [a, b] = peers as [MemoryTransport, MemoryTransport];
    const got = await drive(
      scheduler,
      (async () => {
        const { out, stream } = await openPair(a, b);
        await out.send(new Uint8Array([42]));
        return (await stream.frames()[Symbol.asyncIterator]().next()).value as Uint8Array;
      })(),
    );
    expect([...got]).toEqual([42]);
  });

  it('faults changed mid-run apply from then on', async () => {
    const { scheduler, network, peers } = virtualNetwork(7);
    const [a, b] = peers as [MemoryTransport, MemoryTransport];
    const outcome = await drive(
      scheduler,
      (async () => {
        const { out, stream } = await openPair(a, b);
        for (let i = 0; i < 10; i++) await out.send(new Uint8Array([i]));
        network.setFaults({ loss: 1 });
        const lost = await out.send(new Uint8Array([10])).then(() => undefined, (err: unknown) => err);
        const frames: number[] = [];
        const read = await (async () => {
          for await (const frame of stream.frames()) frames.push(frame[0]!);
        })().then(() => undefined, (err: unknown) => err);
        return { lost, read, frames };
      })(),
    );
    expect(outcome.lost).toBeInstanceOf(NetworkError);
    expect(outcome.read).toBeInstanceOf(NetworkError);
    expect(network.faults.loss).toBe(1);
    expect(network.faultCounts().loss).toBe(1);
  });

  it('send waits while the receiver holds its buffer, and resolves once it reads', async () => {
    const { scheduler, peers } = virtualNetwork(8);
    const [a, b] = peers as [MemoryTransport, MemoryTransport];
    const { out, stream } = await drive(scheduler, openPair(a, b));
    // The receiver's buffer is 4096 bytes: the first frame fits, the second overfills it.
    await drive(scheduler, out.send(new Uint8Array(3000)));
    let second = false;
    const sending = out.send(new Uint8Array(3000)).then(() => (second = true));
    await scheduler.runUntilIdle();
    expect(second).toBe(false);
    const frames = stream.frames()[Symbol.asyncIterator]();
    expect((await drive(scheduler, frames.next())).value).toHaveLength(3000);
    await drive(scheduler, sending);
    expect(second).toBe(true);
  });

  it('a partition cuts connections between its sides and refuses dials until healed; other links stay', async () => {
    const { scheduler, network, peers } = virtualNetwork(9, {}, ['a', 'b', 'c']);
    const [a, b, c] = peers as [MemoryTransport, MemoryTransport, MemoryTransport];
    const changes: string[] = [];
    a.onConnectionChange((peer, connected) => changes.push(`a-${peer}:${connected}`));
    const { out } = await drive(
      scheduler,
      (async () => {
        b.handle(() => undefined);
        await a.connect(b.localPeer, b.addresses());
        await b.connect(c.localPeer, c.addresses());
        return { out: await a.openStream(b.localPeer) };
      })(),
    );
    const reading = (async () => {
      for await (const _ of out.frames()) void _;
    })().then(() => undefined, (err: unknown) => err);

    network.partition([['a'], ['b', 'c']]);
    expect(await drive(scheduler, reading)).toBeInstanceOf(NetworkError);
    expect(a.isConnected('b')).toBe(false);
    expect(b.isConnected('c')).toBe(true);
    expect(changes).toEqual(['a-b:true', 'a-b:false']);
    await expect(drive(scheduler, a.connect(b.localPeer, b.addresses()))).rejects.toThrow(/partition/);
    await expect(drive(scheduler, c.connect(a.localPeer, a.addresses()))).rejects.toBeInstanceOf(NetworkError);
    expect(network.faultCounts()['partition-cut']).toBe(1);
    expect(network.faultCounts()['partition-refusal']).toBe(2);

    network.heal();
    await drive(scheduler, a.connect(b.localPeer, b.addresses()));
    expect(a.isConnected('b')).toBe(true);
  });

  it('dropConnection closes one connection as a network failure, counted', async () => {
    const { scheduler, network, peers } = virtualNetwork(10);
    const [a, b] = peers as [MemoryTransport, MemoryTransport];
    await drive(scheduler, a.connect(b.localPeer, b.addresses()));
    network.dropConnection('b', 'a');
    expect(a.isConnected('b')).toBe(false);
    expect(b.isConnected('a')).toBe(false);
    expect(network.faultCounts()['connection-drop']).toBe(1);
  });

  it('a stopped peer can run again under its PeerId (a restart), and only one at a time', async () => {
    const { scheduler, network, peers } = virtualNetwork(11);
    const [a, b] = peers as [MemoryTransport, MemoryTransport];
    expect(() => network.createTransport('b')).toThrow(/already runs/);
    await b.stop();
    expect(network.transportOf('b')).toBeUndefined();
    const again = network.createTransport('b');
    await drive(scheduler, a.connect('b', again.addresses()));
    expect(again.isConnected('a')).toBe(true);
  });

  it('a peer that does not listen has no address and refuses dials, yet dials out, and streams open both ways', async () => {
    const { scheduler, network, peers } = virtualNetwork(12);
    const [a] = peers as [MemoryTransport];
    const quiet = network.createTransport('quiet', { listening: false });
    expect(quiet.addresses()).toEqual([]);
    await expect(drive(scheduler, a.connect('quiet', ['/memory/quiet/p2p/quiet']))).rejects.toThrow(/cannot reach peer quiet/);
    await drive(scheduler, quiet.connect(a.localPeer, a.addresses()));
    const accepted = new Promise<FrameStream>((resolve) => quiet.handle(resolve));
    const out = await drive(scheduler, a.openStream('quiet'));
    expect((await accepted).remotePeer).toBe(a.localPeer);
    expect(out.remotePeer).toBe('quiet');
  });
});
