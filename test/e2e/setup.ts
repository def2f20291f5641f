/**
 * Shared by the e2e test files: prerequisites (root, tools, firmware files; failing under CI=true like
 * `haveTools`, skipping elsewhere) and the build artifacts, made once per test process.
 */
import type { TestContext } from 'node:test';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { haveTools, IN_CI } from '../helpers/tools.js';
import { NetLab } from '../helpers/netns.js';
import { E2E_TOOLS, buildArtifacts, missingFiles, type Artifacts } from './artifacts.js';
import { createTopology, EXPORT_NAME, SERVER_ADDRESS, type Topology } from './stacks.js';
import { addTap } from './vm.js';

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

/**
 * A describe block's VM workspace: one temporary folder (kept with E2E_KEEP), one namespace topology made on
 * first use, numbered taps; `destroy` (in `after`) tears the topology down and removes the folder.
 */
export function e2eWorkspace(prefix: string, topologyTag: string): {
  setup(name: string): Promise<{ art: Artifacts; topo: Topology; dir: string }>;
  tap(topo: Topology): Promise<string>;
  destroy(): Promise<void>;
} {
  let workDir: string | undefined;
  let topo: Topology | undefined;
  let taps = 0;
  const work = (): string => (workDir ??= mkdtempSync(join(tmpdir(), prefix)));
  return {
    async setup(name) {
      const art = await sharedArtifacts();
      topo ??= await createTopology(topologyTag, work());
      const dir = join(work(), name);
      mkdirSync(dir, { recursive: true });
      return { art, topo, dir };
    },
    tap: (t) => addTap(t.lab, `tap${taps++}`),
    async destroy() {
      await topo?.destroy();
      if (!workDir) return;
      if (process.env.E2E_KEEP) console.log(`[e2e] kept ${workDir} (E2E_KEEP)`);
      else rmSync(workDir, { recursive: true, force: true });
    },
  };
}
