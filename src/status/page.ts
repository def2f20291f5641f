/**
 * The status page: one static document, no build step, no framework, nothing fetched from elsewhere
 * (works offline; the CSP forbids anything but this server). It reads /status, follows /events (server-
 * sent events) and /journey?client=…, and resets overlays with POST /reset-overlay after a confirmation.
 *
 * Every string from a client (paths, hostnames, vendor classes, reasons) reaches the page through
 * `textContent` only — the page never builds HTML from data — so a TFTP path `<script>…` shows as text.
 * `__NONCE__` and `__CSRF__` are filled in per process by the server.
 */
export const STATUS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf" content="__CSRF__">
<title>netbootd</title>
<style nonce="__NONCE__">
:root { --bg:#fafafa; --fg:#1d1d1f; --mute:#6b6b70; --line:#e2e2e6; --ok:#1a7f37; --warn:#9a6700; --bad:#cf222e; --acc:#0969da; }
@media (prefers-color-scheme: dark) { :root { --bg:#111214; --fg:#e6e6e9; --mute:#9a9aa3; --line:#2b2c30; --ok:#3fb950; --warn:#d29922; --bad:#f85149; --acc:#58a6ff; } }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, sans-serif; background:var(--bg); color:var(--fg); }
header { display:flex; gap:1em; align-items:baseline; padding:.7em 1em; border-bottom:1px solid var(--line); flex-wrap:wrap; }
header h1 { font-size:1.1em; margin:0; }
#conn { font-size:.85em; color:var(--mute); }
#conn.live::before { content:"● "; color:var(--ok); }
#conn.off::before { content:"● "; color:var(--bad); }
main { padding:0 1em 2em; max-width:1200px; }
section { margin-top:1.2em; }
h2 { font-size:1em; margin:.2em 0 .5em; color:var(--mute); text-transform:uppercase; letter-spacing:.04em; }
.scroll { overflow-x:auto; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:.35em .6em; border-bottom:1px solid var(--line); vertical-align:top; white-space:nowrap; }
td.wrap { white-space:normal; word-break:break-word; }
tr.client { cursor:pointer; }
tr.client:hover, tr.client.sel { background:color-mix(in srgb, var(--acc) 10%, transparent); }
.stage { display:inline-block; padding:0 .5em; border-radius:1em; font-size:.85em; border:1px solid currentColor; }
.s-up, .s-root { color:var(--ok); } .s-down { color:var(--mute); } .s-dhcp, .s-loader, .s-kernel { color:var(--acc); } .s-stalled, .s-refused { color:var(--bad); }
.hint { color:var(--warn); margin:.2em 0; white-space:normal; }
code { font:12px ui-monospace, monospace; background:color-mix(in srgb, var(--fg) 8%, transparent); padding:.1em .3em; border-radius:3px; word-break:break-all; }
.bar { width:10em; height:.6em; background:var(--line); border-radius:.3em; overflow:hidden; display:inline-block; }
.bar > i { display:block; height:100%; background:var(--acc); }
.empty { color:var(--mute); }
#journey { border:1px solid var(--line); border-radius:6px; padding:.6em 1em; }
ol.timeline { list-style:none; padding:0; margin:.4em 0; border-left:2px solid var(--line); }
ol.timeline li { padding:.15em 0 .15em .8em; position:relative; white-space:normal; word-break:break-word; }
ol.timeline li::before { content:""; position:absolute; left:-6px; top:.6em; width:10px; height:10px; border-radius:50%; background:var(--acc); }
ol.timeline li.bad::before { background:var(--bad); } ol.timeline li.good::before { background:var(--ok); }
.t { color:var(--mute); font-variant-numeric:tabular-nums; margin-right:.5em; }
button { font:inherit; padding:.2em .7em; border-radius:4px; border:1px solid var(--line); background:transparent; color:var(--fg); cursor:pointer; }
button.danger { color:var(--bad); border-color:var(--bad); }
dialog { border:1px solid var(--line); border-radius:8px; background:var(--bg); color:var(--fg); max-width:28em; }
#msg { margin-left:auto; font-size:.9em; }
</style>
</head>
<body>
<header><h1>netbootd</h1><span id="conn" class="off">connecting</span><span id="uptime" class="empty"></span><span id="msg"></span></header>
<main>
<section id="journey-sec" hidden><h2>Boot journey</h2><div id="journey"></div></section>
<section><h2>Clients</h2><div class="scroll"><table id="clients"><thead><tr><th>Client</th><th>Address</th><th>Stage</th><th>Last boot</th><th>Took</th><th>Last</th></tr></thead><tbody></tbody></table></div></section>
<section id="unknown-sec"><h2>Asked, not configured</h2><div id="unknown"></div></section>
<section><h2>Transfers</h2><div class="scroll"><table id="transfers"><thead><tr><th>File</th><th>Client</th><th>Progress</th></tr></thead><tbody></tbody></table></div></section>
<section><h2>NBD connections</h2><div class="scroll"><table id="nbd"><thead><tr><th>Export</th><th>Client</th><th>Read</th><th>Written</th><th>Since</th></tr></thead><tbody></tbody></table></div></section>
<section><h2>Images</h2><div class="scroll"><table id="images"><thead><tr><th>Image</th><th>Mode</th><th>Size</th><th>Overlays</th></tr></thead><tbody></tbody></table></div></section>
</main>
<dialog id="confirm"><form method="dialog"><p id="confirm-text"></p><p><button value="cancel">Cancel</button> <button value="ok" class="danger" id="confirm-ok">Reset overlay</button></p></form></dialog>
<script nonce="__NONCE__">
"use strict";
const CSRF = document.querySelector('meta[name=csrf]').content;
let state = null, selected = new URLSearchParams(location.hash.slice(1)).get('client'), journeyAt = '';
const $ = (id) => document.getElementById(id);
// The only way data reaches the page: text nodes. Never innerHTML.
function h(tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === 'class') e.className = v; else if (k === 'style') e.style.cssText = v; else if (k.startsWith('on')) e.addEventListener(k.slice(2), v); else e.setAttribute(k, String(v));
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined && k !== false) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}
const size = (n) => n == null ? '' : n >= 1073741824 ? (n / 1073741824).toFixed(1) + ' GiB' : n >= 1048576 ? (n / 1048576).toFixed(1) + ' MiB' : n >= 1024 ? (n / 1024).toFixed(1) + ' KiB' : n + ' B';
const ago = (iso) => { if (!iso) return ''; const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000)); return s < 90 ? s + ' s ago' : s < 5400 ? Math.round(s / 60) + ' min ago' : s < 129600 ? Math.round(s / 3600) + ' h ago' : Math.round(s / 86400) + ' d ago'; };
const stage = (s) => h('span', { class: 'stage s-' + String(s).replace(/-at-.*/, ''), 'data-stage': s }, s);
const who = (c) => [c.serial || c.mac, c.ip].filter(Boolean).join(' ');
function fill(tbody, rows, cols) {
  tbody.replaceChildren(...(rows.length ? rows : [h('tr', {}, h('td', { class: 'empty', colspan: cols }, 'none'))]));
}
function render() {
  const s = state; if (!s) return;
  $('uptime').textContent = 'up ' + s.uptimeS + ' s';
  fill(document.querySelector('#clients tbody'), (s.boots || []).map((c) => h('tr', { class: 'client' + (selected === c.id ? ' sel' : ''), 'data-client': c.id, onclick: () => select(c.id) },
    h('td', {}, c.id, c.name ? ' (' + c.name + ')' : '', c.hostname ? h('div', { class: 'empty hn' }, 'host name ', c.hostname) : null, c.model ? h('div', { class: 'empty' }, c.model) : null),
    h('td', {}, c.ip || ''),
    h('td', { class: 'wrap' }, stage(c.stage), ...(c.hints || []).map((x) => h('div', { class: 'hint' }, '⚠ ', x.text, x.fix ? [' — ', h('code', {}, x.fix)] : null))),
    h('td', {}, ago(c.lastBoot)),
    h('td', {}, c.bootMs != null ? (c.bootMs / 1000).toFixed(1) + ' s' : ''),
    h('td', { class: 'wrap' }, c.last || ''))), 6);
  const unknown = (s.boots || []).filter((c) => c.unknown);
  $('unknown').replaceChildren(...(unknown.length ? unknown.map((c) => h('div', { class: 'unknown', 'data-client': c.id }, h('strong', {}, who(c)), ': ', c.unknown.reason, c.unknown.fix ? [h('br'), 'to serve it: ', h('code', { class: 'fix' }, c.unknown.fix)] : null)) : [h('p', { class: 'empty' }, 'none')]));
  fill(document.querySelector('#transfers tbody'), ((s.tftp && s.tftp.transfers) || []).map((x) => h('tr', {}, h('td', { class: 'wrap' }, x.path), h('td', {}, who(x)), h('td', {}, h('span', { class: 'bar' }, h('i', { style: 'width:' + Math.min(100, x.percent) + '%' })), ' ', x.percent + '% of ' + size(x.size)))), 3);
  fill(document.querySelector('#nbd tbody'), ((s.nbd && s.nbd.clients) || []).map((x) => h('tr', {}, h('td', {}, x.export || '(handshake)'), h('td', {}, who(x)), h('td', {}, size(x.bytesRead)), h('td', {}, size(x.bytesWritten)), h('td', {}, ago(x.since)))), 5);
  fill(document.querySelector('#images tbody'), (s.images || []).map((i) => h('tr', {}, h('td', {}, i.name), h('td', {}, i.mode), h('td', {}, size(i.bytes)),
    h('td', { class: 'wrap' }, i.mode !== 'cow' ? '' : (i.overlays || []).length === 0 ? h('span', { class: 'empty' }, 'none') : (i.overlays || []).map((o) =>
      h('div', {}, o.client, ' ', size(o.bytes), ' ', h('button', { class: 'danger', 'data-reset': i.name + '/' + o.client, onclick: () => reset(i.name, o.client) }, 'Reset…')))))), 4);
  const sel = selected && (s.boots || []).find((c) => c.id === selected);
  if (sel && sel.lastActivity + sel.stage !== journeyAt) loadJourney();
}
function select(id) { selected = id; journeyAt = ''; location.hash = 'client=' + encodeURIComponent(id); render(); loadJourney(); }
async function loadJourney() {
  if (!selected) return;
  const r = await fetch('journey?client=' + encodeURIComponent(selected), { credentials: 'same-origin' });
  if (!r.ok) return;
  const j = await r.json();
  journeyAt = j.lastActivity && new Date(j.lastActivity).toISOString() + j.stage;
  const title = h('div', {}, h('strong', {}, j.id), j.name ? ' (' + j.name + ')' : '', ' ', j.model || j.firmware || '', j.ip ? ' at ' + j.ip : '', j.mac && j.serial ? ', MAC ' + j.mac : '', j.vendorClass ? h('div', { class: 'empty vc' }, 'vendor class: ', j.vendorClass) : null, j.hostname ? h('div', { class: 'empty hn' }, 'DHCP host name: ', j.hostname) : null, h('button', { onclick: () => { selected = null; $('journey-sec').hidden = true; location.hash = ''; render(); } }, 'close'));
  const boots = j.boots.map((b, n) => h('div', { class: 'boot', 'data-stage': b.shown },
    h('p', {}, n === 0 ? 'Latest boot' : 'Earlier boot', ', started ', new Date(b.start).toLocaleString(), ': ', stage(b.shown), b.durationMs != null ? ', root attached after ' + (b.durationMs / 1000).toFixed(1) + ' s' : '', b.attached ? ', root in use: read ' + size(b.bytesRead) + ', wrote ' + size(b.bytesWritten) : ''),
    ...b.hints.map((x) => h('div', { class: 'hint' }, '⚠ ', x.text, x.fix ? [' — ', h('code', {}, x.fix)] : null)),
    h('ol', { class: 'timeline' }, ...b.events.map((e, i) => h('li', { class: /not-found|refused/.test(e.kind) || (e.kind === 'file' && e.outcome !== 'complete') || (e.kind === 'dhcp' && !e.answered) ? 'bad' : e.kind === 'attach' ? 'good' : '' },
      h('span', { class: 't' }, '+' + ((e.t - b.start) / 1000).toFixed(1) + ' s'), b.lines[i]))),
    b.dropped ? h('p', { class: 'empty' }, b.dropped + ' events left out') : null));
  $('journey').replaceChildren(title, ...boots);
  $('journey-sec').hidden = false;
}
// An overlay's file name (pi-SERIAL, mac-aa-bb-…, ip-ADDRESS) as POST /reset-overlay names a client.
const clientOf = (key) => key.startsWith('mac-') ? key.slice(4).replace(/-/g, ':') : key.replace(/^(pi|ip)-/, '');
function reset(image, client) {
  const d = $('confirm');
  $('confirm-text').textContent = 'Delete the copy-on-write overlay of image ' + image + ' for ' + client + '? Its next boot sees the pristine image; its changes are lost.';
  d.returnValue = '';
  d.onclose = async () => {
    if (d.returnValue !== 'ok') return;
    const r = await fetch('reset-overlay', { method: 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/json', 'x-csrf-token': CSRF }, body: JSON.stringify({ image, client: clientOf(client) }) });
    const body = await r.json().catch(() => ({}));
    $('msg').textContent = r.ok ? (body.existed ? 'overlay ' + body.identity + ' reset' : 'no overlay to reset') : 'refused: ' + (body.error || r.status);
    $('msg').className = r.ok ? 'ok' : 'err';
  };
  d.showModal();
}
function connect() {
  const es = new EventSource('events', { withCredentials: true });
  es.addEventListener('status', (ev) => { state = JSON.parse(ev.data); $('conn').className = 'live'; $('conn').textContent = 'live'; render(); });
  es.onerror = () => { $('conn').className = 'off'; $('conn').textContent = 'reconnecting'; };
}
connect();
if (selected) loadJourney();
setInterval(render, 10000);
</script>
</body>
</html>
`;
