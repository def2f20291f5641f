/**
 * Runs the Pi bootloader replay (test/e2e/pi-client.ts) inside a client namespace and parses its one-line
 * JSON report.
 */
import { join } from 'node:path';
import type { NetHost, NetLab } from '../helpers/netns.js';
import { E2E_ROOT } from './artifacts.js';
import type { PiJob, PiReport } from './pi-client.js';

export async function runPiClient(
  lab: NetLab,
  host: NetHost,
  name: string,
  job: Omit<PiJob, 'ifname' | 'outDir'>,
  outDir: string,
  timeoutMs: number,
): Promise<{ r: PiReport; out: string; ms: number }> {
  const full: PiJob = { ...job, ifname: 'eth0', outDir };
  const t0 = performance.now();
  const res = await lab.exec(host, process.execPath, ['--import', 'tsx', join(E2E_ROOT, 'test/e2e/pi-client.ts'), JSON.stringify(full)], {
    cwd: E2E_ROOT,
    timeoutMs,
    allowFail: true,
  });
  const line = res.stdout.toString().trim().split('\n').pop() ?? '';
  try {
    return { r: JSON.parse(line) as PiReport, out: outDir, ms: performance.now() - t0 };
  } catch {
    throw new Error(`${name}: pi-client printed ${line.slice(0, 300)}; stderr ${res.stderr.slice(0, 1000)}`);
  }
}
