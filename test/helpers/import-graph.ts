import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

/** One import (or re-export, type-only ones and `import('…')` types included) of a source file. */
export interface ImportEdge {
  /** What the file names, as written (`node:fs`, `../errors.js`). */
  readonly specifier: string;
  /** For a relative import: the imported source file, relative to the repository (`src/errors.ts`). */
  readonly target: string | undefined;
}

/** Every module specifier a TypeScript source names: imports, re-exports, `import type`, `import()`. */
export function specifiersOf(source: string): string[] {
  return ts.preProcessFile(source, true, true).importedFiles.map((file) => file.fileName);
}

const REPO = fileURLToPath(new URL('../..', import.meta.url));

/** `.ts` files under `dir` (relative to the repository), as repository-relative paths, sorted. */
export function sourceFiles(dir = 'src'): string[] {
  const found: string[] = [];
  const walk = (relative: string) => {
    for (const entry of fs.readdirSync(path.join(REPO, relative), { withFileTypes: true })) {
      const child = path.posix.join(relative, entry.name);
      if (entry.isDirectory()) walk(child);
      else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) found.push(child);
    }
  };
  walk(dir);
  return found.sort();
}

/** The file a relative specifier of `from` names (`./x.js` is the source `./x.ts`). */
function resolveRelative(from: string, specifier: string): string {
  const joined = path.posix.normalize(path.posix.join(path.posix.dirname(from), specifier));
  const asTs = joined.replace(/\.js$/, '.ts');
  if (fs.existsSync(path.join(REPO, asTs))) return asTs;
  const index = path.posix.join(joined, 'index.ts');
  if (fs.existsSync(path.join(REPO, index))) return index;
  throw new Error(`${from}: cannot resolve import ${JSON.stringify(specifier)}`);
}

/**
 * The import graph of every source file under `dir`: file -> its imports. Relative imports are
 * resolved to files (an unresolvable one throws, so a rule never passes by missing an edge).
 */
export function importGraph(dir = 'src'): Map<string, ImportEdge[]> {
  const graph = new Map<string, ImportEdge[]>();
  for (const file of sourceFiles(dir)) {
    const source = fs.readFileSync(path.join(REPO, file), 'utf8');
    graph.set(
      file,
      specifiersOf(source).map((specifier) => ({
        specifier,
        target: specifier.startsWith('.') ? resolveRelative(file, specifier) : undefined,
      })),
    );
  }
  return graph;
}
