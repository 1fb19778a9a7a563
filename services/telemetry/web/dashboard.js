// dashboard.js: polls /api/series once a second and draws the charts.
//
// Each chart is a <section class="chart"> holding a <canvas>; draw() renders
// lines with axes, grid and legend by hand (no library). After drawing, the
// chart's data goes into the section's data-values (JSON: series name ->
// the last values drawn, nulls left out) and data-count (how many non-null
// points it drew), so a headless browser test can read what is on screen.
'use strict';

const COLORS = ['#7ee787', '#79c0ff', '#ffa657', '#d2a8ff', '#ff7b72', '#f2cc60', '#56d4dd', '#a5d6ff', '#ffb3c6'];
const KEEP_VALUES = 60;   // values per series written into data-values

function fmt(v, unit) {
  if (v === null || v === undefined || !isFinite(v)) return '-';
  const a = Math.abs(v);
  if (v === 0) return '0';
  if (unit === 's') {
    if (a >= 1) return v.toFixed(2) + ' s';
    if (a >= 1e-3) return (v * 1e3).toFixed(a >= 0.1 ? 0 : 1) + ' ms';
    return (v * 1e6).toFixed(0) + ' us';
  }
  if (unit === 'B/s') {
    if (a >= 1 << 20) return (v / (1 << 20)).toFixed(1) + ' MiB/s';
    if (a >= 1 << 10) return (v / (1 << 10)).toFixed(1) + ' KiB/s';
    return v.toFixed(0) + ' B/s';
  }
  if (unit === 'ratio') return (v * 100).toFixed(0) + '%';
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

// series: [{name, values: [number|null]}], times: [ms]
function draw(section, times, series) {
  const canvas = section.querySelector('canvas');
  const unit = section.dataset.unit;
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 400, h = canvas.clientHeight || 230;
  canvas.width = w * dpr; canvas.height = h * dpr;
  const g = canvas.getContext('2d');
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  g.font = '12px system-ui, sans-serif';
  g.fillStyle = '#d8dee9';
  g.font = '600 13px system-ui, sans-serif';
  g.fillText(section.dataset.title, 4, 14);
  g.font = '11px system-ui, sans-serif';

  // Legend rows above the plot: as many columns as fit, 150 px each.
  const left = 64, right = 8, bottom = 22;
  const cols = Math.max(1, Math.min(3, Math.floor((w - left - right) / 150)));
  const rows = Math.ceil(series.length / cols);
  const top = 34 + 13 * rows;
  const pw = w - left - right, ph = h - top - bottom;
  let max = 0, count = 0;
  for (const s of series)
    for (const v of s.values)
      if (v !== null && isFinite(v)) { max = Math.max(max, v); count++; }
  if (max <= 0) max = 1;
  max = unit === 'ratio' ? 1 : max * 1.1;
  // Grid and y labels.
  g.strokeStyle = '#2d333b'; g.fillStyle = '#8b949e'; g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = top + ph - (ph * i) / 4;
    g.beginPath(); g.moveTo(left, y); g.lineTo(left + pw, y); g.stroke();
    g.fillText(fmt((max * i) / 4, unit), 2, y + 4);
  }
  // x labels: seconds ago.
  if (times.length > 1) {
    const t0 = times[0], t1 = times[times.length - 1];
    g.fillText('-' + Math.round((t1 - t0) / 1000) + ' s', left, h - 6);
    g.fillText('now', left + pw - 22, h - 6);
  }
  // Lines.
  const n = times.length;
  series.forEach((s, k) => {
    g.strokeStyle = COLORS[k % COLORS.length]; g.lineWidth = 2;
    g.beginPath();
    let pen = false;
    s.values.forEach((v, i) => {
      if (v === null || !isFinite(v)) { pen = false; return; }
      const x = left + (n > 1 ? (pw * i) / (n - 1) : pw);
      const y = top + ph - (ph * v) / max;
      if (pen) g.lineTo(x, y); else g.moveTo(x, y);
      pen = true;
    });
    g.stroke();
    // Legend with the latest value.
    const last = [...s.values].reverse().find(v => v !== null && isFinite(v));
    const lx = left + (k % cols) * (pw / cols), ly = 31 + 13 * Math.floor(k / cols);
    g.fillStyle = COLORS[k % COLORS.length];
    g.fillRect(lx, ly - 4, 10, 3);
    g.fillStyle = '#d8dee9';
    g.fillText(s.name + ' ' + fmt(last, unit), lx + 14, ly);
  });
  if (count === 0) {
    g.fillStyle = '#8b949e';
    g.fillText('no data yet', left + pw / 2 - 30, top + ph / 2);
  }
  // What is on screen, for the DOM.
  const values = {};
  for (const s of series) values[s.name] = s.values.filter(v => v !== null && isFinite(v)).slice(-KEEP_VALUES);
  section.dataset.values = JSON.stringify(values);
  section.dataset.count = String(count);
}

