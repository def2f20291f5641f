/** `netbootd serve`, `status`, `add-pi`, `add-host`: the daemon and its config from the command line. */
import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { Daemon, overlayIdentity } from '../daemon.js';
import { resetOverlay } from '../disk/cow.js';
import { ClientTable } from '../registry/clients.js';
import type { Config } from '../config/schema.js';
import { addHost, addPi, editConfigFile } from '../config/edit.js';
import { loadConfig } from '../config/load.js';
import { columns } from './common.js';
import { checkConfig, formatReport } from '../registry/check.js';
import { follow, formatBoots, formatJourney, type BootSummary, type JourneyJson } from './journey.js';

export const DEFAULT_CONFIG = '/etc/netbootd/netbootd.yaml';

export function registerServeCommands(program: Command): void {
  program
    .command('serve')
    .description('run the daemon: proxy DHCP, TFTP and NBD from the images in the config')
    .option('-c, --config <file>', 'config file', DEFAULT_CONFIG)
    .option('--no-watch', 'do not reload when the config file changes (SIGHUP still reloads)')
    .action(async (opts: { config: string; watch: boolean }) => {
      const daemon = new Daemon({ configPath: opts.config, watch: opts.watch });
      let stopping = false;
      const stop = (signal: string): void => {
        if (stopping) {
          process.stderr.write(`netbootd: ${signal} again, exiting now\n`);
          process.exit(1);
        }
        stopping = true;
        const force = setTimeout(() => {
          process.stderr.write('netbootd: shutdown took more than 10 s, exiting\n');
          process.exit(1);
        }, 10_000);
        force.unref();
        daemon.stop().then(
          () => process.exit(0),
          (e: unknown) => {
            process.stderr.write(`netbootd: shutdown failed: ${(e as Error).message}\n`);
            process.exit(1);
          },
        );
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
      process.on('SIGHUP', () => void daemon.reload('SIGHUP'));
      await daemon.start();
    });

  program
    .command('check')
    .description('validate the config and inspect every image: partitions, boot files, kernel command lines')
    .option('-c, --config <file>', 'config file', DEFAULT_CONFIG)
    .option('-q, --quiet', 'print only problems')
    .action(async (opts: { config: string; quiet?: boolean }) => {
      const report = await checkConfig(opts.config);
      process.stdout.write(formatReport(report, opts.quiet));
      if (report.errors > 0) process.exitCode = 1;
    });

  program
    .command('status')
    .description('show clients with their boot stage, transfers and NBD connections of the running daemon; with CLIENT, its boot journey')
    .argument('[client]', 'a Pi serial, MAC, address or name: its boots, step by step, with hints')
    .option('-c, --config <file>', 'config file (for the status address and port)', DEFAULT_CONFIG)
    .option('--url <url>', 'status endpoint, instead of the one in the config')
    .option('--json', 'print the raw JSON')
    .option('-f, --follow', 'follow boots live: a line each time a client moves on (Ctrl-C stops)')
    .action(async (client: string | undefined, opts: { config: string; url?: string; json?: boolean; follow?: boolean }) => {
      let url = opts.url;
      const loaded = await loadConfig(opts.config);
      const s = loaded.ok ? loaded.config.status : { address: '127.0.0.1', port: 9810, token: undefined };
      if (!url) url = statusUrl(s);
      if (opts.follow) {
        const stop = new AbortController();
        process.once('SIGINT', () => stop.abort());
        await follow(url, statusHeaders(s.token), (line) => process.stdout.write(line), stop.signal);
        return;
      }
      let body: StatusJson;
      let res: Response;
      try {
        res = await fetch(`${url.replace(/\/$/, '')}/${client !== undefined ? `journey?client=${encodeURIComponent(client)}` : 'status'}`, { headers: statusHeaders(s.token) });
        body = (await res.json()) as StatusJson;
      } catch (e) {
        throw new Error(`cannot reach the daemon at ${url} (${(e as Error).cause instanceof Error ? ((e as Error).cause as Error).message : (e as Error).message}); is it running?`);
      }
      if (!res.ok) throw new Error(`the daemon at ${url} refused: ${(body as { error?: string }).error ?? `HTTP ${res.status}`}`);
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(body, null, 2)}\n`);
        return;
      }
      process.stdout.write(client !== undefined ? formatJourney(body as unknown as JourneyJson) : formatStatus(body));
    });

  program
    .command('reset-overlay')
    .description("delete a client's copy-on-write overlay of an image: its next boot sees the pristine image")
    .argument('<image>', 'image name (mode: cow)')
    .argument('<client>', 'Pi serial, MAC address or IP address')
    .option('-c, --config <file>', 'config file', DEFAULT_CONFIG)
    .action(async (image: string, client: string, opts: { config: string }) => {
      const loaded = await loadConfig(opts.config);
      if (!loaded.ok) throw new Error(`${opts.config} is not valid; run: netbootd check --config ${opts.config}`);
      const c = loaded.config;
      const url = `${statusUrl(c.status)}/reset-overlay`;
      let r: { image: string; identity: string; existed: boolean };
      try {
        const res = await fetch(url, {
          method: 'POST', body: JSON.stringify({ image, client }), headers: { ...statusHeaders(c.status.token), 'content-type': 'application/json' },
        });
        const body = (await res.json()) as typeof r & { error?: string };
        if (!res.ok) throw new Error(body.error ?? `status ${res.status}`);
        r = body;
      } catch (e) {
        if (!c.status.enabled || isConnRefused(e)) {
          // No daemon running: nothing has the overlay open, delete it here.
          r = await resetOverlayOffline(c, image, client);
        } else throw e;
      }
      process.stdout.write(r.existed ? `reset the overlay ${r.identity} of image ${r.image}\n` : `image ${r.image} has no overlay for ${r.identity}: nothing to reset\n`);
    });

  program
    .command('add-pi')
    .description('add (or update) a Raspberry Pi in the config, keeping its comments')
    .argument('<serial-or-mac>', 'serial as in /proc/cpuinfo (8 or 16 hex digits), or the Pi\'s MAC (EEPROM TFTP_PREFIX=2, or 1 with --prefix)')
    .requiredOption('--image <name>', 'image it boots')
    .option('--partition <n>', 'boot partition, when not the image\'s', (v) => Number.parseInt(v, 10))
    .option('--mac <mac>', 'its MAC, for a Pi listed by serial (TFTP_PREFIX=2 paths, a Pi 3\'s bootcode.bin)')
    .option('--prefix <dir>', 'its TFTP_PREFIX_STR directory (EEPROM TFTP_PREFIX=1)')
    .option('--model <n>', 'Pi family 3, 4 or 5 (what `netbootd check` expects in its boot partition)', (v) => Number.parseInt(v, 10))
    .option('-c, --config <file>', 'config file', DEFAULT_CONFIG)
    .action(async (serial: string, opts: { image: string; partition?: number; mac?: string; prefix?: string; model?: number; config: string }) => {
      const more = {
        ...(opts.mac !== undefined ? { mac: opts.mac } : {}),
        ...(opts.prefix !== undefined ? { prefix: opts.prefix } : {}),
        ...(opts.model !== undefined ? { model: opts.model } : {}),
      };
      const r = await editConfigFile(opts.config, (text) => addPi(text, opts.config, serial, opts.image, opts.partition, more));
      for (const w of r.warnings) process.stderr.write(`netbootd: warning: ${w}\n`);
      process.stdout.write(`${r.summary} in ${opts.config} (a running daemon picks it up by itself)\n`);
    });

  program
    .command('add-host')
    .description('add (or update) a PC by MAC address in the config, keeping its comments')
    .argument('<mac>', 'MAC address, e.g. 52:54:00:aa:bb:01')
    .option('--image <name>', 'image whose boot partition TFTP serves')
    .option('--tftp-root <dir>', 'directory TFTP serves instead of an image')
    .option('--boot-file <file>', 'boot file for every firmware type (default: pxelinux.0 / syslinux.efi)')
    .option('--name <name>', 'a name for logs')
    .option('-c, --config <file>', 'config file', DEFAULT_CONFIG)
    .action(async (mac: string, opts: { image?: string; tftpRoot?: string; bootFile?: string; name?: string; config: string }) => {
      const target = {
        ...(opts.image !== undefined ? { image: opts.image } : {}),
        ...(opts.tftpRoot !== undefined ? { tftpRoot: opts.tftpRoot } : {}),
        ...(opts.bootFile !== undefined ? { bootFile: opts.bootFile } : {}),
        ...(opts.name !== undefined ? { name: opts.name } : {}),
      };
      const r = await editConfigFile(opts.config, (text) => addHost(text, opts.config, mac, target));
      process.stdout.write(`${r.summary} in ${opts.config} (a running daemon picks it up by itself)\n`);
    });
}

/** Where `status` and `reset-overlay` reach the daemon (a wildcard listen address is reached on loopback). */
function statusUrl(s: { address: string; port: number }): string {
  const a = s.address === '0.0.0.0' ? '127.0.0.1' : s.address === '::' ? '::1' : s.address;
  return `http://${a.includes(':') ? `[${a}]` : a}:${s.port}`;
}

function statusHeaders(token: string | undefined): Record<string, string> {
  return token ? { authorization: `Bearer ${token}` } : {};
}

function isConnRefused(e: unknown): boolean {
  const cause = (e as { cause?: { code?: string } }).cause;
  return cause?.code === 'ECONNREFUSED';
}

async function resetOverlayOffline(c: Config, image: string, client: string): Promise<{ image: string; identity: string; existed: boolean }> {
  const img = c.images[image];
  if (!img) throw new Error(`image \`${image}\` is not in the config`);
  if (img.mode !== 'cow') throw new Error(`image \`${image}\` is ${img.mode}, not copy-on-write: it has no overlays`);
  const clients = new ClientTable();
  try {
    clients.load(JSON.parse(readFileSync(`${c.server.stateDir}/clients.json`, 'utf8')));
  } catch {
    /* no identities saved */
  }
  const identity = overlayIdentity(client, clients);
  return { image, identity, existed: await resetOverlay(c.server.stateDir, img.export!, identity) };
}

interface StatusJson {
  uptimeS: number;
  config: string;
  clients: Array<{ ip: string; mac?: string; serial?: string; client?: string; firmware?: string; lastSeen: string; lastBoot?: string; lastFile?: string }>;
  tftp: {
    active: number;
    served: number;
    notFound: number;
    failed: number;
    transfers?: Array<{ ip: string; mac?: string; serial?: string; path: string; size: number; bytes: number; percent: number }>;
  } | null;
  nbd: { connections: number; clients?: Array<{ ip: string; mac?: string; serial?: string; export: string | null; bytesRead: number; bytesWritten: number }> } | null;
  http?: { served: number; notFound: number; failed: number; bytes: number; recent?: Array<{ ip: string; mac?: string; serial?: string; path: string; status: number; bytes: number; ms: number }> } | null;
  /** Clients that asked and were not served, newest first. */
  unserved?: Array<{ ip: string; serial?: string; mac?: string; path: string; reason: string; fix?: string; count: number; last: string }>;
  /** Boot journeys, most recently active first. */
  boots?: BootSummary[];
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

export function formatStatus(s: StatusJson): string {
  const out: string[] = [];
  out.push(`netbootd up ${s.uptimeS}s, config ${s.config}`);
  if (s.tftp) out.push(`TFTP: ${s.tftp.active} active, ${s.tftp.served} served, ${s.tftp.notFound} not found, ${s.tftp.failed} failed`);
  if (s.http) out.push(`HTTP: ${s.http.served} served, ${s.http.notFound} not found, ${s.http.failed} failed, ${s.http.bytes} bytes`);
  if (s.nbd) out.push(`NBD: ${plural(s.nbd.connections, 'connection')}`);
  const who = (c: { ip: string; mac?: string; serial?: string }): string => [c.serial ?? c.mac, c.ip].filter(Boolean).join(' ');
  if (s.tftp?.transfers?.length) {
    out.push('', columns([['TFTP TRANSFER', 'CLIENT', 'PROGRESS'], ...s.tftp.transfers.map((x) => [x.path, who(x), `${x.percent}% of ${x.size} bytes`])]).trimEnd());
  }
  if (s.http?.recent?.length) {
    const rows = s.http.recent.slice(-10).map((x) => [x.path, who(x), String(x.status), `${x.bytes} bytes in ${x.ms} ms`]);
    out.push('', columns([['HTTP FILE (LAST 10)', 'CLIENT', 'STATUS', 'SENT'], ...rows]).trimEnd());
  }
  if (s.nbd?.clients?.length) {
    out.push('', columns([['NBD EXPORT', 'CLIENT', 'READ', 'WRITTEN'], ...s.nbd.clients.map((c) => [c.export ?? '(handshake)', who(c), String(c.bytesRead), String(c.bytesWritten)])]).trimEnd());
  }
  if (s.unserved?.length) {
    out.push('', 'Asked but not served:');
    for (const u of s.unserved) {
      out.push(`  ${[u.serial ?? u.mac, u.ip].filter(Boolean).join(' ')}: ${u.reason} (${plural(u.count, 'request')}, last ${u.path})${u.fix ? `; to serve it: ${u.fix}` : ''}`);
    }
  }
  if (s.boots?.length) out.push('', formatBoots(s.boots).trimEnd());
  out.push('');
  if (s.clients.length === 0) out.push('no clients seen yet');
  else {
    const rows = [['IP', 'MAC', 'SERIAL', 'NAME', 'FIRMWARE', 'LAST BOOT', 'LAST FILE']];
    for (const c of s.clients) {
      rows.push([c.ip, c.mac ?? '-', c.serial ?? '-', c.client ?? '-', c.firmware ?? '-', c.lastBoot?.replace('T', ' ').slice(0, 19) ?? '-', c.lastFile ?? '-']);
    }
    out.push(columns(rows).trimEnd());
  }
  return `${out.join('\n')}\n`;
}
