/**
 * The simulator's virtual time: timers run in (due, insertion) order, intervals repeat, killed
 * scopes run nothing more, promise chains settle between two events, and wall clocks follow
 * virtual time with their skew.
 */
import { describe, expect, test } from 'vitest';
import { SimDriver, VirtualScheduler } from '../src/sim/virtual-scheduler.js';
import { VirtualWallClock } from '../src/sim/virtual-wall-clock.js';

describe('VirtualScheduler', () => {
  test('runs timers by due time, then in the order they were set, and moves now to each', async () => {
    const time = new VirtualScheduler();
    const scope = time.scope();
    const seen: string[] = [];
    scope.setTimeout(() => seen.push(`b@${time.now()}`), 20);
    scope.setTimeout(() => seen.push(`a@${time.now()}`), 10);
    scope.setTimeout(() => seen.push(`c@${time.now()}`), 20);
    scope.macrotask(() => seen.push(`m@${time.now()}`));
    scope.setTimeout(() => seen.push(`z@${time.now()}`), -5);
    while (time.runNext());
    expect(seen).toEqual(['m@0', 'z@0', 'a@10', 'b@20', 'c@20']);
    expect(scope.monotonicNow()).toBe(20);
    expect(time.pendingTimers()).toBe(0);
  });

  test('an interval repeats until cancelled; a cancelled timer never runs', () => {
    const time = new VirtualScheduler();
    const scope = time.scope();
    const ticks: number[] = [];
    const stop = scope.setInterval(() => ticks.push(time.now()), 5);
    const cancel = scope.setTimeout(() => ticks.push(-1), 7);
    cancel();
    cancel();
    while (time.runNext(16));
    expect(ticks).toEqual([5, 10, 15]);
    stop();
    expect(time.pendingTimers()).toBe(0);
    expect(time.runNext()).toBe(false);
  });

  test('a zero interval still lets virtual time move', () => {
    const time = new VirtualScheduler();
    const ticks: number[] = [];
    time.scope().setInterval(() => ticks.push(time.now()), 0);
    for (let i = 0; i < 3; i += 1) time.runNext();
    expect(ticks).toEqual([0, 1, 2]);
  });

  test('a killed scope runs none of its timers, old or new; other scopes go on', () => {
    const time = new VirtualScheduler();
    const crashed = time.scope();
    const other = time.scope();
    const seen: string[] = [];
    crashed.setInterval(() => seen.push('crashed'), 1);
    other.setTimeout(() => seen.push('other'), 3);
    crashed.kill();
    crashed.setTimeout(() => seen.push('late'), 1);
    crashed.macrotask(() => seen.push('late macrotask'));
    expect(other.pendingTimers()).toBe(1);
    expect(crashed.pendingTimers()).toBe(0);
    while (time.runNext());
    expect(seen).toEqual(['other']);
    expect(crashed.alive).toBe(false);
    expect(other.pendingTimers()).toBe(0);
  });
});

describe('SimDriver', () => {
  test('lets promise chains run to their end between two timers', async () => {
    const time = new VirtualScheduler();
    const scope = time.scope();
    const driver = new SimDriver(time);
    const seen: string[] = [];
    scope.setTimeout(() => {
      void (async () => {
        for (let i = 0; i < 50; i += 1) await Promise.resolve();
        seen.push(`chain@${time.now()}`);
      })();
    }, 10);
    scope.setTimeout(() => seen.push(`next@${time.now()}`), 10);
    await driver.runFor(100);
    expect(seen).toEqual(['chain@10', 'next@10']);
    expect(time.now()).toBe(100);
  });

  test('complete() runs virtual time until a promise settles, and fails past its deadline', async () => {
    const time = new VirtualScheduler();
    const scope = time.scope();
    const driver = new SimDriver(time);
    const sleep = (ms: number) => new Promise<void>((resolve) => scope.setTimeout(resolve, ms));
    const value = await driver.complete(
      (async () => {
        await sleep(1_000);
        await sleep(2_000);
        return 'done';
      })(),
      'two sleeps',
      { deadline: 10_000 },
    );
    expect(value).toBe('done');
    expect(time.now()).toBe(3_000);
    await expect(driver.complete(sleep(60_000), 'a long sleep', { deadline: 20_000 })).rejects.toThrow(
      /a long sleep did not complete by virtual time 20000/,
    );
    await expect(driver.complete(Promise.reject(new Error('boom')), 'a failure', { deadline: 30_000 })).rejects.toThrow('boom');
  });

  test('work that keeps virtual time still is a livelock, reported', async () => {
    const time = new VirtualScheduler();
    const scope = time.scope();
    const driver = new SimDriver(time, 1_000);
    const ping = (): void => void scope.setTimeout(ping, 0);
    ping();
    await expect(driver.runFor(10)).rejects.toThrow(/livelock: 1001 timers ran at virtual time 0/);
  });

  test('runUntil() stops as soon as its condition holds, or at the deadline', async () => {
    const time = new VirtualScheduler();
    const driver = new SimDriver(time);
    let count = 0;
    time.scope().setInterval(() => (count += 1), 100);
    expect(await driver.runUntil(() => count === 3, { deadline: 10_000 })).toBe(true);
    expect(time.now()).toBe(300);
    expect(await driver.runUntil(() => count < 0, { deadline: 1_000 })).toBe(false);
    expect(time.now()).toBe(1_000);
  });
});

describe('VirtualWallClock', () => {
  test('reads the epoch plus virtual now plus its skew, and can jump back', () => {
    const time = new VirtualScheduler();
    const clock = new VirtualWallClock(time, 1_750_000_000_000, 250);
    expect(clock.now()).toBe(1_750_000_000_250);
    time.advanceTo(1_000);
    expect(clock.now()).toBe(1_750_000_001_250);
    clock.jumpBack(5_000);
    expect(clock.now()).toBe(1_749_999_996_250);
    expect(clock.skewMs).toBe(-4_750);
    // Whole milliseconds, as Date.now() (virtual time may be fractional: the network's delays are).
    time.advanceTo(1_000.75);
    expect(clock.now()).toBe(1_749_999_996_250);
  });
});