function column(points, get) {
  return points.map(p => { const v = get(p); return v === undefined ? null : v; });
}

function render(data) {
  const points = data.points || [];
  const times = points.map(p => p.t);
  const byId = id => document.getElementById(id);
  draw(byId('chart-tokens'), times, [{ name: 'tokens/s', values: column(points, p => p.tokens_per_s) }]);
  draw(byId('chart-acceptance'), times, [{ name: 'accepted/proposed', values: column(points, p => p.acceptance) }]);
  draw(byId('chart-requests'), times, [{ name: 'requests/s', values: column(points, p => p.requests_per_s) }]);
  const lat = [];
  for (const key of ['ttft', 'inter_token', 'verify'])
    for (const q of ['p50', 'p99'])
      lat.push({ name: key + ' ' + q, values: column(points, p => p.latency && p.latency[key] ? p.latency[key][q] : null) });
  draw(byId('chart-latency'), times, lat);
  draw(byId('chart-link'), times, [
    { name: 'up', values: column(points, p => p.link_bytes_per_s && p.link_bytes_per_s.up) },
    { name: 'down', values: column(points, p => p.link_bytes_per_s && p.link_bytes_per_s.down) }]);

  // Health table.
  const services = data.services || {};
  const tbody = document.querySelector('#health-table tbody');
  tbody.textContent = '';
  const health = {};
  for (const name of Object.keys(services).sort()) {
    const s = services[name];
    const up = s.instances.filter(i => i.up).length;
    const age = Math.min(...s.instances.map(i => i.age_ms));
    health[name] = { up: s.up, instances_up: up, instances: s.instances.length, age_ms: age };
    const tr = document.createElement('tr');
    tr.dataset.service = name;
    tr.dataset.up = String(s.up);
    for (const [text, cls] of [[name, ''], [up + ' / ' + s.instances.length, ''],
                               [(age / 1000).toFixed(1) + ' s ago', ''], [s.up ? 'UP' : 'DOWN', s.up ? 'up' : 'down']]) {
      const td = document.createElement('td');
      td.textContent = text;
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
  }
  const healthSection = byId('chart-health');
  healthSection.dataset.values = JSON.stringify(health);
  healthSection.dataset.count = String(Object.keys(health).length);
  const workers = data.workers || {};
  byId('workers').textContent = Object.keys(workers).length
    ? 'broker workers: ' + Object.keys(workers).sort().map(k => k + ' ' + workers[k]).join(', ') : '';

  const acc = data.acceptance_by_pos || {};
  const accEl = byId('acceptance-by-pos');
  accEl.dataset.values = JSON.stringify(acc);
  const keys = Object.keys(acc).sort((a, b) => Number(a) - Number(b));
  accEl.textContent = keys.length ? keys.map(k => 'pos ' + k + ': ' + fmt(acc[k], 'ratio')).join(', ') : '-';

  // Totals since splitmesh-telemetry started (nulls: nothing counted yet).
  const totals = data.totals || {};
  const totEl = byId('totals');
  totEl.dataset.values = JSON.stringify(totals);
  const bytes = v => fmt(v, 'B/s').replace('/s', '');
  totEl.textContent = totals.tokens === undefined ? '-' :
    fmt(totals.tokens) + ' tokens generated (' + fmt(totals.prompt_tokens) + ' prompt), ' +
    'acceptance ' + fmt(totals.acceptance, 'ratio') + ' (' + fmt(totals.drafts_accepted) + ' / ' +
    fmt(totals.drafts_proposed) + ' drafts), link ' + bytes(totals.link_bytes_up) + ' up, ' +
    bytes(totals.link_bytes_down) + ' down, ' + fmt(totals.generations_cancelled) + ' cancelled';
}

async function poll() {
  const status = document.getElementById('status');
  try {
    const response = await fetch('/api/series', { cache: 'no-store' });
    if (!response.ok) throw new Error('HTTP ' + response.status);
    const data = await response.json();
    render(data);
    status.dataset.state = 'ok';
    status.textContent = 'live, ' + (data.points || []).length + ' points, updated ' + new Date(data.now_ms).toLocaleTimeString();
  } catch (e) {
    status.dataset.state = 'error';
    status.textContent = 'telemetry unreachable: ' + e.message;
  }
}

poll();
setInterval(poll, 1000);
