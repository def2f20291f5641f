/**
 * Interim boot stack, until `netbootd serve` (issue 6) exists: netbootd's own three servers composed by
 * hand — ProxyDhcpServer (StaticDhcpPolicy), TftpServer on a DirectoryResolver holding the image's FAT
 * files, NbdServer (StaticExportProvider over the image file). It checks netbootd's DHCP, TFTP and NBD
 * against real firmware (iPXE, EDK2, PXELINUX, syslinux.efi, the kernel's NBD client) before the daemon
 * exists; it does not serve TFTP from inside the image (that is the daemon's registry). Run in a namespace:
 *
 *   ip netns exec NS node --import tsx test/e2e/servers-stack.ts '<json>'   (tests, cwd = repo root)
 *   ip netns exec NS node dist/test/e2e/servers-stack.js '<json>'           (benchmark, built)
 *
 * JSON: { serverAddress, tftpRoot, image, exportName, clients: { mac: { bios?, uefi64? } }, pis?: boolean }
 * (src/dhcp's firmware names: the config's `uefi` is `uefi64` there).
 * Stops on SIGTERM.
 */
import { ProxyDhcpServer } from '../../src/dhcp/server.js';
import { StaticDhcpPolicy } from '../dhcp/static-policy.js';
import { TftpServer } from '../../src/tftp/server.js';
import { DirectoryResolver } from '../../src/tftp/resolver.js';
import { NbdServer } from '../../src/nbd/server.js';
import { StaticExportProvider } from '../../src/nbd/exports.js';
import { createLogger } from '../../src/util/log.js';

export interface ServersStackConfig {
  serverAddress: string;
  tftpRoot: string;
  image: string;
  exportName: string;
  clients: Record<string, { bios?: string; uefi64?: string }>;
  pis?: boolean;
}

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2] ?? '{}') as ServersStackConfig;
  const logger = createLogger({ level: (process.env.E2E_SERVERS_LOG as 'info' | 'debug' | undefined) ?? 'info' });
  const dhcp = new ProxyDhcpServer({
    policy: new StaticDhcpPolicy({ clients: cfg.clients, answerPis: cfg.pis ?? false, serverAddress: cfg.serverAddress }),
    logger,
    serverAddress: cfg.serverAddress,
  });
  const tftp = new TftpServer({ resolver: new DirectoryResolver(cfg.tftpRoot), logger, address: '0.0.0.0', port: 69, replyAddress: cfg.serverAddress });
  const nbd = new NbdServer({ exports: new StaticExportProvider([{ name: cfg.exportName, path: cfg.image, mode: 'readwrite' }]), logger });
  await dhcp.start();
  await tftp.listen();
  await nbd.listen(10809, '0.0.0.0');
  const stop = (): void => {
    void Promise.allSettled([dhcp.stop(), tftp.close(), nbd.close()]).finally(() => setTimeout(() => process.exit(0), 50));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e: unknown) => {
  process.stderr.write(`servers-stack: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exit(2);
});
