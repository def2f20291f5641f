/**
 * `netbootd prep IMAGE …`: make a stock Raspberry Pi OS / Ubuntu / Debian image netbootable, on the file
 * itself (no root, no loop devices). Prints every change (with --dry-run: every change it would make, and
 * writes nothing). See src/prep/prep.ts.
 */
import type { Command } from 'commander';
import { prepImage, type PrepOptions } from '../prep/prep.js';
import { parseSize } from '../prep/grow.js';
import { CliError } from './common.js';

function collect(value: string, prev: string[] = []): string[] {
  return [...prev, value];
}

function partNumber(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d{1,3}$/.test(v) || Number(v) < 1) throw new CliError(`${flag} ${v}: give a partition number (1, 2, …)`);
  return Number(v);
}

interface Opts {
  size?: string;
  growPartition?: boolean;
  serial?: string;
  export?: string;
  server?: string;
  bootPartition?: string;
  rootPartition?: string;
  copy?: string[];
  remove?: string[];
  cmdline?: string;
  userData?: string;
  packages?: string;
  config?: string;
  dryRun?: boolean;
}

export function registerPrepCommand(program: Command): void {
  program
    .command('prep')
    .description('make a disk image netbootable: grow it, rewrite cmdline.txt for a root on NBD, copy files into the boot partition, add cloud-init packages, add it to the config')
    .argument('<image>', 'disk image file')
    .option('--size <size>', 'grow the image file (sparse) to this size, e.g. 16G')
    .option('--grow-partition', 'with --size: also grow the last partition entry to the new end')
    .option('--serial <serial>', 'with --config: the Raspberry Pi serial that boots this image')
    .option('--export <name>', 'NBD export (and config image) name (default: the file name)')
    .option('--server <host>', 'the netbootd server address written into nbdroot=')
    .option('--boot-partition <n>', 'the boot partition (default: the first FAT partition)')
    .option('--root-partition <n>', 'the root partition (default: the first Linux partition)')
    .option('--copy <path>', 'copy a file or directory into the boot partition (PATH or PATH:/dest); repeatable', collect)
    .option('--remove <path>', 'delete a file or directory from the boot partition; repeatable', collect)
    .option('--cmdline <file>', 'the kernel command line file in the boot partition', undefined)
    .option('--user-data <file>', 'merge this cloud-init user-data into the boot partition\'s user-data')
    .option('--packages <list>', 'add these packages (comma-separated) to cloud-init user-data, e.g. nbd-client')
    .option('--config <file>', 'add the image (and --serial) to this netbootd YAML, keeping its comments')
    .option('--dry-run', 'print every change and write nothing')
    .action(async (image: string, opts: Opts) => {
      let size: number | undefined;
      if (opts.size !== undefined) {
        size = parseSize(opts.size);
        if (size === undefined) throw new CliError(`--size ${opts.size}: give a size such as 16G, 8192M or a number of bytes`);
      }
      if (opts.growPartition && size === undefined) throw new CliError('--grow-partition needs --size');
      if (opts.userData !== undefined && opts.packages !== undefined) throw new CliError('give --user-data or --packages, not both');
      const packages = opts.packages?.split(',').map((p) => p.trim()).filter((p) => p !== '');
      if (packages !== undefined && (packages.length === 0 || packages.some((p) => !/^[A-Za-z0-9][A-Za-z0-9.+:=_~-]*$/.test(p)))) {
        throw new CliError(`--packages ${opts.packages}: give package names separated by commas, e.g. nbd-client,vim`);
      }
      const o: PrepOptions = {
        image,
        ...(size !== undefined ? { size } : {}),
        ...(opts.growPartition ? { growPartition: true } : {}),
        ...(opts.serial !== undefined ? { serial: opts.serial } : {}),
        ...(opts.export !== undefined ? { exportName: opts.export } : {}),
        ...(opts.server !== undefined ? { server: opts.server } : {}),
        ...(opts.bootPartition !== undefined ? { bootPartition: partNumber('--boot-partition', opts.bootPartition)! } : {}),
        ...(opts.rootPartition !== undefined ? { rootPartition: partNumber('--root-partition', opts.rootPartition)! } : {}),
        ...(opts.copy ? { copy: opts.copy } : {}),
        ...(opts.remove ? { remove: opts.remove } : {}),
        ...(opts.cmdline !== undefined ? { cmdline: opts.cmdline } : {}),
        ...(opts.userData !== undefined ? { userData: opts.userData } : {}),
        ...(packages ? { packages } : {}),
        ...(opts.config !== undefined ? { config: opts.config } : {}),
        ...(opts.dryRun ? { dryRun: true } : {}),
      };
      const r = await prepImage(o);
      for (const n of r.notes) process.stderr.write(`netbootd: note: ${n}\n`);
      const head = `${image}: boot partition ${r.bootPartition}, root partition ${r.rootPartition}, export ${r.exportName}\n`;
      if (r.changes.length === 0) {
        process.stdout.write(`${head}nothing to change\n`);
        return;
      }
      const prefix = opts.dryRun ? 'would: ' : '';
      process.stdout.write(head + r.changes.map((c) => `${prefix}${c}\n`).join(''));
      process.stdout.write(opts.dryRun ? `dry run: ${r.changes.length} change(s), nothing written\n` : `done: ${r.changes.length} change(s)\n`);
    });
}
