/**
 * CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), the checksum of GPT headers and entry arrays.
 * Node 20 has no `zlib.crc32`, hence this table-driven version.
 */
const TABLE: Uint32Array = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** Continues a CRC over `buf[start, end)`; start from 0 for a fresh checksum. */
export function crc32Update(crc: number, buf: Uint8Array, start = 0, end = buf.length): number {
  let c = ~crc >>> 0;
  for (let i = start; i < end; i++) c = TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

/** The CRC-32 of `buf` as an unsigned 32-bit number (`crc32(Buffer.from('123456789')) === 0xcbf43926`). */
export function crc32(buf: Uint8Array): number {
  return crc32Update(0, buf);
}
