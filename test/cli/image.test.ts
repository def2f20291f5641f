/**
 * `netbootd ls` / `netbootd cat` run as subprocesses on images built with sfdisk + mkfs.vfat + mtools
 * (FAT built in its own file, then copied into the partition with dd: no mounts).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliCommand, IN_CI, run, which } from '../helpers/tools.js';
import { nodeNumber, sfdisk, sfdiskJson, sparseFile, type SfdiskTable } from '../disk/images.js';

const MiB = 1024 * 1024;
const TOOLS = ['sfdisk', 'mkfs.vfat', 'mcopy', 'mmd', 'mdir', 'dd'];
const missing = TOOLS.filter((x) => which(x) === null);
if (missing.length > 0 && IN_CI) throw new Error(`missing tools: ${missing.join(', ')} (run scripts/install-test-deps.sh)`);
const skip = missing.length > 0 ? `missing tools: ${missing.join(', ')}` : false;

const MTOOLS_ENV = { ...process.env, MTOOLS_SKIP_CHECK: '1', LC_ALL: 'C.UTF-8' };

function cli(args: string[]): Promise<{ stdout: Buffer; stderr: string; code: number }> {
  const { cmd, args: pre } = cliCommand();
  return run(cmd, [...pre, ...args], { allowFail: true });
}

/** Deterministic bytes (a xorshift stream) so that a wrong offset cannot go unnoticed. */
function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed | 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

interface FatSpec {
  args: string[];
  sizeMiB: number;
  label?: string;
  dirs: string[];
  files: Record<string, Buffer>;
}

/** Builds a FAT file system in its own file with mkfs.vfat + mmd + mcopy. */
async function buildFat(dir: string, name: string, spec: FatSpec): Promise<string> {
  const path = join(dir, name);
  sparseFile(path, spec.sizeMiB * MiB);
  await run('mkfs.vfat', [...spec.args, ...(spec.label ? ['-n', spec.label] : []), path]);
  for (const d of spec.dirs) await run('mmd', ['-i', path, `::${d}`], { env: MTOOLS_ENV });
  const src = join(dir, `${name}.src`);
  mkdirSync(src, { recursive: true });
  let i = 0;
  for (const [p, data] of Object.entries(spec.files)) {
    const f = join(src, String(i++));
    writeFileSync(f, data);
    await run('mcopy', ['-i', path, f, `::${p}`], { env: MTOOLS_ENV });
  }
  return path;
}

/** Copies a file system image into an image at byte `offset` (dd conv=notrunc,sparse). */
async function ddInto(fs: string, image: string, offset: number): Promise<void> {
  await run('dd', [`if=${fs}`, `of=${image}`, 'bs=1M', `seek=${offset}`, 'oflag=seek_bytes', 'conv=notrunc,sparse', 'status=none']);
}

const BOOT_FILES: Record<string, Buffer> = {
  '/config.txt': Buffer.from('arm_64bit=1\nkernel=kernel8.img\n'),
  '/kernel8.img': pattern(3 * MiB + 12345, 7),
  '/empty.dat': Buffer.alloc(0),
  '/A file with a rather long name.txt': Buffer.from('long names work\n'),
  '/café ☃.txt': Buffer.from('non-ascii\n'),
  '/overlays/vc4-kms-v3d.dtbo': pattern(5000, 3),
  '/overlays/deep/er/still.txt': Buffer.from('nested\n'),
};

