/**
 * The iPXE script netbootd writes for a PC whose boot partition has no `boot.ipxe` (pure): from the host's
 * `kernel` / `initrd` / `cmdline` keys, else from the partition's PXELINUX config (the DEFAULT entry's
 * KERNEL, INITRD and APPEND). URLs are relative, so iPXE fetches them from the server and port the script
 * came from (its current URI) — the script needs no server address and works behind any address the client
 * reached.
 */

export interface KernelSpec {
  kernel: string;
  initrds: string[];
  cmdline: string;
}

/** A path in the boot partition as a relative URL: each segment percent-encoded, no leading slash. */
export function relativeUrl(path: string): string {
  return path
    .replace(/\\/g, '/')
    .split('/')
    .filter((s) => s !== '' && s !== '.')
    .map((s) => encodeURIComponent(s))
    .join('/');
}

/**
 * The name an initrd is registered under in iPXE (`initrd --name`), which `initrd=` names for an EFI-stub
 * kernel: the file's basename, kept to characters that need no quoting in a script or a command line.
 */
function baseName(path: string): string {
  const parts = path.replace(/\\/g, '/').split('/').filter(Boolean);
  return (parts[parts.length - 1] ?? path).replace(/[^A-Za-z0-9._+-]/g, '_');
}

/** One script line: a command line with a line break would end the command (and start another). */
function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, ' ');
}

/**
 * An iPXE script that loads the kernel and initrds over HTTP and boots. `initrd=<name>` is added to the
 * command line for each initrd not already named there: an EFI-stub kernel finds its initrd by that name
 * (iPXE on BIOS ignores it; so does the kernel).
 */
export function ipxeScript(spec: KernelSpec, comment: string): string {
  const args = spec.cmdline.trim().split(/\s+/).filter(Boolean);
  const named = new Set(args.filter((a) => a.startsWith('initrd=')).flatMap((a) => a.slice(7).split(',')).map(baseName));
  const extra = spec.initrds.map(baseName).filter((n) => !named.has(n)).map((n) => `initrd=${n}`);
  const cmdline = oneLine([...extra, ...args].join(' '));
  const lines = ['#!ipxe', `# ${oneLine(comment)}`];
  lines.push(`kernel ${relativeUrl(spec.kernel)}${cmdline ? ` ${cmdline}` : ''} || goto failed`);
  for (const i of spec.initrds) lines.push(`initrd --name ${baseName(i)} ${relativeUrl(i)} || goto failed`);
  lines.push('boot || goto failed', ':failed', 'echo netbootd: boot failed, retrying in 10 s', 'sleep 10', 'reboot', '');
  return lines.join('\n');
}

/**
 * The DEFAULT entry (else the first LABEL) of a PXELINUX/SYSLINUX config as a kernel spec: KERNEL or LINUX,
 * INITRD and `initrd=` in APPEND (comma-separated), and APPEND. Null when it names no kernel.
 */
export function kernelFromPxelinux(text: string): KernelSpec | null {
  interface Entry {
    kernel?: string;
    initrds: string[];
    append: string;
  }
  const labels = new Map<string, Entry>();
  let current: Entry | null = null;
  let def: string | undefined;
  const top: Entry = { initrds: [], append: '' };
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '').trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^(\S+)\s*(.*)$/.exec(line);
    if (!m) continue;
    const word = m[1]!.toLowerCase();
    const rest = m[2]!.trim();
    const e = current ?? top;
    switch (word) {
      case 'default':
        def = rest.split(/\s+/)[0];
        break;
      case 'label':
        current = { initrds: [], append: '' };
        if (!labels.has(rest)) labels.set(rest, current);
        break;
      case 'kernel':
      case 'linux':
        e.kernel = rest.split(/\s+/)[0];
        break;
      case 'initrd':
        e.initrds.push(...rest.split(',').map((s) => s.trim()).filter(Boolean));
        break;
      case 'append':
        e.append = rest === '-' ? '' : rest;
        break;
      default:
        break;
    }
  }
  const entry = (def !== undefined ? labels.get(def) : undefined) ?? labels.values().next().value ?? top;
  // `DEFAULT vmlinuz args…` without labels names the kernel itself.
  if (!entry.kernel && def !== undefined && labels.size === 0) entry.kernel = def;
  if (!entry.kernel) return null;
  const args = entry.append.split(/\s+/).filter(Boolean);
  const initrds = [...entry.initrds];
  for (const a of args) if (a.startsWith('initrd=')) initrds.push(...a.slice(7).split(',').filter(Boolean));
  return { kernel: entry.kernel, initrds: [...new Set(initrds)], cmdline: args.join(' ') };
}
