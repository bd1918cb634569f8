// Tokens page: the caller's app tokens (GET/POST /api/tokens, DELETE /api/tokens/{id}).
// Create one with a name, an expiry and optional scopes (models, routes, a rate); it is shown
// once, with a copy button, and fills in "Connect your tools" (snippets.js) with the proxy's
// public_base_url. The list shows when each token was last used; revoke asks first.

import { api, ApiError } from './api.js';
import { h, toast, confirmDialog, spinner, errorBox } from './dom.js';
import { fmtDate } from './format.js';
import { snippets } from './snippets.js';

const ROUTES = [
  ['chat', 'Chat completions'],
  ['responses', 'Responses'],
  ['messages', 'Anthropic Messages (Claude Code)'],
  ['embeddings', 'Embeddings'],
  ['models', 'Model list'],
];
const EXPIRY = [['7d', '7 days'], ['30d', '30 days'], ['90d', '90 days'], ['365d', '1 year'], ['', 'Never']];
const PLACEHOLDER = 'bkp_YOUR_TOKEN';
/** Models tried, in order, for the snippets: the first the token's patterns allow. */
const EXAMPLE_MODELS = ['openai/gpt-4o-mini', 'openai/gpt-4o', 'anthropic/claude-sonnet-4.5', 'google/gemini-2.5-flash', 'xai/grok-3', 'mistral/mistral-large'];

function wildcard(pattern, text) {
  const parts = pattern.split('*');
  if (parts.length === 1) return pattern === text;
  let rest = text;
  const first = parts.shift();
  if (!rest.startsWith(first)) return false;
  rest = rest.slice(first.length);
  const last = parts.pop();
  for (const p of parts) {
    const i = rest.indexOf(p);
    if (i < 0) return false;
    rest = rest.slice(i + p.length);
  }
  return rest.endsWith(last);
}

/** A model the snippets can use under `patterns` (null: any). */
export function exampleModel(patterns) {
  if (!patterns || !patterns.length) return EXAMPLE_MODELS[0];
  const hit = EXAMPLE_MODELS.find((m) => patterns.some((p) => wildcard(p, m)));
  return hit || patterns.find((p) => !p.includes('*')) || EXAMPLE_MODELS[0];
}

function scopeSummary(scopes) {
  const parts = [];
  if (scopes && scopes.allowed_models) parts.push(`models: ${scopes.allowed_models.join(', ')}`);
  if (scopes && scopes.allowed_routes) parts.push(`routes: ${scopes.allowed_routes.join(', ')}`);
  if (scopes && scopes.requests_per_minute) parts.push(`${scopes.requests_per_minute} requests/min`);
  return parts.length ? parts.join(' · ') : 'full access';
}

function status(t) {
  if (t.revoked_at) return ['revoked', 'Revoked'];
  if (t.expires_at && Date.parse(t.expires_at) <= Date.now()) return ['expired', 'Expired'];
  return ['active', 'Active'];
}

async function copy(text, what) {
  try {
    await navigator.clipboard.writeText(text);
    toast(`${what} copied.`);
  } catch {
    toast('Copying is not allowed here: select the text and copy it.', 'error');
  }
}

function copyButton(getText, what, id) {
  return h('button', { type: 'button', class: 'btn btn-sm', id, onClick: () => copy(getText(), what) }, 'Copy');
}

