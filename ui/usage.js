// Usage page: the caller's tokens and cost per day as a chart (hand-drawn SVG) and a table by
// model, from GET /api/usage ({"data":[{day, model, prompt_tokens, completion_tokens, cost,
// requests}]}). While the proxy does not record usage (404), it says so instead.

import { api, ApiError } from './api.js';
import { h, s, spinner, errorBox } from './dom.js';
import { fmtInt, fmtCost, fmtTokensShort } from './format.js';

const MAX_DAYS = 92;
const DAY_MS = 86_400_000;

function num(x) {
  const v = Number(x);
  return Number.isFinite(v) ? v : 0;
}

function dayKey(d) {
  return d.toISOString().slice(0, 10);
}

/**
 * One entry per day: the `days` days up to today (UTC) when the API says which period it
 * covers, else the days with data (at least a week). Days without traffic are zeros.
 */
function dailySeries(rows, days) {
  const byDay = new Map();
  for (const r of rows) {
    const day = String(r.day || '').slice(0, 10);
    if (!/^\d{4}-\d{2}-\d{2}$/.test(day)) continue;
    const d = byDay.get(day) || { day, prompt: 0, completion: 0, cost: 0, requests: 0 };
    d.prompt += num(r.prompt_tokens);
    d.completion += num(r.completion_tokens);
    d.cost += num(r.cost);
    d.requests += num(r.requests);
    byDay.set(day, d);
  }
  const seen = [...byDay.keys()].sort();
  const today = dayKey(new Date());
  const lastKey = seen.length && seen[seen.length - 1] > today ? seen[seen.length - 1] : today;
  const last = new Date(`${days ? lastKey : seen[seen.length - 1] || today}T00:00:00Z`);
  let first;
  if (days) {
    first = new Date(last.getTime() - (Math.min(days, MAX_DAYS) - 1) * DAY_MS);
  } else {
    first = new Date(`${seen[0] || today}T00:00:00Z`);
    if ((last - first) / DAY_MS < 6) first = new Date(last.getTime() - 6 * DAY_MS);
    if ((last - first) / DAY_MS >= MAX_DAYS) first = new Date(last.getTime() - (MAX_DAYS - 1) * DAY_MS);
  }
  const out = [];
  for (let t = first.getTime(); t <= last.getTime(); t += DAY_MS) {
    const key = dayKey(new Date(t));
    out.push(byDay.get(key) || { day: key, prompt: 0, completion: 0, cost: 0, requests: 0 });
  }
  return out;
}

/** A "nice" axis maximum >= v whose quarters are round too (1, 2, 4, 8 × 10^n). */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 4, 8, 10]) if (m * p >= v * (1 - 1e-9)) return m * p;
  return 10 * p;
}

