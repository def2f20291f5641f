/**
 * Every open image, shared by everything that uses it: NBD exports, TFTP (through FAT volumes), and
 * across config reloads. One FileBlockDevice per image file and mode, one CowBlockDevice per
 * (export, client) overlay, one boot FAT volume per device. A FatVolume follows writes to its device
 * itself; on top of that, a write over a partition table or a boot sector drops the cached volume, so even
 * a client that rewrites its whole boot partition over NBD gets exactly those bytes on its next TFTP read.
 */
import fs from 'node:fs';
import { FileBlockDevice, type BlockDevice } from '../disk/blockdev.js';
import { CowBlockDevice, overlayPaths } from '../disk/cow.js';
import type { FatVolume } from '../fat/volume.js';
import { silentLogger, type Logger } from '../util/log.js';
import { openBootVolume } from './boot.js';

/** Bytes at the start of a device / partition whose change means "re-read the structure". */
const HEAD_BYTES = 64 * 1024;

interface VolumeEntry {
  promise: Promise<{ volume: FatVolume; start: number }>;
}

interface DeviceEntry {
  volumes: Map<number, VolumeEntry>;
  unsubscribe: () => void;
}

export class ImagePool {
  private readonly files = new Map<string, Promise<FileBlockDevice>>();
  private readonly overlays = new Map<string, { dev: Promise<CowBlockDevice>; refs: number }>();
  private readonly devices = new WeakMap<BlockDevice, DeviceEntry>();
  private readonly writers = new Map<string, { address: string; count: number }>();

  constructor(private readonly log: Logger = silentLogger) {}

  /** The image file, opened once per mode. A failed open is not cached (the file may appear later). */
  file(path: string, readOnly: boolean): Promise<FileBlockDevice> {
    const key = `${readOnly ? 'ro' : 'rw'}:${path}`;
    let p = this.files.get(key);
    if (!p) {
      p = FileBlockDevice.open(path, { readOnly });
      this.files.set(key, p);
      p.catch(() => {
        if (this.files.get(key) === p) this.files.delete(key);
      });
    }
    return p;
  }

  /** A client's overlay of a copy-on-write export, created when missing; `release()` when done. */
  async overlay(basePath: string, stateDir: string, exportName: string, identity: string): Promise<{ device: CowBlockDevice; release: () => void }> {
    const key = `${exportName}\0${identity}`;
    let ov = this.overlays.get(key);
    if (!ov) {
      const dev = this.file(basePath, true).then((b) => CowBlockDevice.open(b, stateDir, exportName, identity));
      const entry = { dev, refs: 0 };
      ov = entry;
      this.overlays.set(key, entry);
      dev.catch(() => {
        if (this.overlays.get(key) === entry) this.overlays.delete(key);
      });
    }
    const device = await ov.dev;
    ov.refs++;
    let released = false;
    const entry = ov;
    return {
      device,
      release: () => {
        if (!released) {
          released = true;
          entry.refs--;
        }
      },
    };
  }

  /** The client's overlay when it has one (open or on disk), else null: reading never creates overlays. */
  async existingOverlay(basePath: string, stateDir: string, exportName: string, identity: string): Promise<CowBlockDevice | null> {
    const key = `${exportName}\0${identity}`;
    const open = this.overlays.get(key);
    if (open) return open.dev;
    if (!fs.existsSync(overlayPaths(stateDir, exportName, identity).map)) return null;
    const { device, release } = await this.overlay(basePath, stateDir, exportName, identity);
    release();
    return device;
  }

  /** Whether an overlay is in use by an NBD connection. */
  overlayInUse(exportName: string, identity: string): boolean {
    return (this.overlays.get(`${exportName}\0${identity}`)?.refs ?? 0) > 0;
  }

  /** Closes an overlay nobody uses (before a reset). */
  async dropOverlay(exportName: string, identity: string): Promise<void> {
    const key = `${exportName}\0${identity}`;
    const ov = this.overlays.get(key);
    if (!ov) return;
    this.overlays.delete(key);
    const dev = await ov.dev.catch(() => null);
    if (dev) {
      this.forgetDevice(dev);
      await dev.close();
    }
  }

  /**
   * One writing client per read-write image unless shared: returns a release function, or the address
   * of the client holding it.
   */
  acquireWriter(path: string, address: string): { release: () => void } | { holder: string } {
    const w = this.writers.get(path);
    if (w && w.address !== address) return { holder: w.address };
    if (w) w.count++;
    else this.writers.set(path, { address, count: 1 });
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        const cur = this.writers.get(path);
        if (cur && --cur.count === 0) this.writers.delete(path);
      },
    };
  }

  /** The boot FAT volume of a device (partition: configured number, or undefined for the first FAT). */
  async bootVolume(dev: BlockDevice, partition?: number): Promise<FatVolume> {
    let d = this.devices.get(dev);
    if (!d) {
      const entry: DeviceEntry = { volumes: new Map(), unsubscribe: () => {} };
      entry.unsubscribe = dev.onWritten((off, len) => this.onWrite(dev, entry, off, len));
      this.devices.set(dev, entry);
      d = entry;
    }
    const key = partition ?? -1;
    let v = d.volumes.get(key);
    if (!v) {
      const entry: VolumeEntry = {
        promise: openBootVolume(dev, partition).then(({ volume, location }) => ({ volume, start: location.partition?.start ?? 0 })),
      };
      v = entry;
      d.volumes.set(key, entry);
      const volumes = d.volumes;
      entry.promise.catch(() => {
        if (volumes.get(key) === entry) volumes.delete(key);
      });
    }
    return (await v.promise).volume;
  }

  private onWrite(dev: BlockDevice, d: DeviceEntry, off: number, len: number): void {
    const end = off + len;
    const tail = dev.size - HEAD_BYTES;
    const tableHit = off < HEAD_BYTES || end > tail; // MBR/EBR area or GPT (primary at the start, backup at the end)
    for (const [key, v] of d.volumes) {
      v.promise.then(
        ({ volume, start }) => {
          if (tableHit || (off < start + HEAD_BYTES && end > start)) {
            if (d.volumes.get(key) === v) {
              d.volumes.delete(key);
              volume.close();
              this.log.debug({ device: dev.name, offset: off, length: len }, 'boot structures rewritten: FAT volume reopened on next use');
            }
          }
        },
        () => {},
      );
    }
  }

  private forgetDevice(dev: BlockDevice): void {
    const d = this.devices.get(dev);
    if (!d) return;
    d.unsubscribe();
    for (const v of d.volumes.values()) v.promise.then(({ volume }) => volume.close(), () => {});
    this.devices.delete(dev);
  }

  /** Flushes and closes everything (shutdown). */
  async close(): Promise<void> {
    const ovs = [...this.overlays.values()];
    this.overlays.clear();
    for (const o of ovs) {
      const dev = await o.dev.catch(() => null);
      if (dev) {
        this.forgetDevice(dev);
        await dev.close();
      }
    }
    const files = [...this.files.values()];
    this.files.clear();
    for (const f of files) {
      const dev = await f.catch(() => null);
      if (!dev) continue;
      this.forgetDevice(dev);
      if (!dev.readOnly) await new Promise<void>((res) => dev.flush(() => res()));
      await dev.close();
    }
  }
}
