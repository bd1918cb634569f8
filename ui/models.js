// Models page: the whole catalog (GET /v1/models?all=true) with search, filters (provider,
// type, price, usable), sorting (price, context window), a clear mark of what the caller can
// use (with a link to add a key otherwise) and a side-by-side compare of 2–3 models.

import { api } from './api.js';
import { h, spinner, errorBox } from './dom.js';
import { perMillion, fmtPrice, fmtTokensShort, fmtInt, creatorOf } from './format.js';

const MAX_COMPARE = 3;

const PRICE_BANDS = [
  { value: '', label: 'Any price', max: Infinity },
  { value: 'free', label: 'Free', max: 0 },
  { value: '0.5', label: 'Up to $0.50 / 1M', max: 0.5 },
  { value: '1', label: 'Up to $1 / 1M', max: 1 },
  { value: '5', label: 'Up to $5 / 1M', max: 5 },
  { value: '20', label: 'Up to $20 / 1M', max: 20 },
];

const SORTS = [
  { value: 'name', label: 'Name (A–Z)' },
  { value: 'price-asc', label: 'Lowest price' },
  { value: 'price-desc', label: 'Highest price' },
  { value: 'context-desc', label: 'Largest context' },
  { value: 'context-asc', label: 'Smallest context' },
];

/** Filter state survives page switches. */
const state = { q: '', provider: '', type: '', price: '', usable: false, sort: 'name', compare: [] };

function inputPrice(m) {
  const v = perMillion(m.pricing && m.pricing.input);
  return v === null ? Infinity : v;
}

function outputPrice(m) {
  const v = perMillion(m.pricing && m.pricing.output);
  return v === null ? Infinity : v;
}

function select(id, label, options, value) {
  const el = h('select', { id, name: id }, options.map((o) => h('option', { value: o.value }, o.label)));
  el.value = value;
  return { el, field: h('div', { class: 'field' }, h('label', { for: id }, label), el) };
}

