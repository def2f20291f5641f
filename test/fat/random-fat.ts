/** Random FATs for the chain-walker property tests (fuzz.test.ts, engine.test.ts). */
import type { Bpb, FatType } from '../../src/fat/bpb.js';

const CLUSTERS = { FAT12: 3000, FAT16: 20000, FAT32: 70000 } as const;

/**
 * A FAT of `type` made of `seed` repeated (lots of short cycles and wild links), with the few geometry
 * fields a `FatTable` and the chain walker read (the table at offset 0 of its device).
 */
export function randomFat(type: FatType, seed: Uint8Array): { fat: Buffer; bpb: Bpb } {
  const clusterCount = CLUSTERS[type];
  const fatBytes = type === 'FAT12' ? Math.ceil(((clusterCount + 2) * 3) / 2) + 1 : (clusterCount + 2) * (type === 'FAT16' ? 2 : 4);
  const fat = Buffer.alloc(fatBytes);
  for (let i = 0; i < fat.length; i++) fat[i] = seed[i % seed.length]!;
  const bpb = { type, clusterCount, maxCluster: clusterCount + 1, fatBytes, fatOffset: 0 } as unknown as Bpb;
  return { fat, bpb };
}
