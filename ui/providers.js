// Providers page: every supported provider (GET /api/providers) with the caller's keys
// (GET /api/keys, masked hints only), a form built from the provider's credential fields,
// Test, active/inactive toggle, delete with confirmation, and a health badge per provider
// when GET /api/providers/health exists.

import { api, loadHealth } from './api.js';
import { h, toast, confirmDialog, spinner, errorBox } from './dom.js';
import { fmtDate } from './format.js';

const HEALTH_POLL_MS = 15_000;

const HEALTH_TEXT = {
  healthy: 'Healthy',
  degraded: 'Degraded',
  down: 'Down',
  unknown: 'No recent traffic',
};

/** A field name such as `googleCredentials.privateKey` as an id-safe suffix. */
function fieldId(provider, name) {
  return `f-${provider}-${name.replace(/[^A-Za-z0-9_-]/g, '-')}`;
}

/** Sets `value` at a dotted path of `obj`, creating nested objects. */
function setPath(obj, path, value) {
  const parts = path.split('.');
  let cur = obj;
  for (const p of parts.slice(0, -1)) {
    if (typeof cur[p] !== 'object' || cur[p] === null) cur[p] = {};
    cur = cur[p];
  }
  cur[parts[parts.length - 1]] = value;
}

function percent(x) {
  const v = Number(x);
  return Number.isFinite(v) ? `${Math.round(v * 1000) / 10}%` : '—';
}

function ms(x) {
  const v = Number(x);
  return x === null || x === undefined || !Number.isFinite(v) ? '—' : `${Math.round(v)} ms`;
}

/** The health badge of one provider (issue 7); numbers on hover or keyboard focus. */
export function healthBadge(entry) {
  const status = HEALTH_TEXT[entry.status] ? entry.status : 'unknown';
  const lines = [
    `${entry.requests ?? 0} recent requests`,
    `success ${percent(entry.success_ratio)}`,
    `time to first byte p50 ${ms(entry.ttfb_p50_ms)}, p95 ${ms(entry.ttfb_p95_ms)}`,
  ];
  if (entry.last_error_kind) {
    lines.push(`last error: ${entry.last_error_kind}${entry.last_error_at ? ` at ${fmtDate(entry.last_error_at)}` : ''}`);
  }
  const tip = h('span', { class: 'tip', role: 'tooltip' }, lines.map((l) => h('span', {}, l)));
  return h('span', {
    class: ['health', `health-${status}`],
    tabindex: 0,
    dataset: { status },
    'aria-label': `Health: ${HEALTH_TEXT[status]}. ${lines.join('; ')}.`,
  }, h('span', { class: 'dot', 'aria-hidden': 'true' }), HEALTH_TEXT[status], tip);
}

