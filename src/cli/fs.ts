/**
 * `netbootd cp` / `rm` / `mkdir` on FAT partitions inside disk images, siblings of `ls` and `cat`:
 *
 *   netbootd cp SRC IMAGE PART:/path        host file or directory into the image
 *   netbootd cp IMAGE PART:/path DEST       out of the image (DEST '-' is stdout)
 *   netbootd rm [-r] IMAGE PART:/path
 *   netbootd mkdir [-p] IMAGE PART:/path
 *
 * Writes go through the image's BlockDevice and the FAT writer (src/fat/writer.ts), which also answers the
 * lookups a write needs (`stat`); copies out read through a `FatVolume`.
 */
import { mkdir as mkdirHost, stat } from 'node:fs/promises';
import fs from 'node:fs';
import { basename, join } from 'node:path';
import type { Command } from 'commander';
import { FileBlockDevice, flushDevice, type BlockDevice } from '../disk/blockdev.js';
import { openPartition, readPartitionTable } from '../disk/partitions.js';
import { FatVolume } from '../fat/volume.js';
import { FatWriter } from '../fat/writer.js';
import { NetbootError, NotFoundError } from '../util/errors.js';
import { expandCopies } from '../prep/prep.js';
import { fileSource } from '../util/source.js';
import { CliError, parseWhere, streamTo } from './common.js';

const WHERE = /^\d*:/;

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

async function openDevice(image: string, readOnly: boolean): Promise<FileBlockDevice> {
  try {
    return await FileBlockDevice.open(image, { readOnly });
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ENOENT') throw new CliError(`${image}: no such file`);
    if (code === 'EACCES' || code === 'EPERM') throw new CliError(`${image}: permission denied`);
    throw new CliError(`${image}: ${messageOf(e)}`);
  }
}

async function partitionOf(image: string, dev: BlockDevice, part: number): Promise<BlockDevice> {
  const table = await readPartitionTable(dev).catch((e: unknown) => {
    throw new CliError(`${image}: ${messageOf(e)}`);
  });
  if (part === 0 && table.scheme !== 'none') throw new CliError(`${image} has a partition table: say which partition, e.g. 1:/path`);
  try {
    return openPartition(dev, table, part);
  } catch (e) {
    throw new CliError(messageOf(e));
  }
}

async function withWriter(image: string, where: string, fn: (w: FatWriter, path: string) => Promise<void>): Promise<void> {
  const target = parseWhere(where);
  const dev = await openDevice(image, false);
  try {
    const win = await partitionOf(image, dev, target.part);
    const name = target.part === 0 ? image : `${image}:${target.part}`;
    let w: FatWriter;
    try {
      w = await FatWriter.open(win, { name });
    } catch (e) {
      throw new CliError(`${name} is not a FAT file system: ${messageOf(e).replace(`${name}: `, '')}`);
    }
    try {
      await fn(w, target.path);
      await w.flush();
    } finally {
      w.close();
    }
    await flushDevice(dev);
  } catch (e) {
    if (e instanceof NetbootError) throw new CliError(e.message);
    throw e;
  } finally {
    await dev.close();
  }
}

async function isDir(w: FatWriter, path: string): Promise<boolean> {
  try {
    return (await w.stat(path)).isDirectory;
  } catch (e) {
    if (e instanceof NotFoundError) return false;
    throw e;
  }
}

