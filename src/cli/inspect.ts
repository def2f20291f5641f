/**
 * `netbootd ls` / `netbootd cat`: look inside disk images without mounting them.
 *
 *   netbootd ls IMAGE                 partitions (number, scheme, type, start, size, file system, label)
 *   netbootd ls IMAGE PART[:/dir]     a FAT directory, `ls -l`-ish (PART 0 or omitted: no partition table)
 *   netbootd cat IMAGE PART:/path     a file to stdout, streamed through a fixed buffer
 *
 * Only the partition table, the FAT boot sector and what the path needs are read, so a sparse multi-GiB
 * image answers at once. Failures are one line on stderr (`netbootd: …`) and exit status 1 (main.ts).
 */
import type { Command } from 'commander';
import { FileBlockDevice, readAt, type BlockDevice } from '../disk/blockdev.js';
import { PROBE_BYTES, probeFilesystem } from '../disk/fsprobe.js';
import { openPartition, readPartitionTable, type Partition, type PartitionTable } from '../disk/partitions.js';
import { findBootPartition } from '../fat/boot.js';
import { FatVolume, type FatStat } from '../fat/volume.js';
import { NetbootError } from '../util/errors.js';
import { CliError, columns, parseWhere, streamTo } from './common.js';
import { humanSize } from '../util/format.js';

export function registerImageCommands(program: Command): void {
  program
    .command('ls')
    .description('list the partitions of IMAGE, or a FAT directory: IMAGE PART[:/dir] (PART 0 or omitted: no partition table)')
    .argument('<image>', 'disk image file (or block device)')
    .argument('[where]', 'PART[:/dir], e.g. 1 or 1:/overlays')
    .option('--sector-size <bytes>', 'logical sector size: 512 or 4096 (GPT is detected either way)')
    .action(async (image: string, where: string | undefined, opts: { sectorSize?: string }) => {
      quietOnClosedStdout();
      await withImage(image, opts.sectorSize, async (dev, table) => {
        if (where === undefined) {
          for (const w of table.warnings) process.stderr.write(`netbootd: warning: ${w}\n`);
          process.stdout.write(await formatPartitions(image, dev, table));
          return;
        }
        const target = parseWhere(where);
        const vol = await openVolume(image, dev, table, target.part);
        try {
          const st = await vol.stat(target.path);
          const entries = st.isDirectory ? await vol.readdir(target.path) : [st];
          process.stdout.write(formatDirectory(entries.filter((e) => e.name !== '.' && e.name !== '..')));
        } finally {
          vol.close();
        }
      });
    });

  program
    .command('cat')
    .description('write a file from a FAT partition of IMAGE to stdout: IMAGE PART:/path')
    .argument('<image>', 'disk image file (or block device)')
    .argument('<where>', 'PART:/path, e.g. 1:/config.txt')
    .option('--sector-size <bytes>', 'logical sector size: 512 or 4096 (GPT is detected either way)')
    .action(async (image: string, where: string, opts: { sectorSize?: string }) => {
      quietOnClosedStdout();
      const target = parseWhere(where);
      if (target.path.replace(/\/+/g, '/') === '/') throw new CliError(`${where}: give a file path, e.g. ${target.part}:/config.txt`);
      await withImage(image, opts.sectorSize, async (dev, table) => {
        const vol = await openVolume(image, dev, table, target.part);
        try {
          const st = await vol.stat(target.path);
          if (st.isDirectory) throw new CliError(`${image}:${target.part}:${target.path}: is a directory`);
          const src = await vol.open(target.path);
          try {
            await streamTo(src, process.stdout);
          } finally {
            src.close();
          }
        } finally {
          vol.close();
        }
      });
    });
}

/** A reader that goes away (`| head`) is its choice, not an error, however late stdout reports it. */
function quietOnClosedStdout(): void {
  process.stdout.on('error', (e: Error & { code?: string }) => {
    if (e.code === 'EPIPE') return;
    process.stderr.write(`netbootd: stdout: ${e.message}\n`);
    process.exitCode = 1;
  });
}

function parseSectorSize(s: string | undefined): 512 | 4096 | undefined {
  if (s === undefined) return undefined;
  if (s === '512' || s === '4096') return Number(s) as 512 | 4096;
  throw new CliError(`--sector-size ${s}: must be 512 or 4096`);
}

async function withImage(
  image: string,
  sectorSize: string | undefined,
  fn: (dev: BlockDevice, table: PartitionTable) => Promise<void>,
): Promise<void> {
  const ss = parseSectorSize(sectorSize);
  let dev: FileBlockDevice;
  try {
    dev = await FileBlockDevice.open(image, { readOnly: true });
  } catch (e) {
    throw new CliError(openErrorMessage(image, e));
  }
  try {
    const table = await readPartitionTable(dev, ss ? { sectorSize: ss } : {}).catch((e: unknown) => {
      throw new CliError(`${image}: ${messageOf(e)}`);
    });
    await fn(dev, table);
  } finally {
    await dev.close();
  }
}

