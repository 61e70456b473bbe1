import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);

describe('README usage example', () => {
  it('is the file examples/quickstart.mjs, verbatim', () => {
    const readme = readFileSync('README.md', 'utf8');
    const example = readFileSync('examples/quickstart.mjs', 'utf8');
    expect(readme).toContain('```js\n' + example + '```');
  });

  it('runs against the built package and prints the merged note', async () => {
    const { stdout } = await run(process.execPath, ['examples/quickstart.mjs']);
    expect(stdout).toContain("body: 'milk, bread'");
    expect(stdout).toContain('change location upsert local');
    expect(stdout).toMatch(/digest [0-9a-f]{64}/);
  });
});
