/**
 * The NBD handshake (fixed newstyle): client flags, then options in, until the client picks an export
 * (NBD_OPT_GO or NBD_OPT_EXPORT_NAME). Out: the open export, its transmission flags, whether structured
 * replies and the base:allocation context were negotiated, and the bytes that followed the final option
 * (the first requests). NBD_OPT_STARTTLS upgrades the connection's stream in place.
 */
import type net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { Logger } from '../util/log.js';
import * as P from './packet.js';
import { certNames, verifiedBy } from './client-cert.js';
import { type NbdContext, warnLimited } from './context.js';
import { type NbdClient, type NbdRefusal, type OpenExport, isRefusal } from './exports.js';

/** The metadata context id of base:allocation on this server. */
export const META_ID_BASE_ALLOCATION = 1;
const PREFERRED_BLOCK = 4096;

/** What the handshake chose. */
export interface Negotiated {
  exp: OpenExport;
  /** Transmission flags sent to the client. */
  flags: number;
  structured: boolean;
  /** base:allocation was set for this export (BLOCK_STATUS is allowed). */
  baseAllocation: boolean;
  /** Bytes received after the final option: the first requests. */
  rest: Buffer | null;
}

/** What the handshake needs of its connection. */
export interface NegotiationHost {
  readonly client: NbdClient;
  log: Logger;
  readonly closed: boolean;
  readonly stream: Duplex;
  send(buf: Buffer): void;
  destroy(): void;
  /** Ends the connection gracefully (after OPT_ABORT). */
  end(): void;
  /** Moves the connection onto a stream made over the raw socket (`leftover` is given back to the socket first). */
  upgrade(leftover: Buffer | null, make: (raw: net.Socket) => tls.TLSSocket): tls.TLSSocket;
  /** The client picked an export: transmission starts. */
  negotiated(result: Negotiated): void;
}

type Step = 'flags' | 'optHeader' | 'optData' | 'busy' | 'done';

export class Negotiation {
  private chunks: Buffer[] = [];
  private bytes = 0;
  private step: Step = 'flags';
  private noZeroes = false;
  private fixedNewstyle = false;
  private opt = 0;
  private optLen = 0;
  private tlsActive = false;
  private structured = false;
  private metaExport: string | null = null;
  private metaBaseAllocation = false;

  constructor(private readonly ctx: NbdContext, private readonly host: NegotiationHost) {}

  /** Sends the server's greeting. */
  start(): void {
    this.host.send(P.buildGreeting());
  }

  onData(chunk: Buffer): void {
    if (this.step === 'done') return;
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    if (this.bytes > this.ctx.limits.maxOptionLength + 65536) {
      // A client may not send the next option before the reply to the last one: this is a flood.
      this.warn('hsflood', { bytes: this.bytes }, 'nbd handshake flood; closing');
      this.host.destroy();
      return;
    }
    this.pump();
  }

  /** A reply could not be written at once: read nothing more until it drains. */
  onWriteBlocked(): void {
    this.host.stream.pause();
  }

  onDrain(): void {
    this.host.stream.resume();
    if (this.step === 'optHeader') this.pump();
  }

  /** The client half-closed during the handshake. */
  onEnd(): void {
    this.host.end();
  }

  private warn(what: string, obj: object, msg: string): void {
    warnLimited(this.ctx.rate, this.host.log, `${what}:${this.host.client.address}`, obj, msg);
  }

  /** Takes exactly n buffered bytes (cold path: small concatenations are fine here). */
  private take(n: number): Buffer | null {
    if (this.bytes < n) return null;
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.bytes = rest.length;
    return out;
  }

  /** Everything buffered (the connection moves on: TLS, or transmission). */
  private takeAll(): Buffer | null {
    const rest = this.bytes ? this.take(this.bytes) : null;
    this.chunks = [];
    this.bytes = 0;
    return rest && rest.length ? rest : null;
  }

