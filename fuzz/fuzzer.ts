/**
 * The fuzz loop. Each input is one frame (or a few) sent to the victim in one of three places:
 * as the first frame of a stream from a stranger, as the first frame of a stream from the
 * member, or inside a running session of the member (after a real hello). The oracle, per input:
 *
 * - nothing crashes: no exception or rejection escapes (process hooks), no error is untyped
 *   (`INTERNAL`), and the victim finishes with every input (a probe after it is answered, or
 *   the stream ends) within a generous deadline;
 * - a refused input (the victim ended the stream with an error) is reported as one typed
 *   session error, counted by code, and left storage untouched: no row of any table written
 *   (`CoreLibrary.writes`), both vectors unchanged;
 * - an accepted input may change storage only if it is a valid message of the member (a change
 *   it is entitled to relay); its digest and vectors become the new baseline, checked again by a
 *   full digest every `DIGEST_EVERY` inputs and at the end.
 */
import { NetworkError, SyncError } from '../src/errors.js';
import { decodeMessage, encodeMessage } from '../src/protocol/codec.js';
import { type Message, PROTOCOL_VERSION } from '../src/protocol/messages.js';
import { SeededRandom } from '../src/sim/prng.js';
import type { CoreLibrary } from './core-node.js';
import type { FrameStream, Transport } from '../src/protocol/transport.js';
import { Mutator } from './mutate.js';
import { type FuzzTarget, startFuzzTarget, uuidFrom } from './target.js';

const DIGEST_EVERY = 2_000;
/** An input the victim has not finished with after this long is a hang. */
const INPUT_DEADLINE_MS = 20_000;

export type Place = 'stranger-first' | 'member-first' | 'member-session';

export interface Finding {
  input: number;
  place: Place;
  how: string;
  problem: string;
  /** The frame, base64, to replay it. */
  frame: string;
}

export interface FuzzStats {
  seed: number;
  inputs: number;
  byPlace: Record<Place, number>;
  /** Inputs after which the victim ended the stream with an error, by code. */
  closedByCode: Record<string, number>;
  /** Inputs that changed stored data (valid changes of the member). */
  applied: number;
  /** The victim's protocol-error counter at the end (bad input, counted). */
  protocolErrors: number;
  findings: Finding[];
  elapsedMs: number;
}

interface State {
  writes: string[];
  vectors: string;
}

/** A running session of the member with the victim, driven frame by frame. */
class MemberSession {
  ended = false;
  /** The victim's error frame, if it sent one. */
  refusal: string | undefined;
  /** The request id of the last pull the victim sent (a page input may answer it). */
  lastPull: number | undefined;
  private readonly waiters = new Map<number, () => void>();
  private opened: (() => void) | undefined;
  private probeReq = 2 ** 50;

  constructor(
    readonly stream: FrameStream,
    readonly library: CoreLibrary,
  ) {}

  static async open(member: Transport, target: FuzzTarget, library: CoreLibrary): Promise<MemberSession> {
    const session = new MemberSession(await member.openStream(target.victim.peer), library);
    const opened = new Promise<void>((resolve) => (session.opened = resolve));
    void session.read();
    const lib = library.engine;
    await session.stream.send(
      encodeMessage({
        t: 'hello',
        v: [...PROTOCOL_VERSION],
        library: lib.id,
        device: target.member.device,
        shared: lib.versionVector(),
        owned: lib.ownedVector(),
      }),
    );
    await opened;
    if (session.ended) throw new Error(`the victim refused the member session: ${session.refusal ?? 'no error frame'}`);
    return session;
  }

  /** Sends `frame`, then a pull as a probe: its answer (or the stream's end) means the victim handled the frame. */
  async feed(frame: Uint8Array): Promise<void> {
    await this.stream.send(frame).catch(() => undefined);
    const req = ++this.probeReq;
    const answered = new Promise<void>((resolve) => this.waiters.set(req, resolve));
    const lib = this.library.engine;
    await this.stream
      .send(encodeMessage({ t: 'pull-state', library: lib.id, req, owner: lib.deviceId, after: 2 ** 52, maxRecords: 1, maxBytes: 1 }))
      .catch(() => undefined);
    if (!this.ended) await answered;
    this.waiters.delete(req);
  }

