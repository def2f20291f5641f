/**
 * Attacks on the status endpoint from a browser on the same machine (CSRF, DNS rebinding) and from the
 * network (no token), and prototype names in what it is asked. Raw HTTP requests (node:http), so the test
 * controls every header a hostile page or host could send.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import os from 'node:os';
import { StatusServer } from '../../src/status/server.js';
import { isLoopbackAddress } from '../../src/util/net.js';
import { MetricsRegistry } from '../../src/util/metrics.js';
import { silentLogger } from '../../src/util/log.js';

interface Reply {
  status: number;
  body: string;
}

function request(port: number, opts: { method?: string; path?: string; headers?: Record<string, string>; body?: string; host?: string }): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: opts.host ?? '127.0.0.1', port, method: opts.method ?? 'GET', path: opts.path ?? '/status', headers: opts.headers ?? {}, setHost: !opts.headers?.host },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

async function start(t: { after: (fn: () => unknown) => void }, opts: { token?: string; address?: string } = {}) {
  const actions: unknown[] = [];
  const srv = new StatusServer(
    {
      status: () => ({ clients: [{ ip: '198.18.0.5', serial: '89025d75' }] }),
      metrics: new MetricsRegistry(),
      action: async (name, body) => {
        actions.push({ name, body });
        return { status: 200, body: { ok: true } };
      },
    },
    silentLogger,
    { token: opts.token },
  );
  const addr = await srv.listen(0, opts.address ?? '127.0.0.1');
  t.after(() => srv.close());
  return { port: addr.port, actions };
}

const json = { 'content-type': 'application/json' };

test('a cross-site form post (text/plain, urlencoded, multipart) cannot reset an overlay', async (t) => {
  const { port, actions } = await start(t);
  for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
    const r = await request(port, { method: 'POST', path: '/reset-overlay', headers: { 'content-type': type }, body: '{"image":"pios","client":"11111111"}' });
    assert.equal(r.status, 415, `${type} refused`);
  }
  // A page that sends JSON anyway carries its Origin (and Sec-Fetch-Site) with it.
  const foreign = await request(port, {
    method: 'POST', path: '/reset-overlay', body: '{"image":"pios","client":"11111111"}',
    headers: { ...json, origin: 'http://evil.example' },
  });
  assert.equal(foreign.status, 403);
  const crossSite = await request(port, { method: 'POST', path: '/reset-overlay', body: '{}', headers: { ...json, 'sec-fetch-site': 'cross-site' } });
  assert.equal(crossSite.status, 403);
  assert.equal(actions.length, 0, 'no refused request reached the action');
  // The CLI's request (JSON, no Origin) works.
  const ok = await request(port, { method: 'POST', path: '/reset-overlay', headers: json, body: '{"image":"pios","client":"11111111"}' });
  assert.equal(ok.status, 200);
  // Same-origin (the server's own page) also works.
  const same = await request(port, { method: 'POST', path: '/reset-overlay', headers: { ...json, origin: `http://127.0.0.1:${port}` }, body: '{}' });
  assert.equal(same.status, 200);
  assert.equal(actions.length, 2);
});

test('DNS rebinding: a foreign host name pointed at 127.0.0.1 gets nothing, not even GET /status', async (t) => {
  const { port, actions } = await start(t);
  for (const path of ['/status', '/metrics', '/']) {
    const r = await request(port, { path, headers: { host: `rebind.evil.example:${port}` } });
    assert.equal(r.status, 421, path);
    assert.doesNotMatch(r.body, /89025d75/);
  }
  const post = await request(port, { method: 'POST', path: '/reset-overlay', headers: { ...json, host: `rebind.evil.example:${port}` }, body: '{}' });
  assert.equal(post.status, 421);
  assert.equal(actions.length, 0);
  // The names a user types are fine.
  for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `${os.hostname()}:${port}`, '127.0.0.1']) {
    assert.equal((await request(port, { headers: { host } })).status, 200, host);
  }
});

test('with a token, every request must carry it', async (t) => {
  const token = 'b5f0c1e9a7d34e2f8c6a1b0d9e8f7a6c';
  const { port, actions } = await start(t, { token });
  assert.equal((await request(port, {})).status, 401);
  assert.equal((await request(port, { path: '/metrics', headers: { authorization: 'Bearer wrong-token-wrong-token' } })).status, 401);
  assert.equal((await request(port, { method: 'POST', path: '/reset-overlay', headers: json, body: '{}' })).status, 401);
  assert.equal(actions.length, 0);
  const ok = await request(port, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(ok.status, 200);
  assert.match(ok.body, /89025d75/);
});

test('beyond loopback without a token, nothing is answered', async (t) => {
  // 0.0.0.0 is beyond loopback; the test reaches it on 127.0.0.1 all the same.
  const { port, actions } = await start(t, { address: '0.0.0.0' });
  const r = await request(port, {});
  assert.equal(r.status, 401);
  assert.match(r.body, /status\.token/);
  assert.equal((await request(port, { method: 'POST', path: '/reset-overlay', headers: json, body: '{}' })).status, 401);
  assert.equal(actions.length, 0);
  assert.equal(isLoopbackAddress('0.0.0.0'), false);
  assert.equal(isLoopbackAddress('127.0.0.1'), true);
  assert.equal(isLoopbackAddress('::1'), true);
});

test('check warns about a status endpoint beyond loopback without a token', async (t) => {
  const { mkdtempSync, rmSync, writeFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { checkConfig } = await import('../../src/registry/check.js');
  const dir = mkdtempSync(join(os.tmpdir(), 'netbootd-status-check-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'netbootd.yaml');
  const warned = async (status: string): Promise<boolean> => {
    writeFileSync(file, `server: { address: 127.0.0.1, stateDir: ${dir} }\nstatus: ${status}\nimages: {}\n`);
    const report = await checkConfig(file);
    return report.lines.some((l) => l.level === 'warn' && /status\.token/.test(l.message));
  };
  assert.equal(await warned('{ address: 0.0.0.0 }'), true);
  assert.equal(await warned('{ address: 0.0.0.0, token: b5f0c1e9a7d34e2f8c6a1b0d9e8f7a6c }'), false);
  assert.equal(await warned('{ address: 127.0.0.1 }'), false);
});