  private pump(): void {
    for (;;) {
      if (this.host.closed) return;
      if (this.step === 'flags') {
        const b = this.take(4);
        if (!b) return;
        const f = P.parseClientFlags(b);
        if (!f.ok) {
          this.warn('flags', { err: f.error.message }, 'nbd bad client flags');
          return this.host.destroy();
        }
        this.noZeroes = f.value.noZeroes;
        this.fixedNewstyle = f.value.fixedNewstyle;
        this.step = 'optHeader';
      } else if (this.step === 'optHeader') {
        // A client that sends options without reading the replies: take no more until they drain (what
        // it keeps sending counts against the handshake flood limit).
        if (this.host.stream.writableNeedDrain) return;
        const b = this.take(P.OPTION_HEADER_LENGTH);
        if (!b) return;
        const h = P.parseOptionHeader(b);
        if (!h.ok) {
          this.warn('opt', { err: h.error.message }, 'nbd bad option header');
          return this.host.destroy();
        }
        if (h.value.length > this.ctx.limits.maxOptionLength) {
          this.warn('optlen', { option: h.value.option, length: h.value.length }, 'nbd option too long; closing');
          return this.host.destroy();
        }
        this.opt = h.value.option;
        this.optLen = h.value.length;
        this.step = 'optData';
      } else if (this.step === 'optData') {
        const data = this.take(this.optLen);
        if (!data) return;
        this.step = 'busy';
        this.handleOption(this.opt, Buffer.from(data)).then(
          (next) => {
            if (this.host.closed) return;
            if (next === 'continue') {
              this.step = 'optHeader';
              this.pump();
            }
          },
          (e: unknown) => {
            this.host.log.error({ err: e instanceof Error ? e.message : String(e), option: P.optionName(this.opt) }, 'nbd option failed');
            this.host.destroy();
          },
        );
        return;
      } else {
        return;
      }
    }
  }

  private reply(option: number, type: number, data?: Buffer): void {
    this.host.send(P.buildOptionReply(option, type, data));
  }

  private replyErr(option: number, type: number, message: string): void {
    this.host.log.debug({ option: P.optionName(option), type, reason: message }, 'nbd option refused');
    this.host.send(P.buildOptionError(option, type, message));
  }

  /** An option that takes no data came with some: refused (ERR_INVALID), true. */
  private refuseData(option: number, data: Buffer): boolean {
    if (data.length === 0) return false;
    this.replyErr(option, P.REP_ERR_INVALID, `NBD_OPT_${P.optionName(option)} takes no data`);
    return true;
  }

  /** A client asked for an export and did not get it: one info line (rate-limited per client, export and reason). */
  private refused(exportName: string, reason: string): void {
    const suppressed = this.ctx.rate.allow(`refused:${this.host.client.address}:${exportName}:${reason}`);
    if (suppressed === null) return;
    this.host.log.info({ export: exportName, reason, ...(suppressed ? { suppressed } : {}) }, 'nbd export refused');
  }

  private transmissionFlags(e: OpenExport): number {
    let f = P.TFLAG_HAS_FLAGS | P.TFLAG_SEND_FLUSH | P.TFLAG_SEND_CACHE;
    if (e.readOnly || e.device.readOnly) f |= P.TFLAG_READ_ONLY;
    else f |= P.TFLAG_SEND_FUA | P.TFLAG_SEND_TRIM | P.TFLAG_SEND_WRITE_ZEROES | P.TFLAG_SEND_FAST_ZERO;
    if (e.canMultiConn) f |= P.TFLAG_CAN_MULTI_CONN;
    if (this.structured) f |= P.TFLAG_SEND_DF;
    return f;
  }

