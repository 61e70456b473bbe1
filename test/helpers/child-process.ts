/**
 * Helpers for tests that run the package in a child process: make sure the built package
 * (dist/) is current, spawn a child that speaks line-delimited stdout, wait for its lines
 * event-driven with a deadline (no sleeps), kill it, and manage temporary directories.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const DIST_ENTRY = join(REPO_ROOT, 'dist', 'index.js');

async function mtimeOrUndefined(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).mtimeMs;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Why dist/ cannot be used as is, or undefined when every src file has a newer dist output. */
async function distStaleness(): Promise<string | undefined> {
  const srcRoot = join(REPO_ROOT, 'src');
  const sources = (await readdir(srcRoot, { recursive: true }))
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
    .map((f) => join(srcRoot, f));
  for (const source of sources) {
    const output = join(REPO_ROOT, 'dist', relative(srcRoot, source)).replace(/\.ts$/, '.js');
    const [srcTime, outTime] = await Promise.all([stat(source).then((s) => s.mtimeMs), mtimeOrUndefined(output)]);
    if (outTime === undefined) return `${relative(REPO_ROOT, output)} is missing`;
    if (srcTime > outTime) return `${relative(REPO_ROOT, source)} is newer than its build output`;
  }
  return undefined;
}

let building: Promise<string> | undefined;

/**
 * Returns the path of the built entry point (dist/index.js), running the package's build
 * (`tsc -p tsconfig.build.json`, what `npm run build` runs) first if any output is missing or
 * older than its source. Node 20 cannot run TypeScript, so child processes use the build.
 */
export function ensureBuilt(): Promise<string> {
  building ??= (async () => {
    const reason = await distStaleness();
    if (reason !== undefined) {
      const tsc = join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
      await new Promise<void>((resolve, reject) => {
        execFile(
          process.execPath,
          [tsc, '-p', 'tsconfig.build.json'],
          { cwd: REPO_ROOT, timeout: 180_000, maxBuffer: 16 * 1024 * 1024 },
          (err, stdout, stderr) =>
            err ? reject(new Error(`build failed (${reason}):\n${stdout}${stderr}`)) : resolve(),
        );
      });
      const still = await distStaleness();
      if (still !== undefined) throw new Error(`dist is still stale after building: ${still}`);
    }
    return DIST_ENTRY;
  })();
  return building;
}

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const running = new Set<LineChild>();

/**
 * A child process whose stdout is read as lines. Every complete line is handed to `onLine` as
 * it arrives; `waitFor` resolves as soon as a condition holds after some line, so tests react to
 * events instead of sleeping. A throw from `onLine` fails every pending and later `waitFor`.
 */
export class LineChild {
  readonly proc: ChildProcess;
  /** Resolves once the process has exited and its stdout/stderr are fully read. */
  readonly closed: Promise<ChildExit>;
  exit: ChildExit | undefined;
  /** Bytes after the last newline when stdout closed (a line cut off mid-write). */
  trailing = '';
  private stdoutBuffer = '';
  private stderrText = '';
  private failure: unknown;
  private readonly listeners = new Set<() => void>();

  /**
   * `prefix` runs node through another command, e.g. `['ip', 'netns', 'exec', ns]` to run the
   * child inside a network namespace (that command must exec node, so signals reach it).
   */
  constructor(
    script: string,
    args: readonly string[],
    private readonly onLine: (line: string) => void,
    options: { prefix?: readonly string[] } = {},
  ) {
    const [command, ...rest] = [...(options.prefix ?? []), process.execPath, script, ...args];
    this.proc = spawn(command!, rest, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(this);
    this.proc.stdout!.setEncoding('utf8');
    this.proc.stderr!.setEncoding('utf8');
    this.proc.stdout!.on('data', (chunk: string) => this.receive(chunk));
    this.proc.stderr!.on('data', (chunk: string) => {
      this.stderrText += chunk;
    });
    this.closed = new Promise((resolve) => {
      const done = (exit: ChildExit) => {
        if (this.exit) return;
        running.delete(this);
        this.trailing = this.stdoutBuffer;
        this.stdoutBuffer = '';
        this.exit = exit;
        this.notify();
        resolve(exit);
      };
      this.proc.once('close', (code, signal) => done({ code, signal }));
      this.proc.once('error', (err) => {
        this.failure ??= err;
        done({ code: null, signal: null });
      });
    });
  }

  get pid(): number {
    return this.proc.pid!;
  }

  get stderr(): string {
    return this.stderrText;
  }

  /**
   * Resolves once `condition()` is true (checked now and after every line). Rejects if the child
   * exits first, if a line handler threw, or when `timeoutMs` passes.
   */
  waitFor(condition: () => boolean, what: string, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const finish = (err?: Error) => {
        clearTimeout(timer);
        this.listeners.delete(check);
        if (err) reject(err);
        else resolve();
      };
      const check = () => {
        if (this.failure !== undefined) return finish(asError(this.failure));
        if (condition()) return finish();
        if (this.exit) {
          return finish(
            new Error(`child ${this.pid} exited (${JSON.stringify(this.exit)}) before ${what}; stderr:\n${this.stderrText}`),
          );
        }
      };
      const timer = setTimeout(
        () => finish(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; stderr:\n${this.stderrText}`)),
        timeoutMs,
      );
      this.listeners.add(check);
      check();
    });
  }

  /** Sends `signal` (SIGKILL by default) and resolves when the child is gone and drained. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<ChildExit> {
    if (!this.exit) this.proc.kill(signal);
    const exit = await this.closed;
    if (this.failure !== undefined) throw asError(this.failure);
    return exit;
  }

  private receive(chunk: string): void {
    this.stdoutBuffer += chunk;
    let newline: number;
    while ((newline = this.stdoutBuffer.indexOf('\n')) >= 0) {
      const line = this.stdoutBuffer.slice(0, newline);
      this.stdoutBuffer = this.stdoutBuffer.slice(newline + 1);
      if (line === '' || this.failure !== undefined) continue;
      try {
        this.onLine(line);
      } catch (err) {
        this.failure = err;
      }
    }
    this.notify();
  }

  private notify(): void {
    for (const listener of [...this.listeners]) listener();
  }
}

function asError(value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value));
}

/** Kills (SIGKILL) every child started through `LineChild` that is still running. */
export async function killRunningChildren(): Promise<void> {
  await Promise.all([...running].map((child) => child.kill().catch(() => undefined)));
}

const tempDirs = new Set<string>();

/** A fresh directory under the OS temp dir; removed by `removeTempDirs`. */
export async function makeTempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `${prefix}-`));
  tempDirs.add(dir);
  return dir;
}

export async function removeTempDirs(): Promise<void> {
  await Promise.all(
    [...tempDirs].map(async (dir) => {
      tempDirs.delete(dir);
      await rm(dir, { recursive: true, force: true });
    }),
  );
}
