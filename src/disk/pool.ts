/**
 * Shared open images: one FileBlockDevice per image file and mode, one CowBlockDevice per (export, client)
 * overlay, and the one-writer locks of read-write images. Everything that uses an image (NBD exports,
 * TFTP through FAT volumes, config reloads) goes through one pool, so a write by one user is seen, and
 * announced, on the device the others read.
 *
 * Image files that change under the daemon (deleted, replaced by a rename, truncated): every `file()` and
 * `overlay()` call checks the cached device (an fstat and a stat), `checkFiles()` checks them all (reloads,
 * the daemon's periodic check), and FLUSH and reads past the end find it too. A changed device is
 * *retired*: logged once, marked stale (its users get errors from then on), dropped from the pool (with
 * the overlays over it and whatever `retired()` caches above), and closed once idle. The next open uses
 * the file the name now holds (replaced) or fails clearly (deleted). An overlay whose base was retired is
 * retired with it; the next open of that client's overlay lays the same overlay files over the new base
 * (refused by the map header if the new base has another size).
 */
import fs from 'node:fs';
import { FileBlockDevice, type BlockDevice, type ImageChange } from './blockdev.js';
import { CowBlockDevice, overlayPaths, resetOverlay } from './cow.js';
import { silentLogger, type Logger } from '../util/log.js';

/** What new users of a retired image file get, for the log line. */
const NEXT: Record<ImageChange, string> = {
  replaced: 'new ones get the new file',
  deleted: 'new ones are refused until a file has its name again',
  truncated: 'new ones open it at its new size',
};

interface FileEntry {
  promise: Promise<FileBlockDevice>;
  /** Set once open. */
  dev?: FileBlockDevice;
}

interface OverlayEntry {
  dev: Promise<CowBlockDevice>;
  refs: number;
  /** The base device the overlay was opened over (set once known). */
  base?: FileBlockDevice;
  /** Set once open. */
  open?: CowBlockDevice;
}

export class DevicePool {
  private readonly files = new Map<string, FileEntry>();
  private readonly overlays = new Map<string, OverlayEntry>();
  private readonly writers = new Map<string, { address: string; count: number }>();

  constructor(protected readonly log: Logger = silentLogger) {}

  /**
   * The image file, opened once per mode. A failed open is not cached (the file may appear later). A
   * cached device is checked first: if its file changed, it is retired and the current file is opened.
   */
  async file(path: string, readOnly: boolean): Promise<FileBlockDevice> {
    const key = `${readOnly ? 'ro' : 'rw'}:${path}`;
    const cached = this.files.get(key);
    if (!cached) return this.openFile(key, path, readOnly);
    const dev = await cached.promise;
    if (!dev.stale) await dev.checkNow().catch(() => null); // a change retires it (synchronously, via onStale)
    if (!dev.stale) return dev;
    const now = this.files.get(key);
    return now ? now.promise : this.openFile(key, path, readOnly);
  }

  private openFile(key: string, path: string, readOnly: boolean): Promise<FileBlockDevice> {
    const entry: FileEntry = { promise: FileBlockDevice.open(path, { readOnly }) };
    this.files.set(key, entry);
    entry.promise.then(
      (dev) => {
        entry.dev = dev;
        dev.onStale((change, detail) => this.retireFile(key, entry, dev, change, detail));
      },
      () => {
        if (this.files.get(key) === entry) this.files.delete(key);
      },
    );
    return entry.promise;
  }

  private retireFile(key: string, entry: FileEntry, dev: FileBlockDevice, change: ImageChange, detail: string): void {
    if (this.files.get(key) === entry) this.files.delete(key);
    const overlays: string[] = [];
    for (const [k, ov] of this.overlays) {
      if (ov.base !== dev) continue;
      this.overlays.delete(k);
      overlays.push(k.replace('\0', '/'));
      if (ov.open) this.retireOverlay(ov.open);
      else ov.dev.then((d) => this.retireOverlay(d), () => {}); // still opening: whoever awaits it gets errors
    }
    this.log.warn(
      { image: dev.name, change, mode: dev.readOnly ? 'ro' : 'rw', ...(overlays.length ? { overlays } : {}) },
      `image file ${change} under the daemon: ${detail}; its open connections get I/O errors from now on, ${NEXT[change]}`,
    );
    this.retired(dev);
    dev.close().catch(() => {});
  }