export async function mount(root, ctx) {
  const baseUrl = ((ctx.config && ctx.config.public_base_url) || location.origin).replace(/\/+$/, '');
  const scoped = ctx.me && ctx.me.auth === 'token' && ctx.me.scopes && Object.values(ctx.me.scopes).some((v) => v != null);
  const page = h('section', { class: 'page page-tokens' });
  page.append(h('div', { class: 'page-head' },
    h('div', {},
      h('h1', {}, 'Tokens'),
      h('p', { class: 'lead' }, 'App tokens let your tools (SDKs, IDE plugins, Claude Code, scripts) use byok-proxy as you. Give each tool its own token, limited to what it needs, and revoke it when you stop using it.'))));

  // ---------------------------------------------------------------- create
  const formError = h('div', { class: 'alert alert-error', role: 'alert', id: 'token-error', hidden: true });
  const name = h('input', { id: 'token-name', type: 'text', required: true, maxlength: 100, placeholder: 'laptop IDE', autocomplete: 'off' });
  const expiry = h('select', { id: 'token-expiry' }, EXPIRY.map(([v, label]) => h('option', { value: v, selected: v === '90d' }, label)));
  const models = h('input', { id: 'token-models', type: 'text', placeholder: 'openai/*, anthropic/claude-*', autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'token-models-help' });
  const rpm = h('input', { id: 'token-rpm', type: 'number', min: 1, step: 1, inputmode: 'numeric', placeholder: 'no own limit', 'aria-describedby': 'token-rpm-help' });
  const routeBoxes = ROUTES.map(([value, label]) => {
    const id = `token-route-${value}`;
    return h('div', { class: 'field field-check' },
      h('input', { type: 'checkbox', id, value, checked: true }),
      h('label', { for: id }, label));
  });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'token-create' }, 'Create token');
  const form = h('form', { class: 'card token-form', id: 'token-form', novalidate: true },
    h('h2', {}, 'New token'),
    h('div', { class: 'token-grid' },
      h('div', { class: 'field' }, h('label', { for: 'token-name' }, 'Name'), name),
      h('div', { class: 'field' }, h('label', { for: 'token-expiry' }, 'Expires after'), expiry)),
    h('div', { class: 'field' },
      h('label', { for: 'token-models' }, 'Models ', h('span', { class: 'optional' }, '(optional)')),
      models,
      h('p', { class: 'help', id: 'token-models-help' }, 'Model patterns, separated by commas; * matches anything (openai/*, anthropic/claude-*). Fallback models count too. Empty: every model.')),
    h('fieldset', { class: 'routes' },
      h('legend', {}, 'Routes'),
      routeBoxes),
    h('div', { class: 'field' },
      h('label', { for: 'token-rpm' }, 'Requests per minute ', h('span', { class: 'optional' }, '(optional)')),
      rpm,
      h('p', { class: 'help', id: 'token-rpm-help' }, 'This token’s own limit, under your account’s.')),
    formError,
    h('div', { class: 'form-actions' }, submit));
  if (scoped) {
    for (const el of form.querySelectorAll('input, select, button')) el.disabled = true;
    form.prepend(h('div', { class: 'alert alert-info', role: 'status' }, 'You are signed in with a scoped token, which cannot create tokens. Sign in with an unscoped token or with your identity provider.'));
  }

  // ---------------------------------------------------------------- reveal + connect
  const reveal = h('div', { class: 'card token-reveal', id: 'token-reveal', hidden: true, tabindex: '-1' });
  const connect = h('section', { class: 'card connect', id: 'connect', 'aria-labelledby': 'connect-title' });
  let fresh = null; // { token, scopes }

  function renderConnect() {
    const token = fresh ? fresh.token : PLACEHOLDER;
    const model = exampleModel(fresh && fresh.scopes ? fresh.scopes.allowed_models : null);
    const list = snippets({ baseUrl, token, model });
    connect.replaceChildren(
      h('h2', { id: 'connect-title' }, 'Connect your tools'),
      h('p', { class: 'help' }, fresh
        ? 'Filled in with the token you just created. Paste into your tool; nothing else to configure.'
        : `Create a token above and these fill in with it. The proxy’s address: ${baseUrl}`),
      ...list.map((sn, i) => {
        const code = h('code', { id: `snippet-${sn.id}` }, sn.text);
        return h('details', { class: 'snippet', open: i === 0, dataset: { snippet: sn.id } },
          h('summary', {}, sn.title),
          h('p', { class: 'help' }, sn.help),
          h('div', { class: 'snippet-body' },
            h('pre', { tabindex: '0', 'aria-label': `${sn.title} setup` }, code),
            copyButton(() => sn.text, `${sn.title} setup`, `copy-${sn.id}`)));
      }));
  }

  function showFresh(made) {
    fresh = { token: made.token, scopes: made.scopes };
    reveal.hidden = false;
    reveal.replaceChildren(
      h('h2', {}, `Token “${made.name}” created`),
      h('p', { class: 'alert alert-info', role: 'status' }, 'Copy it now: it is shown only this once. byok-proxy keeps only a hash of it.'),
      h('div', { class: 'token-value' },
        h('code', { id: 'new-token' }, made.token),
        copyButton(() => made.token, 'Token', 'copy-token')),
      h('p', { class: 'help' }, scopeSummary(made.scopes), made.expires_at ? ` · expires ${fmtDate(made.expires_at)}` : ' · never expires'));
    renderConnect();
    reveal.focus();
  }

  // ---------------------------------------------------------------- list
  const listBox = h('div', { class: 'card token-list-card' });

  async function loadList() {
    listBox.replaceChildren(spinner('Loading your tokens…'));
    let body;
    try {
      body = await api('/api/tokens');
    } catch (e) {
      listBox.replaceChildren(errorBox(e.message));
      return;
    }
    const rows = body && Array.isArray(body.data) ? body.data : [];
    if (!rows.length) {
      listBox.replaceChildren(h('h2', {}, 'Your tokens'), h('p', { class: 'empty' }, 'No tokens yet.'));
      return;
    }
    listBox.replaceChildren(
      h('div', { class: 'table-wrap' },
        h('table', { class: 'data-table tokens-table', id: 'tokens-table' },
          h('caption', {}, 'Your tokens'),
          h('thead', {}, h('tr', {},
            h('th', { scope: 'col' }, 'Name'),
            h('th', { scope: 'col' }, 'Scopes'),
            h('th', { scope: 'col' }, 'Created'),
            h('th', { scope: 'col' }, 'Expires'),
            h('th', { scope: 'col' }, 'Last used'),
            h('th', { scope: 'col' }, 'Status'),
            h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
          h('tbody', {}, rows.map((t) => {
            const [cls, label] = status(t);
            const revoke = cls === 'active' && !scoped
              ? h('button', {
                type: 'button',
                class: 'btn btn-sm btn-danger-ghost',
                'aria-label': `Revoke ${t.name || t.prefix}`,
                onClick: async () => {
                  const ok = await confirmDialog({
                    title: `Revoke “${t.name || t.prefix}”?`,
                    text: 'Every tool using this token stops working at once, on every replica. This cannot be undone.',
                    ok: 'Revoke token',
                  });
                  if (!ok) return;
                  try {
                    await api(`/api/tokens/${t.id}`, { method: 'DELETE' });
                    toast('Token revoked.');
                    await loadList();
                  } catch (e) {
                    toast(e.message, 'error');
                  }
                },
              }, 'Revoke')
              : null;
            return h('tr', { dataset: { token: t.id } },
              h('th', { scope: 'row', 'data-label': 'Name' }, t.name || '(unnamed)', ' ', h('code', { class: 'muted' }, `${t.prefix}…`)),
              h('td', { 'data-label': 'Scopes' }, scopeSummary(t.scopes)),
              h('td', { 'data-label': 'Created' }, fmtDate(t.created_at)),
              h('td', { 'data-label': 'Expires' }, t.expires_at ? fmtDate(t.expires_at) : 'never'),
              h('td', { 'data-label': 'Last used', class: 'last-used' }, fmtDate(t.last_used_at)),
              h('td', { 'data-label': 'Status' }, h('span', { class: `pill ${cls === 'active' ? 'pill-ok' : ''}` }, label)),
              h('td', { 'data-label': '' }, revoke));
          })))));
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    formError.hidden = true;
    name.removeAttribute('aria-invalid');
    const n = name.value.trim();
    if (!n) {
      formError.textContent = 'Give the token a name: where will you use it?';
      formError.hidden = false;
      name.setAttribute('aria-invalid', 'true');
      name.focus();
      return;
    }
    const scopes = {};
    const patterns = models.value.split(/[\s,]+/).map((p) => p.trim()).filter(Boolean);
    if (patterns.length) scopes.allowed_models = patterns;
    const routes = routeBoxes.map((b) => b.querySelector('input')).filter((i) => i.checked).map((i) => i.value);
    if (!routes.length) {
      formError.textContent = 'Choose at least one route.';
      formError.hidden = false;
      return;
    }
    if (routes.length < ROUTES.length) scopes.allowed_routes = routes;
    if (rpm.value.trim()) scopes.requests_per_minute = Number(rpm.value);
    const body = { name: n, scopes };
    if (expiry.value) body.expires_in = expiry.value;
    submit.disabled = true;
    submit.textContent = 'Creating…';
    try {
      const made = await api('/api/tokens', { method: 'POST', body });
      form.reset();
      showFresh(made);
      await loadList();
    } catch (e) {
      formError.textContent = e instanceof ApiError ? e.message : String(e);
      formError.hidden = false;
    } finally {
      submit.disabled = false;
      submit.textContent = 'Create token';
    }
  });

  renderConnect();
  page.append(form, reveal, connect, listBox);
  root.append(page);
  await loadList();
}
