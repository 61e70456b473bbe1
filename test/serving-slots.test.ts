/**
 * Fair serving of catch-ups (src/replication/serving-slots.ts), on a fake clock: leases end by
 * time or pulls once another session waits, waiting sessions are served in the order they
 * asked, and sessions that stop pulling or asking lose their slot or place.
 */
import { describe, expect, it } from 'vitest';
import {
  MAX_PULLS_PER_WINDOW,
  SERVE_IDLE_MS,
  SERVE_LEASE_MS,
  SERVE_LEASE_PULLS,
  SERVE_RATE_WINDOW_MS,
  ServingSlots,
} from '../src/replication/serving-slots.js';

function slots(n: number) {
  const clock = { now: 0 };
  return { clock, slots: new ServingSlots(n, () => clock.now) };
}

describe('ServingSlots', () => {
  it('serves up to its slots; a holder keeps its slot while no one waits, past its lease', () => {
    const { clock, slots: s } = slots(2);
    expect([s.mayServe('a'), s.mayServe('b')]).toEqual([true, true]);
    for (let i = 0; i < 3 * SERVE_LEASE_PULLS; i++) {
      clock.now += 100;
      expect(s.mayServe('a')).toBe(true);
      expect(s.mayServe('b')).toBe(true);
    }
    expect(clock.now).toBeGreaterThan(SERVE_LEASE_MS);
  });

  it('a holder whose lease is over yields to a waiting session and queues behind it', () => {
    const { clock, slots: s } = slots(1);
    // Both keep asking, well within SERVE_IDLE_MS, until a's lease is over.
    for (; clock.now < SERVE_LEASE_MS; clock.now += 500) {
      expect(s.mayServe('a')).toBe(true);
      expect(s.mayServe('c')).toBe(false);
    }
    expect(s.mayServe('a')).toBe(false);
    // The slot is c's: a, asking again at once, waits behind c.
    expect(s.mayServe('a')).toBe(false);
    expect(s.mayServe('c')).toBe(true);
    expect(s.mayServe('a')).toBe(false);
    // c's own lease, counted in pulls this time, ends while a waits.
    for (let i = 1; i < SERVE_LEASE_PULLS; i++) expect(s.mayServe('c')).toBe(true);
    expect(s.mayServe('c')).toBe(false);
    expect(s.mayServe('a')).toBe(true);
  });

  it('a free slot goes to the session that has waited longest, unless it stopped asking', () => {
    const { clock, slots: s } = slots(1);
    expect(s.mayServe('a')).toBe(true);
    expect(s.mayServe('c')).toBe(false);
    expect(s.mayServe('d')).toBe(false);
    // a stops pulling: its slot frees once it has been idle for SERVE_IDLE_MS.
    clock.now += SERVE_IDLE_MS / 2;
    expect(s.mayServe('c')).toBe(false);
    expect(s.mayServe('d')).toBe(false);
    clock.now += SERVE_IDLE_MS / 2 + 1;
    expect(s.mayServe('d')).toBe(false);
    expect(s.mayServe('c')).toBe(true);
    // d waited behind c; c stops pulling and d gets the slot.
    clock.now += SERVE_IDLE_MS + 1;
    expect(s.mayServe('d')).toBe(true);
    // e waits, then stops asking: it loses its place and does not hold the slot back.
    expect(s.mayServe('e')).toBe(false);
    clock.now += SERVE_IDLE_MS + 1;
    expect(s.mayServe('f')).toBe(true);
  });

  it(`answers a session busy beyond ${MAX_PULLS_PER_WINDOW} pulls per window, keeping its slot`, () => {
    const { clock, slots: s } = slots(1);
    for (let i = 0; i < MAX_PULLS_PER_WINDOW; i++) expect(s.mayServe('a')).toBe(true);
    expect(s.mayServe('a')).toBe(false);
    expect(s.mayServe('a')).toBe(false);
    // The busy answers kept a's slot: alone, it is served again in the next window.
    clock.now += SERVE_RATE_WINDOW_MS;
    expect(s.mayServe('a')).toBe(true);
  });
});
