/**
 * Shared by the e2e test files: prerequisites (root, tools, firmware files; failing under CI=true like
 * `haveTools`, skipping elsewhere) and the build artifacts, made once per test process.
 */
import type { TestContext } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { haveTools, IN_CI } from '../helpers/tools.js';
import { NetLab } from '../helpers/netns.js';
import { E2E_TOOLS, buildArtifacts, missingFiles, type Artifacts } from './artifacts.js';
import { EXPORT_NAME, SERVER_ADDRESS } from './stacks.js';

/** Per-boot limit (TCG on 2 shared cores boots in ~50 s; generous but bounded). */
export const BOOT_TIMEOUT_MS = Number(process.env.E2E_BOOT_TIMEOUT_MS ?? 240_000);

/** True when the e2e boots can run here; otherwise skips the test (fails it under CI=true). */
export function e2eReady(t: TestContext, extraTools: string[] = []): boolean {
  if (!NetLab.available()) {
    const msg = 'e2e boots need root (network namespaces, taps) and iproute2';
    if (IN_CI) throw new Error(msg);
    t.skip(msg);
    return false;
  }
  if (!haveTools(t, ...E2E_TOOLS, 'ss', ...extraTools)) return false;
  const missing = missingFiles();
  if (missing.length) {
    const msg = `missing firmware/boot loader files: ${missing.join(', ')} (run scripts/install-test-deps.sh)`;
    if (IN_CI) throw new Error(msg);
    t.skip(msg);
    return false;
  }
  return true;
}

let built: Promise<Artifacts> | undefined;
let buildDir: string | undefined;

/** Kernel + initramfs + pristine PC image, built once per process into a temp folder removed at exit. */
export function sharedArtifacts(): Promise<Artifacts> {
  if (!built) {
    buildDir = mkdtempSync(join(tmpdir(), 'netbootd-e2e-build-'));
    const dir = buildDir;
    process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
    built = buildArtifacts(dir, { serverAddress: SERVER_ADDRESS, exportName: EXPORT_NAME });
  }
  return built;
}

/** Prints a line in the test output (wall times) and attaches it to the test as a diagnostic. */
export function report(t: TestContext, line: string): void {
  console.log(`[e2e] ${line}`);
  t.diagnostic(line);
}
