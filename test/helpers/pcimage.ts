/**
 * A small PC-style disk image for tests, built without mounts: MBR, a FAT16 boot partition at 1 MiB holding
 * the given files (folders made as needed), an empty Linux partition 2.
 */
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { MTOOLS_ENV, mkfsVfat } from './fatimg.js';
import { run } from './tools.js';
import { sfdisk, sparseFile } from '../disk/images.js';

const MiB = 1024 ** 2;

/** Where the boot FAT starts. */
export const PC_BOOT_OFFSET = MiB;

export async function buildPcImage(dir: string, files: Record<string, string>, name = 'pc.img'): Promise<string> {
  const img = join(dir, name);
  sparseFile(img, 64 * MiB);
  await sfdisk(img, 'label: dos\nunit: sectors\nstart=2048, size=40960, type=c\nstart=43008, size=20480, type=83\n');
  const fat = join(dir, `${name}.boot.fat`);
  await mkfsVfat(fat, { fat: 16, sizeKiB: 20480, clusterSectors: 1 });
  const made = new Set<string>();
  for (const path of Object.keys(files)) {
    for (let d = dirname(path); d !== '.' && !made.has(d); d = dirname(d)) made.add(d);
  }
  for (const d of [...made].sort()) await run('mmd', ['-i', fat, `::/${d}`], { env: MTOOLS_ENV });
  const local = join(dir, `${name}.file`);
  for (const [path, text] of Object.entries(files)) {
    writeFileSync(local, text);
    await run('mcopy', ['-i', fat, local, `::/${path}`], { env: MTOOLS_ENV });
  }
  await run('dd', [`if=${fat}`, `of=${img}`, 'bs=1M', `seek=${PC_BOOT_OFFSET / MiB}`, 'conv=notrunc', 'status=none']);
  return img;
}