  private async read(): Promise<void> {
    try {
      for await (const frame of this.stream.frames()) {
        const message = decodeMessage(frame);
        if (message.t === 'hello') this.opened?.();
        else if (message.t === 'error') this.refusal = `${message.code}: ${message.message}`;
        else if (message.t === 'pull-shared' || message.t === 'pull-state' || message.t === 'pull-snapshot') this.lastPull = message.req;
        else if ('req' in message && message.req !== null) this.waiters.get(message.req)?.();
      }
    } catch {
      // Reset by the victim: `ended` says so.
    }
    this.ended = true;
    this.opened?.();
    for (const wake of this.waiters.values()) wake();
  }
}

export class Fuzzer {
  private readonly rng: SeededRandom;
  private readonly mutator: Mutator;
  private session: MemberSession | undefined;
  private reopened = false;
  /** Transports of the member's PeerId and of a few strangers, for the fuzzer's streams. */
  private readonly member: Transport;
  private readonly strangers: Transport[];
  private readonly escaped: Error[] = [];
  private readonly onEscape = (err: unknown) => this.escaped.push(err instanceof Error ? err : new Error(String(err)));

  private constructor(
    readonly target: FuzzTarget,
    readonly seed: number,
    rng: SeededRandom,
  ) {
    this.rng = rng;
    this.mutator = new Mutator(rng.fork(), target.corpus, { uuids: target.uuids });
    // A few stranger PeerIds, so that handshake budgets per peer come into play too.
    this.strangers = Array.from({ length: 8 }, () => target.hub.transport(`peer-s-${uuidFrom(rng)}`));
    this.member = target.hub.transport(target.member.peer);
  }

  static async start(seed: number): Promise<Fuzzer> {
    const rng = new SeededRandom(seed);
    return new Fuzzer(await startFuzzTarget(rng.fork()), seed, rng);
  }

  async stop(): Promise<void> {
    this.session?.stream.abort(new NetworkError('fuzzer stopped'));
    await this.target.stop();
  }

  /** Runs `inputs` inputs; `progress` hears the running stats now and then. */
  async run(inputs: number, progress?: (stats: FuzzStats) => void): Promise<FuzzStats> {
    const started = Date.now();
    const stats: FuzzStats = {
      seed: this.seed,
      inputs: 0,
      byPlace: { 'stranger-first': 0, 'member-first': 0, 'member-session': 0 },
      closedByCode: {},
      applied: 0,
      protocolErrors: 0,
      findings: [],
      elapsedMs: 0,
    };
    process.on('uncaughtException', this.onEscape);
    process.on('unhandledRejection', this.onEscape);
    try {
      let digests = await this.digests();
      let state = await this.state();
      for (let i = 0; i < inputs; i++) {
        const { frame, how } = this.mutator.next();
        const place = this.rng.pick<Place>(['stranger-first', 'member-first', 'member-session', 'member-session', 'member-session']);
        const library = this.rng.pick(this.target.libraries);
        const errorsBefore = this.target.sessionErrors.length;
        const found = (problem: string) =>
          stats.findings.push({ input: i, place, how, problem, frame: Buffer.from(frame).toString('base64') });
        const refused = await this.withDeadline(this.feed(place, library, this.answering(frame)), () => found('hang: the victim did not finish with the input'));
        stats.inputs += 1;
        stats.byPlace[place] += 1;
        const events = this.target.sessionErrors.slice(errorsBefore);
        for (const { error } of events) {
          const code = error instanceof SyncError ? error.code : 'UNTYPED';
          stats.closedByCode[code] = (stats.closedByCode[code] ?? 0) + 1;
          if (code === 'UNTYPED' || code === 'INTERNAL') found(`untyped error: ${error.stack ?? error.message}`);
        }
        if (refused && place !== 'stranger-first' && events.length === 0 && !this.closedWithoutError(frame)) {
          found('the session ended without a reported error');
        }
        for (const err of this.escaped.splice(0)) found(`escaped: ${err.stack ?? err.message}`);
        const after = await this.state();
        if (!sameState(after, state)) {
          if (!this.reopened && (refused || place === 'stranger-first' || !isValid(frame))) {
            found(`storage changed by a refused or invalid input (${describeChange(state, after)})`);
          } else {
            stats.applied += 1;
          }
          // The new state is the baseline, also after a finding (else every check after it repeats it).
          digests = await this.digests();
          state = after;
        }
        if ((i + 1) % DIGEST_EVERY === 0 || i === inputs - 1) {
          const now = await this.digests();
          if (now !== digests) found('digest changed without any write');
          digests = now;
          stats.elapsedMs = Date.now() - started;
          progress?.(stats);
        }
        if (stats.findings.length > 100) break;
      }
    } finally {
      process.off('uncaughtException', this.onEscape);
      process.off('unhandledRejection', this.onEscape);
    }
    stats.protocolErrors = (await this.target.libraries[0]!.library.status()).protocolErrors;
    stats.elapsedMs = Date.now() - started;
    return stats;
  }

