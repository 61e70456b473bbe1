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
});
