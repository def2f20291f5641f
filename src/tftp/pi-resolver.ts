/**
 * Raspberry Pi network boot: the firmware asks for `<8-hex-serial>/<path>`. This resolver maps the serial
 * to a disk image and serves `<path>` from the image's FAT boot partition (the configured partition, or the
 * first FAT one), reading the FAT straight out of the image: no mount, no copy.
 *
 * Opened volumes are cached per device and partition; a FatVolume follows writes to its device itself
 * (it listens to `written` events), so a kernel updated over NBD is what the next boot gets.
 */
import type { BlockDevice } from '../disk/blockdev.js';
import { openBootVolume } from '../fat/boot.js';
import type { FatVolume } from '../fat/volume.js';
import { NotFoundError } from '../util/errors.js';
import type { FileSource } from '../util/source.js';
import type { ResolveRequest, TftpResolver } from './resolver.js';

export interface PiImageAssignment {
  device: BlockDevice;
  /** Partition number holding the boot files; default: the first FAT partition. 0 = unpartitioned image. */
  partition?: number;
}

export type PiAssignmentLookup = (serial: string, address: string) => PiImageAssignment | null;

const SERIAL = /^[0-9a-f]{8}$/;

export class PiImageResolver implements TftpResolver {
  private readonly lookup: PiAssignmentLookup;
  private readonly volumes = new WeakMap<BlockDevice, Map<number, Promise<FatVolume>>>();

  /**
   * `assignments`: serial (8 hex digits, any case) → image, or a function answering that (the registry).
   */
  constructor(assignments: Map<string, PiImageAssignment> | PiAssignmentLookup) {
    if (typeof assignments === 'function') {
      this.lookup = assignments;
    } else {
      const m = new Map<string, PiImageAssignment>();
      for (const [k, v] of assignments) m.set(k.toLowerCase(), v);
      this.lookup = (serial) => m.get(serial) ?? null;
    }
  }

  async resolve(req: ResolveRequest): Promise<FileSource | null> {
    const slash = req.path.indexOf('/');
    if (slash < 0) return null;
    const serial = req.path.slice(0, slash).toLowerCase();
    const rest = req.path.slice(slash + 1);
    if (!SERIAL.test(serial) || rest === '') return null;
    const a = this.lookup(serial, req.address);
    if (!a) return null;
    const vol = await this.volume(a.device, a.partition ?? -1);
    try {
      return await vol.open(rest);
    } catch (e) {
      if (e instanceof NotFoundError) return null;
      throw e;
    }
  }

  /** The FAT volume of `dev` (partition -1: the first FAT partition), opened once and shared. */
  volume(dev: BlockDevice, partition: number): Promise<FatVolume> {
    let perDev = this.volumes.get(dev);
    if (!perDev) {
      perDev = new Map();
      this.volumes.set(dev, perDev);
    }
    let v = perDev.get(partition);
    if (!v) {
      v = this.openVolume(dev, partition);
      perDev.set(partition, v);
      // A failure is not cached: the image may be fixed (or finish being written) before the next boot.
      v.catch(() => {
        if (perDev!.get(partition) === v) perDev!.delete(partition);
      });
    }
    return v;
  }

  private async openVolume(dev: BlockDevice, partition: number): Promise<FatVolume> {
    return (await openBootVolume(dev, partition >= 0 ? partition : undefined)).volume;
  }
}