export async function mount(root) {
  const page = h('section', { class: 'page' });
  root.append(page);
  const head = h('div', { class: 'page-head' },
    h('div', {},
      h('h1', {}, 'Models'),
      h('p', { class: 'lead' }, 'Every model of the catalog. You can use a model when you hold an active key for its provider.')));
  page.append(head, spinner('Loading the catalog…'));

  let models;
  let providerIds;
  try {
    const [catalog, providers] = await Promise.all([api('/v1/models?all=true'), api('/api/providers')]);
    models = catalog.data || [];
    providerIds = new Map((providers.data || []).map((p) => [p.id, p.name]));
  } catch (e) {
    page.replaceChildren(head, errorBox(e.message));
    throw e;
  }
  state.compare = state.compare.filter((id) => models.some((m) => m.id === id));

  // --- controls
  const creators = [...new Set(models.map((m) => creatorOf(m.id)))].sort();
  const types = [...new Set(models.map((m) => m.type || 'language'))].sort();
  const search = h('input', { id: 'model-search', name: 'q', type: 'search', placeholder: 'e.g. gpt, claude, flash', autocomplete: 'off', value: state.q });
  const provider = select('model-provider', 'Provider',
    [{ value: '', label: 'All providers' }, ...creators.map((c) => ({ value: c, label: providerIds.get(c) || c }))], state.provider);
  const type = select('model-type', 'Type', [{ value: '', label: 'All types' }, ...types.map((t) => ({ value: t, label: t }))], state.type);
  const price = select('model-price', 'Input price', PRICE_BANDS, state.price);
  const sort = select('model-sort', 'Sort by', SORTS, state.sort);
  const usable = h('input', { id: 'model-usable', name: 'usable', type: 'checkbox', checked: state.usable });

  const controls = h('form', { class: 'card filters', role: 'search', 'aria-label': 'Filter models' },
    h('div', { class: 'field field-grow' }, h('label', { for: 'model-search' }, 'Search by name'), search),
    provider.field, type.field, price.field, sort.field,
    h('div', { class: 'field field-check' }, usable, h('label', { for: 'model-usable' }, 'Only models I can use')));
  controls.addEventListener('submit', (ev) => ev.preventDefault());

  const count = h('p', { class: 'muted', id: 'model-count', role: 'status', 'aria-live': 'polite' });
  const compareBox = h('section', { class: 'card compare', id: 'compare', 'aria-labelledby': 'compare-title', hidden: true });
  const tbody = h('tbody', {});
  const table = h('table', { class: 'models-table', id: 'models-table' },
    h('caption', { class: 'sr-only' }, 'Model catalog'),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Compare')),
      h('th', { scope: 'col' }, 'Model'),
      h('th', { scope: 'col' }, 'Type'),
      h('th', { scope: 'col', class: 'num' }, 'Context'),
      h('th', { scope: 'col', class: 'num' }, 'Max output'),
      h('th', { scope: 'col', class: 'num' }, 'Input / 1M'),
      h('th', { scope: 'col', class: 'num' }, 'Output / 1M'),
      h('th', { scope: 'col' }, 'Access'))),
    tbody);

  page.replaceChildren(head, controls, compareBox, count, h('div', { class: 'table-wrap' }, table));

  function filtered() {
    const q = state.q.trim().toLowerCase();
    const band = PRICE_BANDS.find((b) => b.value === state.price) || PRICE_BANDS[0];
    const list = models.filter((m) => {
      if (q && !`${m.name || ''} ${m.id}`.toLowerCase().includes(q)) return false;
      if (state.provider && creatorOf(m.id) !== state.provider) return false;
      if (state.type && (m.type || 'language') !== state.type) return false;
      if (band.max !== Infinity && !(inputPrice(m) <= band.max)) return false;
      if (state.usable && !m.accessible) return false;
      return true;
    });
    const byName = (a, b) => (a.name || a.id).localeCompare(b.name || b.id);
    const price = (m) => [inputPrice(m), outputPrice(m)];
    const cmp = {
      name: byName,
      'price-asc': (a, b) => price(a)[0] - price(b)[0] || price(a)[1] - price(b)[1] || byName(a, b),
      'price-desc': (a, b) => price(b)[0] - price(a)[0] || price(b)[1] - price(a)[1] || byName(a, b),
      'context-desc': (a, b) => (b.context_window || 0) - (a.context_window || 0) || byName(a, b),
      'context-asc': (a, b) => (a.context_window || 0) - (b.context_window || 0) || byName(a, b),
    }[state.sort] || byName;
    // Infinity - Infinity is NaN: keep models without a price last and stable.
    return list.sort((a, b) => {
      const r = cmp(a, b);
      return Number.isNaN(r) ? byName(a, b) : r;
    });
  }

  function accessCell(m) {
    if (m.accessible) return h('span', { class: 'badge badge-ok' }, h('span', { 'aria-hidden': 'true' }, '✓ '), 'You can use it');
    const c = creatorOf(m.id);
    if (providerIds.has(c)) {
      return h('a', { class: 'add-key-link', href: `#/providers?add=${encodeURIComponent(c)}` }, `Add ${providerIds.get(c)} key`);
    }
    return h('span', { class: 'badge' }, 'No key');
  }

  function renderRows() {
    const list = filtered();
    count.textContent = `Showing ${list.length} of ${models.length} models${list.length ? '' : ' — no model matches these filters'}.`;
    tbody.replaceChildren(...list.map((m) => {
      const id = `cmp-${m.id.replace(/[^A-Za-z0-9_-]/g, '-')}`;
      const checked = state.compare.includes(m.id);
      const box = h('input', {
        type: 'checkbox',
        id,
        checked,
        disabled: !checked && state.compare.length >= MAX_COMPARE,
        dataset: { model: m.id },
      });
      box.addEventListener('change', () => {
        if (box.checked) {
          if (!state.compare.includes(m.id)) state.compare.push(m.id);
        } else {
          state.compare = state.compare.filter((x) => x !== m.id);
        }
        renderRows();
        renderCompare();
        const again = document.getElementById(id);
        if (again) again.focus();
      });
      return h('tr', { class: m.accessible ? 'row-ok' : 'row-locked', dataset: { model: m.id } },
        h('td', { class: 'cell-check' }, box, h('label', { for: id, class: 'sr-only' }, `Compare ${m.name || m.id}`)),
        h('td', { 'data-label': 'Model' },
          h('div', { class: 'model-name' }, m.name || m.id),
          h('code', { class: 'model-id' }, m.id)),
        h('td', { 'data-label': 'Type' }, h('span', { class: 'tag' }, m.type || 'language')),
        h('td', { class: 'num', 'data-label': 'Context' }, fmtTokensShort(m.context_window)),
        h('td', { class: 'num', 'data-label': 'Max output' }, fmtTokensShort(m.max_tokens)),
        h('td', { class: 'num', 'data-label': 'Input / 1M' }, fmtPrice(perMillion(m.pricing && m.pricing.input))),
        h('td', { class: 'num', 'data-label': 'Output / 1M' }, fmtPrice(perMillion(m.pricing && m.pricing.output))),
        h('td', { 'data-label': 'Access' }, accessCell(m)));
    }));
  }

  function renderCompare() {
    const picked = state.compare.map((id) => models.find((m) => m.id === id)).filter(Boolean);
    compareBox.hidden = picked.length === 0;
    if (!picked.length) {
      compareBox.replaceChildren();
      return;
    }
    const clear = h('button', { type: 'button', class: 'btn btn-sm btn-ghost', id: 'compare-clear' }, 'Clear');
    clear.addEventListener('click', () => {
      state.compare = [];
      renderRows();
      renderCompare();
      search.focus();
    });
    const head = h('div', { class: 'compare-head' },
      h('h2', { id: 'compare-title' }, 'Compare'),
      h('span', { class: 'muted small' }, picked.length < 2 ? `Pick ${2 - picked.length} more (up to ${MAX_COMPARE}) with the boxes below.` : `${picked.length} of ${MAX_COMPARE} models`),
      clear);
    if (picked.length < 2) {
      compareBox.replaceChildren(head);
      return;
    }
    // Best value per row: lowest price, largest window/output.
    const rows = [
      { label: 'Provider', get: (m) => providerIds.get(creatorOf(m.id)) || creatorOf(m.id) },
      { label: 'Type', get: (m) => m.type || 'language' },
      { label: 'Context window', get: (m) => `${fmtInt(m.context_window)} tokens`, value: (m) => m.context_window || 0, best: 'max' },
      { label: 'Max output', get: (m) => `${fmtInt(m.max_tokens)} tokens`, value: (m) => m.max_tokens || 0, best: 'max' },
      { label: 'Input price / 1M', get: (m) => fmtPrice(perMillion(m.pricing && m.pricing.input)), value: inputPrice, best: 'min' },
      { label: 'Output price / 1M', get: (m) => fmtPrice(perMillion(m.pricing && m.pricing.output)), value: outputPrice, best: 'min' },
      { label: 'You can use it', get: (m) => (m.accessible ? 'Yes' : 'No — add a key') },
    ];
    const table = h('table', { class: 'compare-table', id: 'compare-table' },
      h('thead', {}, h('tr', {}, h('td', {}), picked.map((m) => h('th', { scope: 'col' }, h('div', { class: 'model-name' }, m.name || m.id), h('code', { class: 'model-id' }, m.id))))),
      h('tbody', {}, rows.map((r) => {
        let bestVal = null;
        if (r.best) {
          const vals = picked.map(r.value).filter((v) => Number.isFinite(v));
          if (vals.length) bestVal = r.best === 'max' ? Math.max(...vals) : Math.min(...vals);
          if (vals.length && vals.every((v) => v === bestVal)) bestVal = null;
        }
        return h('tr', {}, h('th', { scope: 'row' }, r.label), picked.map((m) => {
          const isBest = bestVal !== null && r.value(m) === bestVal;
          return h('td', { class: isBest ? 'best' : null }, r.get(m), isBest ? h('span', { class: 'sr-only' }, ' (best)') : null);
        }));
      })));
    compareBox.replaceChildren(head, h('div', { class: 'table-wrap' }, table));
  }

  search.addEventListener('input', () => {
    state.q = search.value;
    renderRows();
  });
  for (const [ctl, key] of [[provider.el, 'provider'], [type.el, 'type'], [price.el, 'price'], [sort.el, 'sort']]) {
    ctl.addEventListener('change', () => {
      state[key] = ctl.value;
      renderRows();
    });
  }
  usable.addEventListener('change', () => {
    state.usable = usable.checked;
    renderRows();
  });

  renderRows();
  renderCompare();
  return undefined;
}