export async function mount(root, ctx) {
  const head = h('div', { class: 'page-head' },
    h('div', {},
      h('h1', {}, 'Providers'),
      h('p', { class: 'lead' },
        'Your own provider credentials. They are stored encrypted and sent only to the provider that needs them; this page only ever sees a masked hint.')));
  const body = h('div', {}, spinner('Loading providers…'));
  root.append(h('section', { class: 'page' }, head, body));

  let providers;
  let keys;
  try {
    const [p, k] = await Promise.all([api('/api/providers'), api('/api/keys')]);
    providers = p.data || [];
    keys = k.data || [];
  } catch (e) {
    body.replaceChildren(errorBox(e.message));
    throw e;
  }

  const summary = h('p', { class: 'muted', id: 'keys-summary', 'aria-live': 'polite' });
  /** The last Test result per key id, kept when a card's list is re-rendered. */
  const results = new Map();
  const cards = new Map();
  const grid = h('div', { class: 'provider-grid' });
  for (const provider of providers) {
    const card = providerCard(provider, keys);
    cards.set(provider.id, card);
    grid.append(card.el);
  }
  function updateSummary() {
    const active = keys.filter((k) => k.is_active).length;
    const providerCount = new Set(keys.filter((k) => k.is_active).map((k) => k.provider)).size;
    summary.textContent = keys.length
      ? `${keys.length} key${keys.length === 1 ? '' : 's'} (${active} active, for ${providerCount} provider${providerCount === 1 ? '' : 's'}).`
      : 'You have no keys yet. Add one below to start using models.';
  }
  updateSummary();
  body.replaceChildren(summary, grid);

  // Deep link from the Models page: #/providers?add=openai opens that provider's form.
  const add = ctx.params.get('add');
  if (add && cards.has(add)) {
    const card = cards.get(add);
    card.details.open = true;
    card.el.scrollIntoView({ block: 'start' });
    const first = card.details.querySelector('input, textarea');
    if (first) first.focus({ preventScroll: true });
  }

  // Health badges: shown only when the endpoint exists (200); refreshed while the page is open.
  let timer = null;
  let stopped = false;
  async function refreshHealth() {
    const health = await loadHealth();
    if (stopped) return;
    for (const [id, card] of cards) {
      const entry = health ? health.get(id) : null;
      card.healthSlot.replaceChildren(...(entry ? [healthBadge(entry)] : []));
      card.healthSlot.hidden = !entry;
    }
    if (health) timer = setTimeout(refreshHealth, HEALTH_POLL_MS);
  }
  refreshHealth();

  function providerCard(provider, allKeys) {
    const headingId = `ph-${provider.id}`;
    const healthSlot = h('span', { class: 'health-slot', dataset: { healthFor: provider.id }, hidden: true });
    const count = h('span', { class: 'pill' });
    const list = h('ul', { class: 'key-list', 'aria-label': `${provider.name} keys` });
    const empty = h('p', { class: 'empty' }, 'No key yet.');

    function renderKeys() {
      const mine = allKeys.filter((k) => k.provider === provider.id);
      list.replaceChildren(...mine.map((k) => keyItem(provider, k)));
      list.hidden = mine.length === 0;
      empty.hidden = mine.length !== 0;
      count.textContent = mine.length ? `${mine.length} key${mine.length === 1 ? '' : 's'}` : 'no key';
      count.classList.toggle('pill-ok', mine.some((k) => k.is_active));
      updateSummary();
    }

    function keyItem(p, key) {
      const toggleId = `active-${key.id}`;
      const result = h('p', { class: 'test-result', role: 'status', 'aria-live': 'polite', hidden: true });
      const report = (ok, text) => {
        results.set(key.id, { ok, text });
        showResult(result, ok, text);
      };
      if (results.has(key.id)) showResult(result, results.get(key.id).ok, results.get(key.id).text);
      const toggle = h('input', { type: 'checkbox', role: 'switch', id: toggleId, checked: key.is_active, class: 'switch-input' });
      const stateText = h('span', { class: ['state', key.is_active ? 'state-on' : 'state-off'] }, key.is_active ? 'Active' : 'Inactive');
      const testBtn = h('button', { type: 'button', class: 'btn btn-sm', dataset: { action: 'test' } }, 'Test');
      const delBtn = h('button', { type: 'button', class: 'btn btn-sm btn-danger-ghost', dataset: { action: 'delete' } }, 'Delete');
      const name = key.label || `${p.name} key`;
      const li = h('li', { class: ['key', key.is_active ? '' : 'key-inactive'], dataset: { keyId: key.id } },
        h('div', { class: 'key-main' },
          h('span', { class: 'key-label' }, name),
          h('code', { class: 'hint', title: 'Masked: the secret itself never leaves the proxy' }, key.masked_hint),
          stateText),
        h('div', { class: 'key-meta' },
          `Added ${fmtDate(key.created_at)} · last used ${fmtDate(key.last_used_at)}`),
        key.status === 'failing'
          ? h('p', { class: 'key-failing', role: 'status', dataset: { status: 'failing' } },
            h('strong', {}, 'Failing: '), key.last_error || 'the gateway could not use this key.')
          : null,
        h('div', { class: 'key-actions' },
          h('span', { class: 'switch' }, toggle, h('label', { for: toggleId }, 'Active', h('span', { class: 'sr-only' }, ` (${name})`))),
          testBtn,
          delBtn),
        result);
      testBtn.setAttribute('aria-label', `Test ${name}`);
      delBtn.setAttribute('aria-label', `Delete ${name}`);

      toggle.addEventListener('change', async () => {
        const want = toggle.checked;
        toggle.disabled = true;
        try {
          const updated = await api(`/api/keys/${encodeURIComponent(key.id)}`, { method: 'PATCH', body: { is_active: want } });
          Object.assign(key, updated);
          stateText.textContent = key.is_active ? 'Active' : 'Inactive';
          stateText.className = `state ${key.is_active ? 'state-on' : 'state-off'}`;
          li.classList.toggle('key-inactive', !key.is_active);
          count.classList.toggle('pill-ok', allKeys.some((k) => k.provider === p.id && k.is_active));
          updateSummary();
          toast(`${name} is now ${key.is_active ? 'active' : 'inactive'}.`);
        } catch (e) {
          toggle.checked = !want;
          report(false, `Could not change it: ${e.message}`);
        } finally {
          toggle.disabled = false;
        }
      });

      testBtn.addEventListener('click', async () => {
        testBtn.disabled = true;
        testBtn.textContent = 'Testing…';
        result.hidden = false;
        result.className = 'test-result pending';
        result.textContent = 'Sending a small test request upstream…';
        try {
          const r = await api(`/api/keys/${encodeURIComponent(key.id)}/test`, { method: 'POST' });
          const parts = [`HTTP ${r.status || '—'}`, `${r.latency_ms} ms`];
          if (r.message) parts.push(r.message);
          report(Boolean(r.ok), `${r.ok ? 'Works' : 'Failed'} · ${parts.join(' · ')}`);
        } catch (e) {
          report(false, `Failed · ${e.message}`);
        } finally {
          testBtn.disabled = false;
          testBtn.textContent = 'Test';
        }
      });

      delBtn.addEventListener('click', async () => {
        const yes = await confirmDialog({
          title: `Delete “${name}”?`,
          text: `The ${p.name} key ending ${key.masked_hint} is removed from byok-proxy for good. Requests that need ${p.name} will fail unless another active key is left.`,
          ok: 'Delete key',
        });
        if (!yes) {
          delBtn.focus();
          return;
        }
        delBtn.disabled = true;
        try {
          await api(`/api/keys/${encodeURIComponent(key.id)}`, { method: 'DELETE' });
          const i = allKeys.indexOf(key);
          if (i >= 0) allKeys.splice(i, 1);
          renderKeys();
          toast(`${name} deleted.`);
          (details.querySelector('summary') || details).focus();
        } catch (e) {
          delBtn.disabled = false;
          report(false, `Could not delete it: ${e.message}`);
        }
      });
      return li;
    }

    const { form, details } = addForm(provider, (created) => {
      allKeys.push(created);
      renderKeys();
    });

    const el = h('section', { class: 'card provider', id: `provider-${provider.id}`, dataset: { provider: provider.id }, 'aria-labelledby': headingId },
      h('header', { class: 'card-head' },
        h('h2', { id: headingId }, provider.name),
        h('code', { class: 'muted provider-id' }, provider.id),
        healthSlot,
        count),
      list,
      empty,
      details);
    void form;
    renderKeys();
    return { el, details, healthSlot };
  }

  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function showResult(el, ok, text) {
  el.hidden = false;
  el.className = `test-result ${ok ? 'ok' : 'fail'}`;
  el.replaceChildren(h('span', { class: 'result-icon', 'aria-hidden': 'true' }, ok ? '✓' : '✕'), ' ', text);
}

/** The "Add a key" disclosure with one control per credential field. */
function addForm(provider, onCreated) {
  const labelId = fieldId(provider.id, 'label');
  const error = h('div', { class: 'alert alert-error', role: 'alert', hidden: true });
  const controls = [];
  const fields = provider.fields.map((f) => {
    const id = fieldId(provider.id, f.name);
    const helpId = `${id}-help`;
    let control;
    let help = null;
    if (f.kind === 'text') {
      control = h('textarea', { id, name: f.name, rows: 4, spellcheck: 'false', autocomplete: 'off', required: f.required, class: f.secret ? 'secret-text' : null });
      if (f.secret) help = 'Paste the whole value, including the BEGIN/END lines. It is encrypted on save and never shown again.';
    } else if (f.kind === 'object') {
      control = h('textarea', { id, name: f.name, rows: 3, spellcheck: 'false', autocomplete: 'off', required: f.required, placeholder: '{"gpt-4o": "my-deployment"}', class: 'mono' });
      help = `A JSON object${f.required ? '' : ' (optional)'}, e.g. model name → deployment name.`;
    } else {
      control = h('input', {
        id,
        name: f.name,
        type: f.secret ? 'password' : 'text',
        autocomplete: f.secret ? 'new-password' : 'off',
        spellcheck: 'false',
        autocapitalize: 'off',
        required: f.required,
      });
      if (!f.required) help = 'Optional.';
    }
    if (help) control.setAttribute('aria-describedby', helpId);
    controls.push({ field: f, control });
    return h('div', { class: 'field' },
      h('label', { for: id }, f.label, f.required ? null : h('span', { class: 'optional' }, ' (optional)')),
      control,
      help ? h('p', { class: 'help', id: helpId }, help) : null);
  });
  const labelInput = h('input', { id: labelId, name: 'label', type: 'text', maxlength: 100, autocomplete: 'off', placeholder: 'e.g. work, personal' });
  const save = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Save key');
  const form = h('form', { class: 'add-form', novalidate: true, 'aria-label': `Add ${provider.name} key` },
    h('div', { class: 'field' },
      h('label', { for: labelId }, 'Label', h('span', { class: 'optional' }, ' (optional)')),
      labelInput),
    fields,
    error,
    h('div', { class: 'form-actions' }, save));
  const details = h('details', { class: 'add-key' }, h('summary', {}, `Add ${provider.name} key`), form);

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    const credentials = {};
    for (const { field, control } of controls) {
      control.removeAttribute('aria-invalid');
      const raw = field.kind === 'text' ? control.value.trim() : control.value.trim();
      if (!raw) {
        if (field.required) return fail(control, `${field.label} is required.`);
        continue;
      }
      let value = raw;
      if (field.kind === 'object') {
        try {
          value = JSON.parse(raw);
        } catch {
          return fail(control, `${field.label} is not valid JSON. Write an object such as {"gpt-4o": "my-deployment"}.`);
        }
        if (typeof value !== 'object' || value === null || Array.isArray(value)) {
          return fail(control, `${field.label} must be a JSON object such as {"gpt-4o": "my-deployment"}.`);
        }
      }
      setPath(credentials, field.name, value);
    }
    const body = { provider: provider.id, credentials };
    const label = labelInput.value.trim();
    if (label) body.label = label;
    save.disabled = true;
    save.textContent = 'Saving…';
    try {
      const created = await api('/api/keys', { method: 'POST', body });
      form.reset();
      details.open = false;
      onCreated(created);
      toast(`${provider.name} key saved (${created.masked_hint}). Use Test to check it works.`, 'ok');
      const item = document.querySelector(`[data-key-id="${CSS.escape(created.id)}"] [data-action="test"]`);
      if (item) item.focus();
    } catch (e) {
      fail(null, e.message);
    } finally {
      save.disabled = false;
      save.textContent = 'Save key';
    }
    return undefined;
  });

  function fail(control, message) {
    error.textContent = message;
    error.hidden = false;
    if (control) {
      control.setAttribute('aria-invalid', 'true');
      control.focus();
    }
  }

  return { form, details };
}