  private retireOverlay(dev: CowBlockDevice): void {
    this.retired(dev);
    dev.close().catch(() => {});
  }

  /** Hook for caches keyed by device (ImagePool's boot volumes): `dev` will not be handed out again. */
  protected retired(_dev: BlockDevice): void {}

  /**
   * Checks every open image file and overlay (one fstat and one stat each); changed ones are retired.
   * Returns what changed (for logs and tests).
   */
  async checkFiles(): Promise<Array<{ name: string; change: ImageChange }>> {
    const out: Array<{ name: string; change: ImageChange }> = [];
    const devs: Array<FileBlockDevice | CowBlockDevice> = [];
    for (const e of this.files.values()) if (e.dev && !e.dev.stale) devs.push(e.dev);
    for (const e of this.overlays.values()) if (e.open && !e.open.stale) devs.push(e.open);
    await Promise.all(devs.map((d) => new Promise<void>((res) => d.check((err, change) => {
      if (!err && change) out.push({ name: d.name, change });
      res();
    }))));
    return out;
  }

  /** A client's overlay of a copy-on-write export, created when missing; `release()` exactly once when done. */
  async overlay(basePath: string, stateDir: string, exportName: string, identity: string): Promise<{ device: CowBlockDevice; release: () => void }> {
    const key = `${exportName}\0${identity}`;
    // The base, checked: a changed base retires it and the overlays over it before we look.
    const base = await this.file(basePath, true);
    let ov = this.overlays.get(key);
    if (ov?.open?.stale) {
      this.overlays.delete(key);
      this.retireOverlay(ov.open);
      ov = undefined;
    }
    if (!ov) {
      const entry: OverlayEntry = { dev: CowBlockDevice.open(base, stateDir, exportName, identity), refs: 0, base };
      ov = entry;
      this.overlays.set(key, entry);
      entry.dev.then(
        (dev) => {
          entry.open = dev;
          dev.onStale((change, detail) => {
            if (this.overlays.get(key) === entry) this.overlays.delete(key);
            this.log.warn({ overlay: dev.name, change, export: exportName, identity }, `copy-on-write overlay ${change} under the daemon: ${detail}; its NBD connections get errors from now on`);
            this.retireOverlay(dev);
          });
        },
        () => {
          if (this.overlays.get(key) === entry) this.overlays.delete(key);
        },
      );
    }
    const entry = ov;
    const device = await entry.dev;
    entry.refs++;
    let released = false;
    return {
      device,
      release: () => {
        if (released) return;
        released = true;
        // An overlay nobody wrote to has no files: nothing to keep (its bitmap is memory per client).
        if (--entry.refs === 0 && entry.open && !entry.open.materialized && this.overlays.get(key) === entry) {
          this.overlays.delete(key);
          entry.open.close().catch(() => {});
        }
      },
    };
  }

  /** The client's overlay when it has one (open, or on disk), else null: reading never creates overlays. */
  async existingOverlay(basePath: string, stateDir: string, exportName: string, identity: string): Promise<CowBlockDevice | null> {
    const key = `${exportName}\0${identity}`;
    await this.file(basePath, true); // the base, checked: a change retires it and the overlays over it
    const open = this.overlays.get(key);
    // An overlay without files yet (nobody wrote) is the base: the caller reads the base file.
    if (open && !open.open?.stale) return open.open && !open.open.materialized ? null : open.dev;
    const onDisk = await fs.promises.access(overlayPaths(stateDir, exportName, identity).map).then(() => true, () => false);
    if (!onDisk) return null;
    // It may have been opened while we looked.
    const now = this.overlays.get(key);
    if (now && !now.open?.stale) return now.open && !now.open.materialized ? null : now.dev;
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
      const dev = await f.promise.catch(() => null);
      if (!dev) continue;
      if (!dev.readOnly) await new Promise<void>((res) => dev.flush(() => res()));
      await dev.close();
    }
  }
}
