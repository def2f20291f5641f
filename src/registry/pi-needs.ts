/**
 * What each Pi model's firmware needs in its boot partition (pure: root file names and config.txt in,
 * what is missing out), for `netbootd check`. From the Raspberry Pi documentation (boot folder contents,
 * config.txt `kernel`, `device_tree`, `os_prefix`) and the bootloaders' TFTP requests:
 * - Pi 3 (boot ROM network boot): bootcode.bin (at the TFTP root), start.elf, fixup.dat, a kernel
 *   (kernel8.img, kernel7.img or kernel.img) and a bcm2710/bcm2837 DTB;
 * - Pi 4/400/CM4: start4.elf, fixup4.dat, a kernel (kernel8.img, kernel7l.img) and a bcm2711 DTB;
 * - Pi 5/500/CM5: no start*.elf/fixup*.dat (the EEPROM runs the firmware itself and never asks for them),
 *   config.txt, a kernel (kernel_2712.img or kernel8.img) and a bcm2712 DTB.
 * A `kernel=` line of config.txt replaces the default kernel names; `os_prefix` moves kernel and DTBs.
 */

export type PiFamilyNumber = 3 | 4 | 5;

const NEEDS: Record<PiFamilyNumber, { files: string[]; kernels: string[]; dtb: RegExp; dtbName: string }> = {
  3: { files: ['bootcode.bin', 'start.elf', 'fixup.dat', 'config.txt', 'cmdline.txt'], kernels: ['kernel8.img', 'kernel7.img', 'kernel.img'], dtb: /^bcm(2710|2837)-.*\.dtb$/i, dtbName: 'bcm2710-rpi-3-b*.dtb' },
  4: { files: ['start4.elf', 'fixup4.dat', 'config.txt', 'cmdline.txt'], kernels: ['kernel8.img', 'kernel7l.img'], dtb: /^bcm2711-.*\.dtb$/i, dtbName: 'bcm2711-rpi-4-b.dtb (or -400, -cm4)' },
  5: { files: ['config.txt', 'cmdline.txt'], kernels: ['kernel_2712.img', 'kernel8.img'], dtb: /^bcm2712.*\.dtb$/i, dtbName: 'bcm2712-rpi-5-b.dtb (or -500, -cm5)' },
};

/** config.txt settings that move the kernel or DTBs (the last one wins; conditional sections are not evaluated). */
function settings(configTxt: string | null): { kernel?: string; osPrefix?: string; deviceTree?: string } {
  const out: { kernel?: string; osPrefix?: string; deviceTree?: string } = {};
  for (const raw of (configTxt ?? '').split(/\r?\n/)) {
    const line = raw.replace(/#.*$/, '').trim();
    const m = /^(kernel|os_prefix|device_tree)\s*=\s*(\S+)$/.exec(line);
    if (!m) continue;
    if (m[1] === 'kernel') out.kernel = m[2]!;
    else if (m[1] === 'os_prefix') out.osPrefix = m[2]!;
    else out.deviceTree = m[2]!;
  }
  return out;
}

/**
 * What a Pi of this family lacks. `names` are the lowercase paths present (root entries, and those under
 * the os_prefix directory when there is one, given with their directory).
 */
export function missingForModel(family: PiFamilyNumber, names: ReadonlySet<string>, configTxt: string | null): string[] {
  const need = NEEDS[family];
  const missing: string[] = [];
  for (const f of need.files) if (!names.has(f)) missing.push(f);
  const s = settings(configTxt);
  const prefix = (s.osPrefix ?? '').toLowerCase();
  const kernels = s.kernel ? [s.kernel.toLowerCase()] : need.kernels;
  if (!kernels.some((k) => names.has(prefix + k))) missing.push(`a kernel (${kernels.join(' or ')}${prefix ? ` under ${prefix}` : ''})`);
  if (s.deviceTree) {
    if (!names.has(s.deviceTree.toLowerCase())) missing.push(s.deviceTree);
  } else if (![...names].some((n) => n.startsWith(prefix) && need.dtb.test(n.slice(prefix.length)))) {
    missing.push(`a device tree for the model (${need.dtbName}${prefix ? ` under ${prefix}` : ''})`);
  }
  return missing;
}
