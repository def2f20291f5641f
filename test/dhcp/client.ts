/**
 * A small raw DHCP client for tests and the benchmark: builds PXE DISCOVERs/REQUESTs for a persona and
 * collects replies on a UDP socket.
 */
import type { Socket } from 'node:dgram';
import { emptyMessage, parseDhcp, serializeDhcp, type DhcpMessage, type DhcpOption } from '../../src/dhcp/packet.js';

export interface Persona {
  mac: string;
  /** Option 60; omit for a non-PXE client. */
  vendorClass?: string;
  /** Option 93. */
  arch?: number;
  /** Option 97 (type byte included). */
  uuid?: Buffer;
  /** Option 77. */
  userClass?: string;
}

export const PERSONAS = {
  bios: { mac: '02:42:c6:12:00:31', vendorClass: 'PXEClient:Arch:00000:UNDI:002001', arch: 0, uuid: Buffer.concat([Buffer.from([0]), Buffer.alloc(16, 0x31)]) },
  uefi: { mac: '02:42:c6:12:00:32', vendorClass: 'PXEClient:Arch:00007:UNDI:003000', arch: 7, uuid: Buffer.concat([Buffer.from([0]), Buffer.alloc(16, 0x32)]) },
  pi4: {
    mac: 'dc:a6:32:c2:1f:fe',
    vendorClass: 'PXEClient:Arch:00000:UNDI:002001',
    arch: 0,
    uuid: Buffer.from('005250693411 31c000 32c21ffe b66c4c8a'.replace(/\s/g, ''), 'hex'),
  },
  plain: { mac: '02:42:c6:12:00:34' },
} satisfies Record<string, Persona>;

export function buildRequest(
  p: Persona,
  xid: number,
  opts: { type?: number; ciaddr?: string; flags?: number; giaddr?: string } = {},
): Buffer {
  const m: DhcpMessage = emptyMessage();
  m.op = 1;
  m.xid = xid;
  m.flags = opts.flags ?? 0;
  m.ciaddr = opts.ciaddr ?? '0.0.0.0';
  m.giaddr = opts.giaddr ?? '0.0.0.0';
  Buffer.from(p.mac.replace(/:/g, ''), 'hex').copy(m.chaddr);
  const o: DhcpOption[] = [{ code: 53, data: Buffer.from([opts.type ?? 1]) }];
  o.push({ code: 55, data: Buffer.from([1, 3, 43, 60, 66, 67]) });
  if (p.arch !== undefined) o.push({ code: 93, data: Buffer.from([p.arch >> 8, p.arch & 0xff]) });
  if (p.arch !== undefined) o.push({ code: 94, data: Buffer.from([1, 2, 1]) });
  if (p.uuid) o.push({ code: 97, data: p.uuid });
  if (p.userClass) o.push({ code: 77, data: Buffer.from(p.userClass) });
  if (p.vendorClass) o.push({ code: 60, data: Buffer.from(p.vendorClass) });
  m.options = o;
  return serializeDhcp(m);
}

export interface Received {
  msg: DhcpMessage;
  from: string;
  port: number;
  at: number;
}

/** Collects parsed BOOTREPLYs arriving on `sock` for `ms` milliseconds (optionally only matching ones). */
export function collect(sock: Socket, ms: number, filter: (r: Received) => boolean = () => true): Promise<Received[]> {
  return new Promise((resolve) => {
    const got: Received[] = [];
    const on = (buf: Buffer, rinfo: { address: string; port: number }): void => {
      const r = parseDhcp(buf);
      if (!r.ok || r.value.op !== 2) return;
      const rec = { msg: r.value, from: rinfo.address, port: rinfo.port, at: performance.now() };
      if (filter(rec)) got.push(rec);
    };
    sock.on('message', on);
    setTimeout(() => {
      sock.off('message', on);
      resolve(got);
    }, ms);
  });
}

/** Waits for the first reply matching `filter`, or null after `ms`. */
export function waitFor(sock: Socket, ms: number, filter: (r: Received) => boolean): Promise<Received | null> {
  return new Promise((resolve) => {
    const on = (buf: Buffer, rinfo: { address: string; port: number }): void => {
      const r = parseDhcp(buf);
      if (!r.ok || r.value.op !== 2) return;
      const rec = { msg: r.value, from: rinfo.address, port: rinfo.port, at: performance.now() };
      if (filter(rec)) {
        clearTimeout(timer);
        sock.off('message', on);
        resolve(rec);
      }
    };
    const timer = setTimeout(() => {
      sock.off('message', on);
      resolve(null);
    }, ms);
    sock.on('message', on);
  });
}