  /** Handles one option; resolves 'continue' to read the next one, or 'stop' (transmission, TLS, closing). */
  private async handleOption(option: number, data: Buffer): Promise<'continue' | 'stop'> {
    if (this.ctx.shuttingDown && option !== P.OPT_ABORT) {
      this.replyErr(option, P.REP_ERR_SHUTDOWN, 'server is shutting down');
      return 'continue';
    }
    switch (option) {
      case P.OPT_ABORT:
        this.reply(option, P.REP_ACK);
        this.step = 'done';
        this.host.end();
        return 'stop';

      case P.OPT_LIST: {
        if (this.refuseData(option, data)) return 'continue';
        for (const e of this.ctx.exports.list(this.host.client)) {
          if (e.tlsRequired && !this.tlsActive) continue;
          this.reply(option, P.REP_SERVER, P.buildServerEntry(e.name, e.description));
        }
        this.reply(option, P.REP_ACK);
        return 'continue';
      }

      case P.OPT_STARTTLS: {
        const tlsSetup = this.ctx.tls;
        if (!tlsSetup || !this.fixedNewstyle) {
          this.replyErr(option, P.REP_ERR_POLICY, tlsSetup ? 'TLS needs fixed newstyle negotiation' : 'TLS is not configured on this server');
          return 'continue';
        }
        if (this.refuseData(option, data)) return 'continue';
        if (this.tlsActive) {
          this.replyErr(option, P.REP_ERR_INVALID, 'TLS is already running');
          return 'continue';
        }
        this.reply(option, P.REP_ACK);
        this.startTls();
        return 'stop';
      }

      case P.OPT_STRUCTURED_REPLY: {
        if (this.refuseData(option, data)) return 'continue';
        if (this.structured) {
          this.replyErr(option, P.REP_ERR_INVALID, 'structured replies already negotiated');
          return 'continue';
        }
        this.structured = true;
        this.reply(option, P.REP_ACK);
        return 'continue';
      }

      case P.OPT_LIST_META_CONTEXT:
      case P.OPT_SET_META_CONTEXT: {
        if (!this.structured) {
          this.replyErr(option, P.REP_ERR_INVALID, 'negotiate structured replies first');
          return 'continue';
        }
        const r = P.parseMetaContextRequest(data);
        if (!r.ok) {
          this.replyErr(option, P.REP_ERR_INVALID, r.error.message);
          return 'continue';
        }
        const visible = this.ctx.exports.list(this.host.client).some((e) => e.name === r.value.name) || r.value.name === '';
        if (!visible) {
          this.replyErr(option, P.REP_ERR_UNKNOWN, `no export named '${r.value.name}'`);
          return 'continue';
        }
        const list = option === P.OPT_LIST_META_CONTEXT;
        let match = false;
        if (list && r.value.queries.length === 0) match = true;
        for (const q of r.value.queries) {
          if (q === P.BASE_ALLOCATION || (list && q === 'base:')) match = true;
        }
        if (!list) {
          this.metaExport = r.value.name;
          this.metaBaseAllocation = match;
        }
        if (match) this.reply(option, P.REP_META_CONTEXT, P.buildMetaContextEntry(list ? 0 : META_ID_BASE_ALLOCATION, P.BASE_ALLOCATION));
        this.reply(option, P.REP_ACK);
        return 'continue';
      }

      case P.OPT_INFO:
      case P.OPT_GO: {
        const r = P.parseInfoRequest(data);
        if (!r.ok) {
          this.replyErr(option, P.REP_ERR_INVALID, r.error.message);
          return 'continue';
        }
        const e = await this.open(r.value.name);
        if (e === null) return 'stop';
        if (isRefusal(e)) {
          this.replyErr(option, e.reason === 'unknown' ? P.REP_ERR_UNKNOWN : e.reason === 'tls' ? P.REP_ERR_TLS_REQD : P.REP_ERR_POLICY, e.message);
          return 'continue';
        }
        const flags = this.transmissionFlags(e);
        this.reply(option, P.REP_INFO, P.buildInfoExport(e.device.size, flags));
        const want = new Set(r.value.requests);
        if (want.has(P.INFO_NAME)) this.reply(option, P.REP_INFO, P.buildInfoString(P.INFO_NAME, e.name));
        if (want.has(P.INFO_DESCRIPTION) && e.description) {
          this.reply(option, P.REP_INFO, P.buildInfoString(P.INFO_DESCRIPTION, e.description));
        }
        this.reply(option, P.REP_INFO, P.buildInfoBlockSize(1, PREFERRED_BLOCK, this.ctx.limits.maxPayload));
        this.reply(option, P.REP_ACK);
        if (option === P.OPT_INFO) {
          e.release();
          return 'continue';
        }
        this.chosen(e, r.value.name, flags);
        return 'stop';
      }

      case P.OPT_EXPORT_NAME: {
        const n = P.parseExportName(data);
        if (!n.ok) {
          this.warn('expname', { err: n.error.message }, 'nbd bad export name');
          this.host.destroy();
          return 'stop';
        }
        const e = await this.open(n.value);
        if (e === null) return 'stop';
        if (isRefusal(e)) {
          // NBD_OPT_EXPORT_NAME cannot return an error: the spec says terminate the session.
          this.host.destroy();
          return 'stop';
        }
        const flags = this.transmissionFlags(e);
        this.host.send(P.buildExportNameReply(e.device.size, flags, this.noZeroes));
        this.chosen(e, n.value, flags);
        return 'stop';
      }

      default:
        this.replyErr(option, P.REP_ERR_UNSUP, `option ${P.optionName(option)} is not supported`);
        return 'continue';
    }
  }