/** A cost axis label: "$0.20", "$1.50", "$0.0004". */
function fmtAxisCost(v) {
  if (v === 0) return '$0';
  if (v >= 0.01) return `$${v.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
  return `$${v.toLocaleString('en-US', { maximumSignificantDigits: 2 })}`;
}

function chart(series) {
  const W = 760;
  const H = 280;
  const pad = { l: 56, r: 64, t: 16, b: 36 };
  const iw = W - pad.l - pad.r;
  const ih = H - pad.t - pad.b;
  const maxTok = niceMax(Math.max(...series.map((d) => d.prompt + d.completion)) || 4);
  const maxCost = niceMax(Math.max(...series.map((d) => d.cost)) || 0.0001);
  const n = series.length;
  const slot = iw / n;
  const bw = Math.max(2, Math.min(36, slot * 0.62));
  const y = (v) => pad.t + ih - (v / maxTok) * ih;
  const yc = (v) => pad.t + ih - (v / maxCost) * ih;
  const x = (i) => pad.l + slot * i + slot / 2;

  const parts = [];
  // grid + left (tokens) and right (cost) axes
  for (let i = 0; i <= 4; i += 1) {
    const gy = pad.t + (ih * i) / 4;
    parts.push(s('line', { x1: pad.l, x2: W - pad.r, y1: gy, y2: gy, class: 'grid' }));
    parts.push(s('text', { x: pad.l - 8, y: gy + 4, class: 'axis', 'text-anchor': 'end' }, fmtTokensShort(maxTok * (1 - i / 4))));
    parts.push(s('text', { x: W - pad.r + 8, y: gy + 4, class: 'axis axis-cost', 'text-anchor': 'start' }, fmtAxisCost(maxCost * (1 - i / 4))));
  }
  // stacked bars: prompt (bottom) + completion (top)
  const labelEvery = Math.ceil(n / 10);
  series.forEach((d, i) => {
    const cx = x(i);
    const hp = (d.prompt / maxTok) * ih;
    const hc = (d.completion / maxTok) * ih;
    const g = s('g', { class: 'bar' },
      s('title', {}, `${d.day}: ${fmtInt(d.prompt)} prompt + ${fmtInt(d.completion)} completion tokens, ${fmtCost(d.cost)}, ${fmtInt(d.requests)} requests`),
      s('rect', { x: cx - bw / 2, y: pad.t + ih - hp, width: bw, height: Math.max(0, hp), class: 'bar-prompt', rx: 2 }),
      s('rect', { x: cx - bw / 2, y: pad.t + ih - hp - hc, width: bw, height: Math.max(0, hc), class: 'bar-completion', rx: 2 }));
    parts.push(g);
    if (i % labelEvery === 0 || i === n - 1) {
      parts.push(s('text', { x: cx, y: H - pad.b + 18, class: 'axis', 'text-anchor': 'middle' }, d.day.slice(5)));
    }
  });
  // cost line
  const pts = series.map((d, i) => `${x(i).toFixed(1)},${yc(d.cost).toFixed(1)}`).join(' ');
  parts.push(s('polyline', { points: pts, class: 'cost-line' }));
  series.forEach((d, i) => (d.cost > 0 || d.requests > 0) && parts.push(s('circle', { cx: x(i), cy: yc(d.cost), r: 3.5, class: 'cost-dot' }, s('title', {}, `${d.day}: ${fmtCost(d.cost)}`))));
  parts.push(s('line', { x1: pad.l, x2: W - pad.r, y1: pad.t + ih, y2: pad.t + ih, class: 'baseline' }));

  const total = series.reduce((a, d) => a + d.prompt + d.completion, 0);
  const cost = series.reduce((a, d) => a + d.cost, 0);
  return s('svg', {
    viewBox: `0 0 ${W} ${H}`,
    class: 'chart',
    id: 'usage-chart',
    role: 'img',
    'aria-label': `Tokens and cost per day from ${series[0].day} to ${series[n - 1].day}: ${fmtInt(total)} tokens, ${fmtCost(cost)} in total. The tables below list the numbers.`,
    preserveAspectRatio: 'xMidYMid meet',
  }, parts);
}

function tile(label, value, sub) {
  return h('div', { class: 'tile' }, h('div', { class: 'tile-label' }, label), h('div', { class: 'tile-value' }, value), sub ? h('div', { class: 'tile-sub' }, sub) : null);
}

const PERIODS = [7, 30, 90];
/** The chosen period survives page switches. */
let period = 30;

export async function mount(root) {
  const page = h('section', { class: 'page' });
  const periodSelect = h('select', { id: 'usage-period', name: 'days' },
    PERIODS.map((d) => h('option', { value: d }, `Last ${d} days`)));
  periodSelect.value = String(period);
  const head = h('div', { class: 'page-head' },
    h('div', {},
      h('h1', {}, 'Usage'),
      h('p', { class: 'lead' }, 'Your tokens and cost per day and per model, as recorded by byok-proxy. Costs are billed by each provider on your own key.')),
    h('div', { class: 'field field-inline' }, h('label', { for: 'usage-period' }, 'Period'), periodSelect));
  const content = h('div', { id: 'usage-content' });
  root.append(page);
  page.append(head, content);
  periodSelect.addEventListener('change', () => {
    period = Number(periodSelect.value) || 30;
    load();
  });
  let seq = 0;
  async function load() {
    const mine = ++seq;
    content.replaceChildren(spinner('Loading usage…'));
    try {
      const body = await api(`/api/usage?days=${period}`);
      if (mine !== seq) return;
      render(body);
    } catch (e) {
      if (mine !== seq) return;
      if (e instanceof ApiError && e.status === 404) {
        periodSelect.disabled = true;
        content.replaceChildren(h('div', { class: 'card empty-state', id: 'usage-unavailable' },
          h('h2', {}, 'Usage is not recorded yet'),
          h('p', {}, 'This byok-proxy does not report usage yet. Once it does, your tokens and cost per day and per model appear here.')));
        return;
      }
      content.replaceChildren(errorBox(e.message));
    }
  }
  function render(body) {
    content.replaceChildren(...usageView(body));
  }
  await load();
  return undefined;
}

function usageView(body) {
  const rows = body && Array.isArray(body.data) ? body.data : [];
  if (!rows.length) {
    return [h('div', { class: 'card empty-state', id: 'usage-empty' },
      h('h2', {}, 'No usage in this period'),
      h('p', {}, 'Nothing was recorded for you in this period. Send a request — for example on the ', h('a', { href: '#/chat' }, 'Chat'), ' page — and it shows up here.'))];
  }
  const series = dailySeries(rows, Number(body.days) || 0);
  const totals = rows.reduce((a, r) => ({
    prompt: a.prompt + num(r.prompt_tokens),
    completion: a.completion + num(r.completion_tokens),
    cost: a.cost + num(r.cost),
    requests: a.requests + num(r.requests),
  }), { prompt: 0, completion: 0, cost: 0, requests: 0 });

  // by model
  const byModel = new Map();
  for (const r of rows) {
    const m = byModel.get(r.model) || { model: r.model, prompt: 0, completion: 0, cost: 0, requests: 0 };
    m.prompt += num(r.prompt_tokens);
    m.completion += num(r.completion_tokens);
    m.cost += num(r.cost);
    m.requests += num(r.requests);
    byModel.set(r.model, m);
  }
  const models = [...byModel.values()].sort((a, b) => b.cost - a.cost || (b.prompt + b.completion) - (a.prompt + a.completion));

  const modelTable = h('table', { class: 'data-table', id: 'usage-by-model' },
    h('caption', {}, 'By model'),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Model'),
      h('th', { scope: 'col', class: 'num' }, 'Requests'),
      h('th', { scope: 'col', class: 'num' }, 'Prompt tokens'),
      h('th', { scope: 'col', class: 'num' }, 'Completion tokens'),
      h('th', { scope: 'col', class: 'num' }, 'Total tokens'),
      h('th', { scope: 'col', class: 'num' }, 'Cost'))),
    h('tbody', {}, models.map((m) => h('tr', {},
      h('th', { scope: 'row' }, h('code', {}, m.model)),
      h('td', { class: 'num', 'data-label': 'Requests' }, fmtInt(m.requests)),
      h('td', { class: 'num', 'data-label': 'Prompt' }, fmtInt(m.prompt)),
      h('td', { class: 'num', 'data-label': 'Completion' }, fmtInt(m.completion)),
      h('td', { class: 'num', 'data-label': 'Total' }, fmtInt(m.prompt + m.completion)),
      h('td', { class: 'num', 'data-label': 'Cost' }, fmtCost(m.cost))))),
    h('tfoot', {}, h('tr', {},
      h('th', { scope: 'row' }, 'Total'),
      h('td', { class: 'num', 'data-label': 'Requests' }, fmtInt(totals.requests)),
      h('td', { class: 'num', 'data-label': 'Prompt' }, fmtInt(totals.prompt)),
      h('td', { class: 'num', 'data-label': 'Completion' }, fmtInt(totals.completion)),
      h('td', { class: 'num', 'data-label': 'Total' }, fmtInt(totals.prompt + totals.completion)),
      h('td', { class: 'num', 'data-label': 'Cost' }, fmtCost(totals.cost)))));

  const dayTable = h('table', { class: 'data-table' },
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Day'),
      h('th', { scope: 'col', class: 'num' }, 'Requests'),
      h('th', { scope: 'col', class: 'num' }, 'Prompt tokens'),
      h('th', { scope: 'col', class: 'num' }, 'Completion tokens'),
      h('th', { scope: 'col', class: 'num' }, 'Cost'))),
    h('tbody', {}, [...series].reverse().filter((d) => d.requests || d.prompt || d.completion).map((d) => h('tr', {},
      h('th', { scope: 'row' }, d.day),
      h('td', { class: 'num', 'data-label': 'Requests' }, fmtInt(d.requests)),
      h('td', { class: 'num', 'data-label': 'Prompt' }, fmtInt(d.prompt)),
      h('td', { class: 'num', 'data-label': 'Completion' }, fmtInt(d.completion)),
      h('td', { class: 'num', 'data-label': 'Cost' }, fmtCost(d.cost))))));

  return [
    h('div', { class: 'tiles' },
      tile('Requests', fmtInt(totals.requests)),
      tile('Prompt tokens', fmtInt(totals.prompt)),
      tile('Completion tokens', fmtInt(totals.completion)),
      tile('Cost', fmtCost(totals.cost), `${series.length} day${series.length === 1 ? '' : 's'}`)),
    h('section', { class: 'card chart-card', 'aria-labelledby': 'chart-title' },
      h('div', { class: 'chart-head' },
        h('h2', { id: 'chart-title' }, 'Tokens and cost per day'),
        h('ul', { class: 'legend', 'aria-label': 'Legend' },
          h('li', {}, h('span', { class: 'swatch swatch-prompt', 'aria-hidden': 'true' }), 'Prompt tokens'),
          h('li', {}, h('span', { class: 'swatch swatch-completion', 'aria-hidden': 'true' }), 'Completion tokens'),
          h('li', {}, h('span', { class: 'swatch swatch-cost', 'aria-hidden': 'true' }), 'Cost (right axis)'))),
      h('div', { class: 'chart-wrap' }, chart(series))),
    h('section', { class: 'card' }, h('div', { class: 'table-wrap' }, modelTable)),
    h('details', { class: 'card days' }, h('summary', {}, 'Numbers per day'), h('div', { class: 'table-wrap' }, dayTable)),
  ];
}