  /**
   * A page input answers the victim's last pull now and then (else it names an unknown request).
   * A member's `REMOVED` refusal is believed by design (docs/protocol.md, "Removal and leave"):
   * it would end the victim's sync of the library for good, so the fuzzer sends `PROTOCOL` instead.
   */
  private answering(frame: Uint8Array): Uint8Array {
    const pull = this.session?.lastPull;
    try {
      const message = decodeMessage(frame);
      if (message.t === 'error' && message.code === 'REMOVED') return encodeMessage({ ...message, code: 'PROTOCOL' });
      if (pull === undefined || !this.rng.chance(0.5)) return frame;
      if (message.t === 'shared-page' || message.t === 'state-page' || message.t === 'snapshot-page' || message.t === 'busy') {
        return encodeMessage({ ...message, req: pull } as Message);
      }
    } catch {
      // Not a valid message: sent as it is.
    }
    return frame;
  }

  /**
   * Feeds one input; resolves with whether the victim ended the stream (refused it). A member
   * session (re)opened for the input is a valid hello of the member: what the victim writes
   * because of it (a confirmation of its writer or rows) counts as accepted (`reopened`).
   */
  private async feed(place: Place, library: CoreLibrary, frame: Uint8Array): Promise<boolean> {
    this.reopened = false;
    if (place === 'member-session') {
      if (!this.session || this.session.ended || this.session.library !== library) {
        this.session?.stream.abort(new NetworkError('fuzzer moves on'));
        this.session = await MemberSession.open(this.member, this.target, library);
        this.reopened = true;
      }
      await this.session.feed(frame);
      return this.session.ended;
    }
    const from = place === 'member-first' ? this.member : this.rng.pick(this.strangers);
    const stream = await from.openStream(this.target.victim.peer);
    let refused = false;
    const done = (async () => {
      try {
        for await (const _ of stream.frames());
      } catch {
        refused = true;
      }
    })();
    await stream.send(frame).catch(() => undefined);
    await stream.close();
    await done;
    return refused;
  }

  /** An `error` message from the member ends its session with the peer's error (reported, not bad input). */
  private closedWithoutError(frame: Uint8Array): boolean {
    try {
      return decodeMessage(frame).t === 'error';
    } catch {
      return false;
    }
  }

  private async withDeadline(work: Promise<boolean>, onHang: () => void): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const hang = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => {
        onHang();
        resolve(true);
      }, INPUT_DEADLINE_MS);
    });
    try {
      return await Promise.race([work, hang]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async state(): Promise<State> {
    const libs = this.target.libraries;
    return {
      writes: await Promise.all(libs.map((core) => core.writes())),
      vectors: JSON.stringify(libs.map((core) => [core.engine.versionVector(), core.engine.ownedVector()])),
    };
  }

  private async digests(): Promise<string> {
    return (await Promise.all(this.target.libraries.map((core) => core.library.digest()))).join(',');
  }
}

function sameState(a: State, b: State): boolean {
  return a.vectors === b.vectors && a.writes.every((n, i) => n === b.writes[i]);
}

function isValid(frame: Uint8Array): boolean {
  try {
    decodeMessage(frame);
    return true;
  } catch {
    return false;
  }
}

/** What changed between two states, for a report. */
function describeChange(before: State, after: State): string {
  if (before.vectors !== after.vectors) return `vectors ${before.vectors} -> ${after.vectors}`;
  const counts = (line: string) => new Map(line.split(' ').filter(Boolean).map((p) => p.split(':') as [string, string]));
  return after.writes
    .flatMap((line, i) => {
      const was = counts(before.writes[i] ?? '');
      return [...counts(line)].filter(([table, n]) => was.get(table) !== n).map(([table, n]) => `library ${i} ${table} ${was.get(table) ?? 0} -> ${n}`);
    })
    .join(', ');
}
