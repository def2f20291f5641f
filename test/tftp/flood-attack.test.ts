/**
 * Attack: a flood of RRQs for files that do not exist (issue 12: 136k "file not found" lines in 20 s, one
 * new UDP socket per answer). Now: per-address token buckets for the answers (the rest dropped silently),
 * rate-limited log lines with counts, and a client downloading meanwhile keeps its speed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { haveTools } from '../helpers/tools.js';
import { MapResolver, startServer, pattern } from './helpers.js';
import { curlFrom } from './attack.js';

/**
 * A flood from another process (its CPU is not the server's event loop): `total` RRQs for missing files
 * over `ms`, 80% from 8 addresses and 20% from 200 others (in 2 /24s), every one from its own port.
 */
function flood(port: number, total: number, ms: number): { done: Promise<number> } {
  const code = `
    import dgram from 'node:dgram';
    const [port, total, ms] = process.argv.slice(1).map(Number);
    const heavy = [], light = [];
    const open = (address) => new Promise((r) => { const s = dgram.createSocket('udp4'); s.on('error', () => {}); s.bind({ address, port: 0 }, () => r(s)); });
    for (let i = 1; i <= 8; i++) heavy.push(await open('127.0.50.' + i));
    for (let i = 0; i < 200; i++) light.push(await open('127.0.' + (51 + (i >> 7)) + '.' + (1 + (i & 127))));
    const rrq = (i) => { const name = 'missing/' + i + '.bin'; return Buffer.from('\\0\\x01' + name + '\\0octet\\0'); };
    const ticks = Math.ceil(ms / 10), per = Math.ceil(total / ticks);
    let sent = 0;
    const timer = setInterval(() => {
      for (let j = 0; j < per && sent < total; j++, sent++) {
        const s = sent % 5 === 4 ? light[sent % light.length] : heavy[sent % heavy.length];
        s.send(rrq(sent), port, '127.0.0.1');
      }
      if (sent >= total) { clearInterval(timer); setTimeout(() => { console.log(sent); process.exit(0); }, 50); }
    }, 10);
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code, String(port), String(total), String(ms)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  const done = new Promise<number>((resolve) => child.on('exit', () => resolve(Number(out.trim()) || 0)));
  return { done };
}

test('10,000 not-found RRQs in 3 s: log lines bounded, no socket per answer, a parallel download keeps its speed', async (t) => {
  if (!haveTools(t, 'curl')) return;
  const big = pattern(6 * 1024 * 1024 + 17, 3);
  const s = await startServer(t, new MapResolver(new Map([['big.bin', big]])));
  // The same download on the idle server (median of 3: the machine is shared and noisy).
  const idle: number[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await curlFrom('127.0.0.1', s.port, 'big.bin', 20_000);
    assert.ok(r.data?.equals(big), r.err);
    idle.push(r.ms);
  }
  const idleMs = [...idle].sort((a, b) => a - b)[1]!;
  const linesBefore = s.lines.length;
  const f = flood(s.port, 10_000, 3000);
  await new Promise((r) => setTimeout(r, 300));
  // Two downloads while the flood runs (it lasts 3 s; each takes well under 1 s): the better one is the
  // measure, so a moment of load from elsewhere on this shared machine is not taken for the flood's effect.
  const tries = [await curlFrom('127.0.0.1', s.port, 'big.bin', 20_000), await curlFrom('127.0.0.1', s.port, 'big.bin', 20_000)];
  const during = tries.reduce((a, b) => (b.ms < a.ms ? b : a));
  const sent = await f.done;
  await new Promise((r) => setTimeout(r, 300));
  await s.server.close(); // logs what the rate limit still holds back (else at the end of its 10 s window)
  const st = s.server.stats();
  for (const d of tries) assert.ok(d.data?.equals(big), d.err);
  const answered = st.notFound - st.notFoundDropped;
  const floodLines = s.lines.slice(linesBefore);
  const notFoundLines = floodLines.filter((l) => l.msg.startsWith('file not found')).length;
  console.log(
    `# flood: ${sent} RRQs sent, ${st.notFound} reached the resolver, ${answered} answered, ${st.notFoundDropped} dropped; ` +
      `${notFoundLines} "file not found" lines (${floodLines.length} lines in all); ` +
      `download of ${(big.length / 1048576).toFixed(1)} MiB: idle ${idleMs} ms (${idle.join('/')}), under the flood ${tries.map((d) => d.ms).join('/')} ms (best ${(during.ms / idleMs).toFixed(2)}x)`,
  );
  assert.ok(st.notFound >= 5000, `most of the flood reached the server: ${st.notFound}`);
  assert.ok(notFoundLines <= 60, `"file not found" lines bounded: ${notFoundLines}`);
  assert.ok(floodLines.length <= 120, `log lines bounded: ${floodLines.length}`);
  const counted = floodLines.filter((l) => l.msg.startsWith('file not found')).reduce((n, l) => n + (Number(l.suppressed) || 0), 0);
  assert.ok(counted >= st.notFound - notFoundLines - 100, `the lines carry the counts left out: ${counted}`);
  // Answers (each from a socket of its own, or from port 69 beyond 200/s) are capped per address.
  assert.ok(answered <= 8 * (40 + 20 * 4) + 200 * 10, `answers capped: ${answered}`);
  // Before the not-found answers were bucketed it took 3.25x; the bound leaves room for a loaded machine.
  assert.ok(during.ms <= 2.5 * idleMs, `download under the flood within 2.5x of idle: ${during.ms} vs ${idleMs} ms`);
});

test('a client asking for a few missing files (PXELINUX probing its config names) gets every answer', async (t) => {
  const s = await startServer(t, new MapResolver(new Map([['pxelinux.cfg/default', Buffer.from('DEFAULT x\n')]])));
  const { RawClient } = await import('./raw-client.js');
  const { buildRequest, OP_RRQ, OP_ERROR } = await import('../../src/tftp/packet.js');
  const names = ['01-52-54-00-aa-bb-01', 'C0A8010A', 'C0A8010', 'C0A801', 'C0A80', 'C0A8', 'C0A', 'C0', 'C'];
  for (const n of names) {
    const c = await RawClient.open();
    c.send(buildRequest(OP_RRQ, `pxelinux.cfg/${n}`, 'octet'), s.port);
    const r = await c.recvPacket(1000);
    c.close();
    assert.equal(r.p.op, OP_ERROR);
    assert.notEqual(r.port, s.port, 'answered from a socket of its own (RFC 1350 TID)');
  }
  assert.equal(s.lines.filter((l) => l.msg === 'file not found').length, names.length, 'each logged (distinct paths)');
});