function joinFat(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir.replace(/\/+$/, '')}/${name}`;
}

async function copyIn(src: string, image: string, where: string): Promise<void> {
  let st;
  try {
    st = await stat(src);
  } catch {
    throw new CliError(`${src}: no such file or directory`);
  }
  await withWriter(image, where, async (w, path) => {
    // Into an existing directory (or a path ending with '/'): keep the source's name.
    const dest = path.endsWith('/') || (await isDir(w, path)) ? joinFat(path, basename(src)) : path;
    if (st.isDirectory()) {
      const { dirs, files } = await expandCopies([`${src}:${dest}`]);
      for (const d of dirs) await w.mkdir(d, { parents: true });
      for (const f of files) {
        const s = await fileSource(f.host);
        try {
          await w.writeFile(f.dest, s, { mtime: s.mtime });
        } finally {
          s.close();
        }
      }
      return;
    }
    const s = await fileSource(src);
    try {
      await w.writeFile(dest, s, { mtime: s.mtime });
    } finally {
      s.close();
    }
  });
}

async function copyOut(image: string, where: string, dest: string): Promise<void> {
  const target = parseWhere(where);
  const dev = await openDevice(image, true);
  try {
    const win = await partitionOf(image, dev, target.part);
    const name = target.part === 0 ? image : `${image}:${target.part}`;
    const vol = await FatVolume.open(win, { name }).catch((e: unknown) => {
      throw new CliError(`${name} is not a FAT file system: ${messageOf(e)}`);
    });
    try {
      const st = await vol.stat(target.path);
      const one = async (fatPath: string, hostPath: string): Promise<void> => {
        const src = await vol.open(fatPath);
        try {
          if (hostPath === '-') return await streamTo(src, process.stdout);
          const out = fs.createWriteStream(hostPath);
          await streamTo(src, out);
          await new Promise<void>((res, rej) => out.end((e?: Error | null) => (e ? rej(e) : res())));
        } finally {
          src.close();
        }
      };
      const hostIsDir = dest !== '-' && (await stat(dest).then((s) => s.isDirectory(), () => false));
      if (!st.isDirectory) return await one(target.path, hostIsDir ? join(dest, st.name) : dest);
      if (dest === '-') throw new CliError(`${name}:${target.path}: is a directory`);
      const root = hostIsDir ? join(dest, st.name || basename(target.path) || 'root') : dest;
      const walk = async (fatDir: string, hostDir: string, depth: number): Promise<void> => {
        if (depth > 64) throw new CliError(`${name}:${fatDir}: directories nest too deep`);
        await mkdirHost(hostDir, { recursive: true });
        for (const e of await vol.readdir(fatDir)) {
          if (e.name === '.' || e.name === '..') continue;
          const fp = joinFat(fatDir, e.name);
          if (e.isDirectory) await walk(fp, join(hostDir, e.name), depth + 1);
          else await one(fp, join(hostDir, e.name));
        }
      };
      await walk(target.path, root, 0);
    } finally {
      vol.close();
    }
  } catch (e) {
    if (e instanceof NetbootError) throw new CliError(e.message);
    throw e;
  } finally {
    await dev.close();
  }
}

export function registerFsCommands(program: Command): void {
  program
    .command('cp')
    .description('copy into a FAT partition of IMAGE (SRC IMAGE PART:/path) or out of it (IMAGE PART:/path DEST, DEST - is stdout)')
    .argument('<a>', 'SRC, or IMAGE')
    .argument('<b>', 'IMAGE, or PART:/path')
    .argument('<c>', 'PART:/path, or DEST')
    .action(async (a: string, b: string, c: string) => {
      if (WHERE.test(c)) return copyIn(a, b, c);
      if (WHERE.test(b)) return copyOut(a, b, c);
      throw new CliError('usage: netbootd cp SRC IMAGE PART:/path, or netbootd cp IMAGE PART:/path DEST');
    });

  program
    .command('rm')
    .description('delete a file (or with -r a directory tree) from a FAT partition of IMAGE: IMAGE PART:/path')
    .argument('<image>', 'disk image file')
    .argument('<where>', 'PART:/path, e.g. 1:/initrd.img')
    .option('-r, --recursive', 'remove directories and what they hold')
    .action(async (image: string, where: string, opts: { recursive?: boolean }) => {
      await withWriter(image, where, async (w, path) => {
        if (path.replace(/\/+/g, '/') === '/') throw new CliError('refusing to remove the root directory');
        if (await isDir(w, path)) {
          if (opts.recursive) await w.removeTree(path);
          else await w.rmdir(path);
        } else await w.remove(path);
      });
    });

  program
    .command('mkdir')
    .description('create a directory in a FAT partition of IMAGE: IMAGE PART:/path')
    .argument('<image>', 'disk image file')
    .argument('<where>', 'PART:/path, e.g. 1:/overlays')
    .option('-p, --parents', 'create missing parents; no error if it exists')
    .action(async (image: string, where: string, opts: { parents?: boolean }) => {
      await withWriter(image, where, async (w, path) => {
        await w.mkdir(path, { parents: opts.parents ?? false });
      });
    });
}
