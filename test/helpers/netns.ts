/**
 * Network namespaces for interop/e2e tests and benchmarks: a "switch" namespace holding a Linux bridge,
 * and host namespaces each with one veth (`eth0`) plugged into it. Nothing is created in the caller's own
 * namespace (veths are created inside the switch namespace and their peer moved straight into the host
 * namespace), names carry the pid, and everything is deleted by `destroy()` — also at process exit if a
 * test forgot or crashed. Needs root (CAP_NET_ADMIN) and iproute2.
 *
 *   const lab = await NetLab.create('dhcp');
 *   const srv = await lab.addHost('srv', { address: '198.18.0.2/24' });
 *   const p = lab.start(srv, 'node', [...]);        // ip netns exec <ns> node ...; killed by pid
 *   await lab.exec(srv, 'ip', ['addr']);
 *   await lab.destroy();
 */
import { execFileSync, type SpawnOptions } from 'node:child_process';
import { run, startProcess, which, type RunResult } from './tools.js';

export interface NetHost {
  /** Short name given by the test. */
  name: string;
  /** Namespace name (unique per process). */
  ns: string;
  /** Interface inside the namespace. */
  ifname: string;
  mac: string;
  /** CIDR, when one was given. */
  address?: string;
}

type Proc = ReturnType<typeof startProcess>;

const live = new Set<NetLab>();
process.on('exit', () => {
  for (const lab of live) lab.destroySync();
});

let counter = 0;

export class NetLab {
  readonly prefix: string;
  readonly switchNs: string;
  readonly hosts: NetHost[] = [];
  private readonly procs: Proc[] = [];
  private readonly namespaces: string[] = [];
  private destroyed = false;

  private constructor(tag: string) {
    this.prefix = `nb-${tag}-${process.pid}-${counter++}`;
    this.switchNs = `${this.prefix}-sw`;
  }

  /** True when namespaces can be made here (root and `ip` present). */
  static available(): boolean {
    return process.getuid?.() === 0 && which('ip') !== null;
  }

  static async create(tag: string): Promise<NetLab> {
    const lab = new NetLab(tag);
    live.add(lab);
    try {
      await lab.addNs(lab.switchNs);
      await lab.ip(lab.switchNs, ['link', 'add', 'br0', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
      // No IGMP snooping surprises, no ageing surprises for broadcast-heavy tests.
      await lab.ip(lab.switchNs, ['link', 'set', 'br0', 'type', 'bridge', 'mcast_snooping', '0']);
      await lab.ip(lab.switchNs, ['link', 'set', 'br0', 'up']);
    } catch (e) {
      await lab.destroy();
      throw e;
    }
    return lab;
  }

  private async addNs(ns: string): Promise<void> {
    await run('ip', ['netns', 'add', ns]);
    this.namespaces.push(ns);
    await this.ip(ns, ['link', 'set', 'lo', 'up']);
  }

  private ip(ns: string, args: string[]): Promise<RunResult> {
    return run('ip', ['-n', ns, ...args]);
  }

  /**
   * Adds a host namespace wired to the bridge. `mac` sets the interface's address (e.g. a Raspberry Pi OUI);
   * `address` (CIDR) configures IPv4, otherwise the interface is up with no address (a DHCP client).
   */
  async addHost(name: string, opts: { address?: string; mac?: string; gateway?: string } = {}): Promise<NetHost> {
    if (!/^[a-z0-9]{1,8}$/.test(name)) throw new Error(`host name ${name}: 1-8 lower-case letters/digits`);
    const ns = `${this.prefix}-${name}`;
    await this.addNs(ns);
    const port = `p-${name}`; // lives in the switch namespace: unique there, max 10 chars
    await this.ip(this.switchNs, ['link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    await this.ip(this.switchNs, ['link', 'set', port, 'master', 'br0', 'up']);
    if (opts.mac) await this.ip(ns, ['link', 'set', 'eth0', 'address', opts.mac]);
    await this.ip(ns, ['link', 'set', 'eth0', 'up']);
    if (opts.address) await this.ip(ns, ['addr', 'add', opts.address, 'dev', 'eth0']);
    if (opts.gateway) await this.ip(ns, ['route', 'add', 'default', 'via', opts.gateway]);
    const show = await this.ip(ns, ['-o', 'link', 'show', 'eth0']);
    const mac = /link\/ether ([0-9a-f:]{17})/.exec(show.stdout.toString())?.[1] ?? '';
    const host: NetHost = { name, ns, ifname: 'eth0', mac, ...(opts.address ? { address: opts.address } : {}) };
    this.hosts.push(host);
    return host;
  }

  /** Runs a command to completion inside the host's namespace. */
  exec(host: NetHost, cmd: string, args: string[], opts: Parameters<typeof run>[2] = {}): Promise<RunResult> {
    return run('ip', ['netns', 'exec', host.ns, cmd, ...args], opts);
  }

  /**
   * Starts a long-running process inside the namespace (`ip netns exec` execs the command, so the pid is
   * the command's own). It is stopped by pid in `destroy()`, or by tools.ts at process exit.
   */
  start(host: NetHost, cmd: string, args: string[], opts: SpawnOptions = {}): Proc {
    const p = startProcess('ip', ['netns', 'exec', host.ns, cmd, ...args], opts);
    this.procs.push(p);
    return p;
  }

  /** Stops the processes started here, then deletes every namespace (their veths and the bridge go with them). */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    await Promise.all(this.procs.map((p) => p.stop()));
    for (const ns of this.namespaces.slice().reverse()) {
      await run('ip', ['netns', 'del', ns], { allowFail: true });
    }
    live.delete(this);
  }

  /** Last-resort cleanup at process exit (synchronous). */
  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const p of this.procs) {
      if (p.pid !== undefined && p.exitCode === null && p.signalCode === null) {
        try {
          process.kill(p.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    for (const ns of this.namespaces.slice().reverse()) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        /* already gone */
      }
    }
    live.delete(this);
  }
}
