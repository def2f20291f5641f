#!/usr/bin/env node
// Runs the TypeScript test files under the given folders with Node's own test runner (tsx as loader).
// Usage: node scripts/run-tests.mjs [DIR|FILE]... [--exclude NAME]... [-- extra node --test flags]
// Node 20's `--test` does not expand globs nor find .ts files, hence this finder.
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawn } from 'node:child_process';

const args = process.argv.slice(2);
const roots = [];
const exclude = new Set();
const extra = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--exclude') exclude.add(args[++i]);
  else if (args[i] === '--') { extra.push(...args.slice(i + 1)); break; }
  else roots.push(args[i]);
}
if (roots.length === 0) roots.push('test');

function walk(p, out) {
  const st = statSync(p);
  if (st.isFile()) { if (p.endsWith('.test.ts')) out.push(p); return; }
  for (const name of readdirSync(p).sort()) {
    if (exclude.has(name) || name === 'node_modules' || name.startsWith('.')) continue;
    walk(join(p, name), out);
  }
}
const files = [];
for (const r of roots) walk(r, files);
if (files.length === 0) {
  console.error(`run-tests: no *.test.ts files under ${roots.join(', ')}`);
  process.exit(1);
}
const reporter = process.env.TEST_REPORTER ?? 'spec';
const child = spawn(process.execPath, [
  '--import', 'tsx', '--test', `--test-reporter=${reporter}`, ...extra,
  ...files.map((f) => relative(process.cwd(), f)),
], { stdio: 'inherit' });
child.on('exit', (code, signal) => process.exit(signal ? 1 : code ?? 1));