  /**
   * Opens an export for this client: the export, or the refusal (logged; its message goes to the client),
   * or null when the connection went away meanwhile.
   */
  private async open(name: string): Promise<OpenExport | NbdRefusal | null> {
    let e: OpenExport | NbdRefusal;
    try {
      e = await this.ctx.exports.open(name, { ...this.host.client, tls: this.tlsActive });
    } catch (err) {
      this.host.log.error({ export: name, err: err instanceof Error ? err.message : String(err) }, 'nbd export failed to open');
      e = { refused: true, reason: 'policy', message: `export '${name}' is not available` };
    }
    if (this.host.closed) {
      if (!isRefusal(e)) e.release();
      return null;
    }
    if (!isRefusal(e) && e.tlsRequired && !this.tlsActive) {
      e.release();
      e = { refused: true, reason: 'tls', message: `export '${name}' requires TLS` };
      this.refused(name, 'TLS required');
      return e;
    }
    if (isRefusal(e)) this.refused(name, e.message);
    return e;
  }

  /** The client picked `e` (asked for as `name`): base:allocation holds if it was set for this export or all. */
  private chosen(e: OpenExport, name: string, flags: number): void {
    if (this.metaExport !== null && this.metaExport !== name && this.metaExport !== '') this.metaBaseAllocation = false;
    this.step = 'done';
    this.host.negotiated({ exp: e, flags, structured: this.structured, baseAllocation: this.metaBaseAllocation, rest: this.takeAll() });
  }

  private startTls(): void {
    const setup = this.ctx.tls!;
    const host = this.host;
    // A client certificate is asked for, not required (rejectUnauthorized false): exports that need one
    // refuse connections without it; the others still serve TLS-only clients.
    const requestCert = setup.requestCert;
    const t = host.upgrade(this.takeAll(), (raw) => new tls.TLSSocket(raw, { isServer: true, secureContext: setup.context, requestCert, rejectUnauthorized: false }));
    t.on('secure', () => {
      this.tlsActive = true;
      host.client.tls = true;
      if (requestCert) {
        const peer = t.getPeerX509Certificate();
        const names = peer && verifiedBy(peer, setup.clientCas) ? certNames(t.getPeerCertificate()) : [];
        if (names.length) {
          host.client.certNames = names;
          host.log = host.log.child({ cert: names[0] });
          host.log.info({ names }, 'nbd tls established with a verified client certificate');
          return;
        }
        if (peer) {
          this.warn('badcert', { subject: peer.subject.slice(0, 200), issuer: peer.issuer.slice(0, 200) }, 'nbd client certificate not accepted (not issued by nbd.tls.ca, expired, or no name)');
        }
      }
      host.log.debug({}, 'nbd tls established');
    });
    this.step = 'optHeader';
  }
}