function openErrorMessage(image: string, e: unknown): string {
  const code = (e as { code?: unknown }).code;
  if (code === 'ENOENT') return `${image}: no such file`;
  if (code === 'EACCES' || code === 'EPERM') return `${image}: permission denied`;
  if (code === 'EISDIR') return `${image}: is a directory`;
  if (e instanceof NetbootError) return e.message;
  return `${image}: ${messageOf(e)}`;
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

async function openVolume(image: string, dev: BlockDevice, table: PartitionTable, part: number): Promise<FatVolume> {
  if (part === 0 && table.scheme !== 'none') {
    const parts = table.partitions.filter((p) => !p.extended).map((p) => p.number);
    // The example is the boot FAT `serve` would use, when there is one.
    const boot = await findBootPartition(dev, undefined, table).then((l) => l.number, () => parts[0] ?? 1);
    throw new CliError(`${image} has ${table.scheme === 'mbr' ? 'an' : 'a'} ${table.scheme.toUpperCase()} partition table: say which partition (${parts.join(', ') || 'none'}), e.g. ${boot}:/`);
  }
  let window: BlockDevice;
  try {
    window = openPartition(dev, table, part);
  } catch (e) {
    throw new CliError(messageOf(e));
  }
  const p = table.partitions.find((x) => x.number === part);
  const name = part === 0 ? image : `${image}:${part}`;
  try {
    return await FatVolume.open(window, { name });
  } catch (e) {
    const what = p ? `partition ${part} of ${image} (type ${p.type} ${p.typeName})` : image;
    throw new CliError(`${what} is not a FAT file system: ${messageOf(e).replace(`${name}: `, '')}`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Formatting

async function fatInfo(dev: BlockDevice, table: PartitionTable, p: Partition | null, image: string): Promise<{ fs: string; label: string }> {
  if (p?.extended) return { fs: '-', label: '-' };
  let window: BlockDevice;
  try {
    window = openPartition(dev, table, p ? p.number : 0);
  } catch {
    return { fs: '-', label: '-' };
  }
  try {
    const vol = await FatVolume.open(window, { name: `${image}:${p ? p.number : 0}` });
    vol.close();
    return { fs: vol.type, label: vol.label === '' ? '-' : vol.label };
  } catch {
    // not FAT: see whether it is something else we can name
  }
  try {
    const guess = probeFilesystem(await readAt(window, 0, Math.min(PROBE_BYTES, window.size)));
    if (guess) return { fs: guess.type, label: guess.label === '' ? '-' : guess.label };
  } catch {
    // unreadable: nothing to say
  }
  return { fs: '-', label: '-' };
}

async function formatPartitions(image: string, dev: BlockDevice, table: PartitionTable): Promise<string> {
  const head =
    table.scheme === 'none'
      ? `${image}: no partition table, ${humanSize(dev.size)} (${dev.size} bytes)\n`
      : `${image}: ${table.scheme.toUpperCase()}, disk id ${table.diskId}, ${table.sectorSize}-byte sectors, ${humanSize(dev.size)} (${dev.size} bytes)\n`;
  const gpt = table.scheme === 'gpt';
  const rows: string[][] = [['NR', 'SCHEME', 'TYPE', 'START', 'SIZE', '', 'FS', 'LABEL', ...(gpt ? ['NAME'] : [])]];
  if (table.scheme === 'none') {
    const f = await fatInfo(dev, table, null, image);
    if (f.fs === '-') return `${head}no FAT file system on the whole image either\n`;
    rows.push(['0', 'none', '-', '0', humanSize(dev.size), `(${dev.size})`, f.fs, f.label]);
    return head + columns(rows, new Set([3, 4]));
  }
  for (const p of table.partitions) {
    const f = await fatInfo(dev, table, p, image);
    const boot = p.bootable ? ' *' : '';
    rows.push([
      String(p.number),
      p.scheme,
      `${p.type} ${p.typeName}${boot}`,
      String(p.start),
      humanSize(p.size),
      `(${p.size})`,
      f.fs,
      f.label,
      ...(gpt ? [p.name === undefined || p.name === '' ? '-' : p.name] : []),
    ]);
  }
  if (table.partitions.length === 0) return `${head}no partitions\n`;
  return head + columns(rows, new Set([3, 4]));
}

function two(n: number): string {
  return String(n).padStart(2, '0');
}

function attrString(e: FatStat): string {
  const a = e.attributes;
  return (e.isDirectory ? 'd' : '-') + (a & 0x01 ? 'r' : '-') + (a & 0x02 ? 'h' : '-') + (a & 0x04 ? 's' : '-') + (a & 0x20 ? 'a' : '-');
}

/** FAT times have no zone: they are shown as stored. */
function dateString(d: Date): string {
  return `${d.getUTCFullYear()}-${two(d.getUTCMonth() + 1)}-${two(d.getUTCDate())} ${two(d.getUTCHours())}:${two(d.getUTCMinutes())}`;
}

export function formatDirectory(entries: FatStat[]): string {
  if (entries.length === 0) return '';
  const key = (e: FatStat): string => e.name.toLowerCase();
  const sorted = [...entries].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : a.name < b.name ? -1 : 1));
  return columns(
    sorted.map((e) => [attrString(e), String(e.isDirectory ? 0 : e.size), dateString(e.mtime), e.isDirectory ? `${e.name}/` : e.name]),
    new Set([1]),
  );
}
