/**
 * The daemon's DevicePool plus one boot FAT volume per device. A FatVolume follows writes to its device
 * itself; on top of that, a write over a partition table or a boot sector drops the cached volume, so even
 * a client that rewrites its whole boot partition over NBD gets exactly those bytes on its next TFTP read.
 */
import type { BlockDevice } from '../disk/blockdev.js';
import { DevicePool } from '../disk/pool.js';
import type { FatVolume } from '../fat/volume.js';
import { silentLogger, type Logger } from '../util/log.js';
import { openBootVolume } from '../fat/boot.js';

/** Bytes at the start of a device / partition (and at the end of a device: GPT backup) whose change means "re-read the structure". */
const HEAD_BYTES = 64 * 1024;

interface VolumeEntry {
  promise: Promise<{ volume: FatVolume; start: number }>;
  /** Set once open, so the write path (every NBD write) checks it without a promise callback. */
  open?: { volume: FatVolume; start: number };
}

export class ImagePool extends DevicePool {
  /** Devices live as long as the pool or until retired (their image file changed): a plain Map, emptied by `retired`. */
  private readonly volumes = new Map<BlockDevice, Map<number, VolumeEntry>>();

  constructor(log: Logger = silentLogger) {
    super(log);
  }

  /** A retired device's boot volumes are closed and forgotten (the next TFTP request opens the current file). */
  protected override retired(dev: BlockDevice): void {
    const map = this.volumes.get(dev);
    if (!map) return;
    this.volumes.delete(dev);
    for (const v of map.values()) v.promise.then(({ volume }) => volume.close(), () => {});
    map.clear();
  }

  /** The boot FAT volume of a device (partition: configured number, or undefined for the first FAT). */
  async bootVolume(dev: BlockDevice, partition?: number): Promise<FatVolume> {
    if (dev.stale) throw dev.stale; // retired between the lookup and here: nothing to cache for it
    let perDev = this.volumes.get(dev);
    if (!perDev) {
      const map = new Map<number, VolumeEntry>();
      perDev = map;
      this.volumes.set(dev, map);
      dev.onWritten((off, len) => this.onWrite(dev, map, off, len));
    }
    const key = partition ?? -1;
    let v = perDev.get(key);
    if (!v) {
      const entry: VolumeEntry = {
        promise: openBootVolume(dev, partition).then(({ volume, location }) => ({ volume, start: location.partition?.start ?? 0 })),
      };
      v = entry;
      perDev.set(key, entry);
      entry.promise.then((o) => (entry.open = o), () => {});
      const map = perDev;
      // A failure is not cached: the image may be fixed (or finish being written) before the next boot.
      entry.promise.catch(() => {
        if (map.get(key) === entry) map.delete(key);
      });
    }
    return (await v.promise).volume;
  }

  /**
   * Forgets every cached boot volume (on reload): writes made by another process (`netbootd prep`, `cp`)
   * are not announced to this one, so a reload is how they are picked up.
   */
  dropVolumes(): void {
    for (const map of this.volumes.values()) {
      for (const v of map.values()) v.promise.then(({ volume }) => volume.close(), () => {});
      map.clear();
    }
  }

  private onWrite(dev: BlockDevice, volumes: Map<number, VolumeEntry>, off: number, len: number): void {
    if (volumes.size === 0) return;
    const end = off + len;
    const tableHit = off < HEAD_BYTES || end > dev.size - HEAD_BYTES;
    for (const [key, v] of volumes) {
      if (!v.open) {
        // Still opening: it may have read the structures before this write. Whoever awaits it keeps it;
        // the next user opens afresh.
        volumes.delete(key);
        v.promise.then(({ volume }) => volume.close(), () => {});
        continue;
      }
      const { volume, start } = v.open;
      if (!(tableHit || (off < start + HEAD_BYTES && end > start))) continue;
      volumes.delete(key);
      volume.close();
      this.log.debug({ device: dev.name, offset: off, length: len }, 'boot structures rewritten: FAT volume reopened on next use');
    }
  }
}
