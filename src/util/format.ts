/** Sizes for people: 1536 → '1.5 KiB', 67108864 → '64 MiB'. */
const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function humanSize(n: number): string {
  let u = 0;
  let v = n;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  if (u === 0) return `${n} B`;
  const s = v >= 100 || Number.isInteger(v) ? v.toFixed(0) : v.toFixed(1).replace(/\.0$/, '');
  return `${s} ${UNITS[u]}`;
}
