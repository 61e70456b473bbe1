import { builtinModules } from 'node:module';
import { describe, expect, it } from 'vitest';
import { type ImportEdge, importGraph, specifiersOf } from './helpers/import-graph.js';

/**
 * The edges: the only places that may use Node, the SQLite driver or libp2p. `src/index.ts` is
 * the Node package's entry point, which exports the Node edge's `createSyncNode`.
 */
const EDGE_FOLDERS = ['src/node/', 'src/network/'];
const EDGE_FILES = ['src/index.ts'];

const isEdge = (file: string) => EDGE_FILES.includes(file) || EDGE_FOLDERS.some((folder) => file.startsWith(folder));

const BUILTINS = new Set(builtinModules);
const DRIVERS = ['better-sqlite3', 'libp2p'];
const DRIVER_SCOPES = ['@libp2p/', '@chainsafe/', '@multiformats/'];

/** Why the core may not import this, or undefined when it may. */
function edgeOnly(edge: ImportEdge): string | undefined {
  const { specifier, target } = edge;
  if (specifier.startsWith('node:') || BUILTINS.has(specifier)) return 'a Node built-in';
  if (DRIVERS.some((d) => specifier === d || specifier.startsWith(`${d}/`))) return 'a driver';
  if (DRIVER_SCOPES.some((scope) => specifier.startsWith(scope))) return 'a libp2p package';
  if (target !== undefined && isEdge(target)) return 'an edge module';
  return undefined;
}

describe('import rules', () => {
  it('the walker sees every kind of import, type-only ones included', () => {
    const source = [
      "import type { Stats } from 'node:fs';",
      "import { type Libp2p } from 'libp2p';",
      "export type { PeerId } from '@libp2p/interface';",
      "export * from './x.js';",
      "let t: typeof import('better-sqlite3');",
    ].join('\n');
    expect(specifiersOf(source)).toEqual(['node:fs', 'libp2p', '@libp2p/interface', './x.js', 'better-sqlite3']);
  });

  it('outside the edges (src/node, src/network) no file imports node:*, a SQLite driver, libp2p or an edge module', () => {
    const graph = importGraph('src');
    expect(graph.size).toBeGreaterThan(50);
    const violations: string[] = [];
    for (const [file, edges] of graph) {
      if (isEdge(file)) continue;
      for (const edge of edges) {
        const why = edgeOnly(edge);
        if (why) violations.push(`${file} imports ${edge.specifier} (${why})`);
      }
    }
    expect(violations).toEqual([]);
  });

  it('no import cycle anywhere in src (type-only imports included)', () => {
    const graph = importGraph('src');
    expect(graph.size).toBeGreaterThan(50);
    expect(importCycles(graph)).toEqual([]);
  });
});

/**
 * The import cycles of `graph`, each printed as the files around it (`a.ts -> b.ts -> a.ts`):
 * one per strongly connected set of files that import each other (Tarjan's algorithm), walked
 * from its first file back to itself.
 */
function importCycles(graph: ReadonlyMap<string, readonly ImportEdge[]>): string[] {
  const next = (file: string) => [...new Set((graph.get(file) ?? []).flatMap((e) => (e.target === undefined ? [] : [e.target])))];
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[] = [];
  const visit = (file: string) => {
    index.set(file, index.size);
    low.set(file, index.get(file)!);
    stack.push(file);
    onStack.add(file);
    for (const target of next(file)) {
      if (!index.has(target)) {
        visit(target);
        low.set(file, Math.min(low.get(file)!, low.get(target)!));
      } else if (onStack.has(target)) {
        low.set(file, Math.min(low.get(file)!, index.get(target)!));
      }
    }
    if (low.get(file) !== index.get(file)) return;
    const members = new Set<string>();
    for (let top = stack.pop()!; ; top = stack.pop()!) {
      onStack.delete(top);
      members.add(top);
      if (top === file) break;
    }
    if (members.size > 1 || next(file).includes(file)) cycles.push(cycleThrough(file, members, next).join(' -> '));
  };
  for (const file of graph.keys()) if (!index.has(file)) visit(file);
  return cycles;
}

/** A path from `start` back to itself inside `members` (breadth first: the shortest). */
function cycleThrough(start: string, members: ReadonlySet<string>, next: (file: string) => string[]): string[] {
  const cameFrom = new Map<string, string>();
  const queue = [start];
  while (queue.length > 0) {
    const file = queue.shift()!;
    for (const target of next(file)) {
      if (!members.has(target)) continue;
      if (target === start) {
        const between: string[] = [];
        for (let at = file; at !== start; at = cameFrom.get(at)!) between.unshift(at);
        return [start, ...between, start];
      }
      if (!cameFrom.has(target)) {
        cameFrom.set(target, file);
        queue.push(target);
      }
    }
  }
  return [start];
}