describe('netbootd ls / cat', { skip }, () => {
  let dir: string;
  let image: string;
  let ref: SfdiskTable;

  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'netbootd-cli-'));
    image = join(dir, 'disk.img');
    sparseFile(image, 160 * MiB);
    await sfdisk(image, 'label: dos\nlabel-id: 0x5eed0001\nsize=64MiB, type=c, bootable\nsize=16MiB, type=83\ntype=5\nsize=20MiB, type=e\nsize=8MiB, type=c\n');
    ref = await sfdiskJson(image);
    const start = (n: number): number => ref.partitions.find((p) => nodeNumber(p.node) === n)!.start * 512;
    const boot = await buildFat(dir, 'boot.fat', { args: ['-F', '32'], sizeMiB: 64, label: 'BOOTFS', dirs: ['/overlays', '/overlays/deep', '/overlays/deep/er'], files: BOOT_FILES });
    await ddInto(boot, image, start(1));
    const logical = await buildFat(dir, 'p5.fat', { args: ['-F', '16', '-S', '512', '-s', '4'], sizeMiB: 20, label: 'LOGICAL', dirs: [], files: { '/hello.txt': Buffer.from('from a logical partition\n') } });
    await ddInto(logical, image, start(5));
  });

  test('ls IMAGE lists every partition with start, size and FAT label, as sfdisk sees them', async () => {
    const r = await cli(['ls', image]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    const lines = r.stdout.toString().trimEnd().split('\n');
    assert.match(lines[0]!, /disk\.img: MBR, disk id 5eed0001, 512-byte sectors, 160 MiB \(167772160 bytes\)$/);
    assert.match(lines[1]!, /^NR\s+SCHEME\s+TYPE\s+START\s+SIZE\s+FS\s+LABEL$/);
    const rows = lines.slice(2);
    assert.equal(rows.length, ref.partitions.length);
    for (const p of ref.partitions) {
      const n = nodeNumber(p.node);
      const row = rows.find((l) => l.startsWith(`${n} `))!;
      assert.ok(row, `no row for partition ${n}`);
      const cols = row.split(/\s{2,}/);
      assert.equal(cols[1], 'mbr');
      assert.match(cols[2]!, new RegExp(`^${p.type.padStart(2, '0')} `));
      assert.equal(Number(cols[3]), p.start * 512, row);
      assert.equal(cols[5], `(${p.size * 512})`, row);
    }
    const byNum = (n: number): string[] => rows.find((l) => l.startsWith(`${n} `))!.split(/\s{2,}/);
    assert.deepEqual(byNum(1).slice(2), ['0c W95 FAT32 (LBA) *', '1048576', '64 MiB', '(67108864)', 'FAT32', 'BOOTFS']);
    assert.deepEqual(byNum(2).slice(4), ['16 MiB', '(16777216)', '-', '-']);
    assert.match(byNum(3)[2]!, /^05 Extended/);
    assert.deepEqual(byNum(5).slice(6), ['FAT16', 'LOGICAL']);
    assert.deepEqual(byNum(6).slice(6), ['-', '-']);
    // Columns are aligned: every row's START column ends at the same place.
    const startEnd = lines[1]!.indexOf('START') + 'START'.length;
    for (const row of rows) assert.match(row.slice(startEnd - 1, startEnd + 1), /\d /, row);
  });

  test('ls IMAGE 1:/dir lists names, sizes and a trailing / on directories, like mdir', async () => {
    const r = await cli(['ls', image, '1:/']);
    assert.equal(r.code, 0, r.stderr);
    const rows = r.stdout.toString().trimEnd().split('\n').map((l) => l.split(/\s{2,}/));
    const names = rows.map((c) => c[3]);
    assert.deepEqual(names, ['A file with a rather long name.txt', 'café ☃.txt', 'config.txt', 'empty.dat', 'kernel8.img', 'overlays/']);
    const size = (n: string): number => Number(rows.find((c) => c[3] === n)![1]);
    assert.equal(size('kernel8.img'), BOOT_FILES['/kernel8.img']!.length);
    assert.equal(size('empty.dat'), 0);
    for (const c of rows) assert.match(c[2]!, /^\d{4}-\d\d-\d\d \d\d:\d\d$/);
    assert.match(rows.find((c) => c[3] === 'overlays/')![0]!, /^d/);
    // The same names as mdir reports for the file system.
    const m = await run('mdir', ['-b', '-i', join(dir, 'boot.fat'), '::/'], { env: MTOOLS_ENV });
    const mnames = m.stdout.toString().trim().split('\n').map((l) => l.replace(/^::\//, '').replace(/\/$/, '')).sort();
    assert.deepEqual(names.map((n) => n!.replace(/\/$/, '')).sort(), mnames);
    // A subdirectory, case-insensitively, and PART alone meaning the root.
    const sub = await cli(['ls', image, '1:/OVERLAYS/Deep']);
    assert.equal(sub.code, 0, sub.stderr);
    assert.match(sub.stdout.toString(), /^d----\s+0\s+\S+ \S+\s+er\/\n$/);
    const root = await cli(['ls', image, '1']);
    assert.deepEqual(root.stdout, r.stdout);
    const logical = await cli(['ls', image, '5:/']);
    assert.match(logical.stdout.toString(), /^----a\s+25\s+\S+ \S+\s+hello\.txt\n$/);
  });

  test('cat IMAGE PART:/path writes exactly the file bytes', async () => {
    const files = Object.entries(BOOT_FILES);
    const results = await Promise.all(files.map(([p]) => cli(['cat', image, `1:${p}`])));
    for (const [i, [p, data]] of files.entries()) {
      const r = results[i]!;
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.equals(data), `${p}: ${r.stdout.length} bytes, want ${data.length}`);
    }
    const upper = await cli(['cat', image, '1:/OVERLAYS/VC4-KMS-V3D.DTBO']);
    assert.ok(upper.stdout.equals(BOOT_FILES['/overlays/vc4-kms-v3d.dtbo']!));
    const logical = await cli(['cat', image, '5:/hello.txt']);
    assert.equal(logical.stdout.toString(), 'from a logical partition\n');
  });

  test('cat into a pipe closed early ends quietly', async () => {
    const { cmd, args } = cliCommand();
    const q = (s: string): string => `'${s.replace(/'/g, "'\\''")}'`;
    const r = await run('bash', ['-c', `set -o pipefail; ${[cmd, ...args, 'cat', image, '1:/kernel8.img'].map(q).join(' ')} | head -c 100 | wc -c`]);
    assert.equal(r.stdout.toString().trim(), '100');
    assert.equal(r.stderr, '');
  });

  test('errors are one line, prefixed netbootd:, exit status 1', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['ls', join(dir, 'nope.img')], /^netbootd: .*nope\.img: no such file$/],
      [['cat', join(dir, 'nope.img'), '1:/config.txt'], /^netbootd: .*nope\.img: no such file$/],
      [['ls', dir], /^netbootd: .*: not a regular file or block device$/],
      [['ls', image, '9:/'], /^netbootd: .*disk\.img: no partition 9: it has 1, 2, 5, 6$/],
      [['cat', image, '1:/nope.txt'], /^netbootd: .*disk\.img:1: \/nope\.txt: .*(no such|not found)/i],
      [['cat', image, '1:/overlays/nope/x'], /^netbootd: .*(no such|not found)/i],
      [['cat', image, '1:/overlays'], /^netbootd: .*disk\.img:1:\/overlays: is a directory$/],
      [['cat', image, '1:/'], /^netbootd: 1:\/: give a file path/],
      [['cat', image, '2:/x'], /^netbootd: partition 2 of .*disk\.img \(type 83 Linux\) is not a FAT file system: /],
      [['ls', image, '6:/'], /^netbootd: partition 6 of .* is not a FAT file system/],
      [['ls', image, '3:/'], /^netbootd: .*partition 3 is an extended partition/],
      [['ls', image, '/'], /^netbootd: .*disk\.img has an MBR partition table: say which partition \(1, 2, 5, 6\), e\.g\. 1:\/$/],
      [['ls', image, 'x:/'], /^netbootd: x:\/: expected PART\[:\/path\]/],
      [['ls', image, '1:/config.txt/x'], /^netbootd: .*not a directory/],
      [['ls', image, '--sector-size', '1000'], /^netbootd: --sector-size 1000: must be 512 or 4096$/],
    ];
    const results = await Promise.all(cases.map(([args]) => cli(args)));
    for (const [i, [args, re]] of cases.entries()) {
      const r = results[i]!;
      assert.equal(r.code, 1, `${args.join(' ')}: exit ${r.code}`);
      assert.equal(r.stdout.length, 0, args.join(' '));
      const lines = r.stderr.trimEnd().split('\n');
      assert.equal(lines.length, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.match(lines[0]!, re, args.join(' '));
    }
  });

  test('a corrupt partition table is a one-line error naming the problem', async () => {
    const cut = join(dir, 'cut.img');
    await run('cp', ['--sparse=always', image, cut]);
    await run('truncate', ['-s', '70M', cut]);
    const r = await cli(['ls', cut]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^netbootd: .*cut\.img: partition 2 ends at byte \d+, past the end of the image \(73400320 bytes\)\n$/);
  });

  test('superfloppy (FAT on the whole image): row 0, and 0:/, :/ or /path address it', async () => {
    const fat = await buildFat(dir, 'floppy.img', { args: ['-F', '12'], sizeMiB: 4, label: 'FLOPPY', dirs: ['/d'], files: { '/d/f.txt': Buffer.from('floppy file\n') } });
    const r = await cli(['ls', fat]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.toString().trimEnd().split('\n');
    assert.match(lines[0]!, /floppy\.img: no partition table, 4 MiB \(4194304 bytes\)$/);
    assert.deepEqual(lines[2]!.split(/\s{2,}/), ['0', 'none', '-', '0', '4 MiB', '(4194304)', 'FAT12', 'FLOPPY']);
    for (const where of ['0:/d', ':/d', '/d']) {
      const l = await cli(['ls', fat, where]);
      assert.match(l.stdout.toString(), /f\.txt\n$/, where);
    }
    assert.equal((await cli(['cat', fat, '/d/f.txt'])).stdout.toString(), 'floppy file\n');
    assert.equal((await cli(['cat', fat, '0:/D/F.TXT'])).stdout.toString(), 'floppy file\n');
    const p1 = await cli(['ls', fat, '1:/']);
    assert.equal(p1.code, 1);
    assert.match(p1.stderr, /no partition 1: the image has no partition table \(use 0 for the whole image\)/);
    const zeros = join(dir, 'zeros.img');
    sparseFile(zeros, MiB);
    const z = await cli(['ls', zeros]);
    assert.equal(z.code, 0);
    assert.match(z.stdout.toString(), /no partition table.*\nno FAT file system on the whole image either\n$/);
    const zc = await cli(['cat', zeros, '/x']);
    assert.equal(zc.code, 1);
    assert.match(zc.stderr, /^netbootd: .*zeros\.img is not a FAT file system: /);
  });

  test('GPT image: ls shows type GUIDs, names and labels; a sparse 4 GiB image is handled without reading it', async () => {
    const big = join(dir, 'big.img');
    sparseFile(big, 4096 * MiB);
    await sfdisk(big, 'label: gpt\nsize=48MiB, type=uefi, name="EFI system"\nsize=1GiB, type=linux, name="root fs"\n');
    const gref = await sfdiskJson(big);
    const esp = await buildFat(dir, 'esp.fat', { args: ['-F', '32'], sizeMiB: 48, label: 'ESP', dirs: ['/EFI', '/EFI/BOOT'], files: { '/EFI/BOOT/BOOTX64.EFI': pattern(100_000, 9) } });
    await ddInto(esp, big, gref.partitions[0]!.start * 512);
    assert.ok(statSync(big).blocks * 512 < 64 * MiB, 'the image stays sparse');
    const r = await cli(['ls', big]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.toString().trimEnd().split('\n');
    assert.match(lines[0]!, new RegExp(`big\\.img: GPT, disk id ${gref.id.toLowerCase()}, 512-byte sectors, 4 GiB \\(4294967296 bytes\\)$`));
    assert.match(lines[1]!, /LABEL\s+NAME$/);
    assert.deepEqual(lines[2]!.split(/\s{2,}/).slice(2), ['c12a7328-f81f-11d2-ba4b-00a0c93ec93b EFI System', String(gref.partitions[0]!.start * 512), '48 MiB', '(50331648)', 'FAT32', 'ESP', 'EFI system']);
    assert.deepEqual(lines[3]!.split(/\s{2,}/).slice(4), ['1 GiB', '(1073741824)', '-', '-', 'root fs']);
    const c = await cli(['cat', big, '1:/efi/boot/bootx64.efi']);
    assert.ok(c.stdout.equals(pattern(100_000, 9)));
  });
});
