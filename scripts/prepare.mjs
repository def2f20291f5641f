#!/usr/bin/env node
// `npm prepare`: builds dist/ with TypeScript. `npm install -g .` on a fresh clone links this folder without
// installing its dependencies first, so when the compiler is missing they are installed here (from the lock
// file, scripts off), then the build runs: the linked `netbootd` works instead of pointing at nothing.
import { existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
// The nested npm installs into this folder, not globally as the outer `npm install -g` does.
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_config_(global|prefix|location)$/i.test(k)));
const run = (cmd, args) => execFileSync(cmd, args, { cwd: root, stdio: 'inherit', env });
if (!existsSync(join(root, 'node_modules', 'typescript', 'bin', 'tsc'))) {
  console.error('netbootd: installing the build tools and dependencies first (npm ci)');
  run(npm, ['ci', '--ignore-scripts', '--no-audit', '--no-fund']);
}
run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json']);
