/** Loads the hex fixtures under test/dhcp/fixtures/ (`#` comment lines, whitespace ignored). */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/tools.js';

export function loadHex(name: string): Buffer {
  const text = readFileSync(join(REPO_ROOT, 'test/dhcp/fixtures', name), 'utf8');
  const hex = text
    .split('\n')
    .filter((l) => !l.trimStart().startsWith('#'))
    .join('')
    .replace(/\s+/g, '');
  if (!/^([0-9a-fA-F]{2})*$/.test(hex)) throw new Error(`${name}: not hex`);
  return Buffer.from(hex, 'hex');
}

export const FIXTURES = ['pi3-discover.hex', 'pi4-discover.hex', 'ipxe-bios-discover.hex', 'ovmf-uefi-discover.hex'] as const;
