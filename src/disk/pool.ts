/**
 * Shared open images: one FileBlockDevice per image file and mode, one CowBlockDevice per (export, client)
 * overlay, and the one-writer locks of read-write images. Everything that uses an image (NBD exports,
 * TFTP through FAT volumes, config reloads) goes through one pool, so a write by one user is seen, and
 * announced, on the device the others read.
 */
import fs from 'node:fs';
import { FileBlockDevice } from './blockdev.js';
import { CowBlockDevice, overlayPaths, resetOverlay } from './cow.js';

export class DevicePool {
  private readonly files = new Map<string, Promise<FileBlockDevice>>();
  private readonly overlays = new Map<string, { dev: Promise<CowBlockDevice>; refs: number }>();
  private readonly writers = new Map<string, { address: string; count: number }>();

  /** The image file, opened once per mode. A failed open is not cached (the file may appear later). */
  file(path: string, readOnly: boolean): Promise<FileBlockDevice> {
    const key = `${readOnly ? 'ro' : 'rw'}:${path}`;
    let p = this.files.get(key);
    if (!p) {
      const opening = FileBlockDevice.open(path, { readOnly });
      p = opening;
      this.files.set(key, opening);
      opening.catch(() => {
        if (this.files.get(key) === opening) this.files.delete(key);
      });
    }
    return p;
  }

  /** A client's overlay of a copy-on-write export, created when missing; `release()` exactly once when done. */
  async overlay(basePath: string, stateDir: string, exportName: string, identity: string): Promise<{ device: CowBlockDevice; release: () => void }> {
    const key = `${exportName}\0${identity}`;
    let ov = this.overlays.get(key);
    if (!ov) {
      const entry = { dev: this.file(basePath, true).then((b) => CowBlockDevice.open(b, stateDir, exportName, identity)), refs: 0 };
      ov = entry;
      this.overlays.set(key, entry);
      entry.dev.catch(() => {
        if (this.overlays.get(key) === entry) this.overlays.delete(key);
      });
    }
    const entry = ov;
    const device = await entry.dev;
    entry.refs++;
    let released = false;
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

  /** The client's overlay when it has one (open, or on disk), else null: reading never creates overlays. */
  async existingOverlay(basePath: string, stateDir: string, exportName: string, identity: string): Promise<CowBlockDevice | null> {
    const open = this.overlays.get(`${exportName}\0${identity}`);
    if (open) return open.dev;
    const onDisk = await fs.promises.access(overlayPaths(stateDir, exportName, identity).map).then(() => true, () => false);
    if (!onDisk) return null;
    // It may have been opened while we looked.
    const now = this.overlays.get(`${exportName}\0${identity}`);
    if (now) return now.dev;
    const { device, release } = await this.overlay(basePath, stateDir, exportName, identity);
    release();
    return device;
  }

  /**
   * Deletes a client's overlay (it sees the pristine base again). Refused while an NBD connection uses it.
   * Returns whether there was one.
   */
  async resetOverlay(stateDir: string, exportName: string, identity: string): Promise<boolean> {
    const key = `${exportName}\0${identity}`;
    const ov = this.overlays.get(key);
    if (ov) {
      if (ov.refs > 0) throw Object.assign(new Error(`the overlay of ${identity} on '${exportName}' is in use by an NBD connection`), { code: 'IN_USE' });
      this.overlays.delete(key);
      await (await ov.dev.catch(() => null))?.close();
    }
    return resetOverlay(stateDir, exportName, identity);
  }

  /**
   * One writing client per read-write image unless shared: a release function, or the address of the
   * client holding it. Several connections from the holder's address are fine (a reconnecting kernel client).
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

  /** Flushes and closes everything (shutdown). */
  async close(): Promise<void> {
    const ovs = [...this.overlays.values()];
    this.overlays.clear();
    for (const o of ovs) await (await o.dev.catch(() => null))?.close();
    const files = [...this.files.values()];
    this.files.clear();
    for (const f of files) {
      const dev = await f.catch(() => null);
      if (!dev) continue;
      if (!dev.readOnly) await new Promise<void>((res) => dev.flush(() => res()));
      await dev.close();
    }
  }
}
