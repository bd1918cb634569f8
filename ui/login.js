// Login: the user pastes an app token; it is checked with GET /api/me and kept in
// sessionStorage (this tab only) on success.

import { api, session, ApiError } from './api.js';
import { h } from './dom.js';

export async function mount(root, ctx) {
  const error = h('div', { class: 'alert alert-error', role: 'alert', id: 'login-error', hidden: true });
  const notice = ctx.notice
    ? h('div', { class: `alert ${ctx.notice.kind === 'error' ? 'alert-error' : 'alert-info'}`, role: 'status', id: 'login-notice' }, ctx.notice.text)
    : null;
  const input = h('input', {
    id: 'token',
    name: 'token',
    type: 'password',
    autocomplete: 'off',
    spellcheck: 'false',
    autocapitalize: 'off',
    required: true,
    placeholder: 'bkp_…',
    'aria-describedby': 'token-help',
  });
  const button = h('button', { type: 'submit', class: 'btn btn-primary btn-block', id: 'login-submit' }, 'Sign in');

  const form = h('form', { class: 'card login-card', id: 'login-form', novalidate: true },
    h('div', { class: 'login-brand' }, h('img', { src: '/ui/favicon.svg', alt: '', width: 40, height: 40 }), h('span', {}, 'byok-proxy')),
    h('h1', {}, 'Sign in'),
    notice,
    h('div', { class: 'field' },
      h('label', { for: 'token' }, 'App token'),
      input,
      h('p', { class: 'help', id: 'token-help' },
        'Paste the app token you were given (it starts with ', h('code', {}, 'bkp_'),
        '). It is kept in this browser tab only, and removed when you log out or close the tab.')),
    error,
    button,
    h('p', { class: 'muted small' }, 'No token yet? An operator creates one with ',
      h('code', {}, 'byok-proxy token create --user NAME'), '.'));

  function showError(text) {
    error.textContent = text;
    error.hidden = false;
    input.setAttribute('aria-invalid', 'true');
    input.focus();
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    error.hidden = true;
    input.removeAttribute('aria-invalid');
    if (!token) {
      showError('Paste your app token first.');
      return;
    }
    button.disabled = true;
    button.textContent = 'Checking…';
    try {
      const me = await api('/api/me', { token, notify: false });
      session.set(token);
      ctx.onLogin(me, ctx.params.get('next'));
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        showError('This token was not accepted: it is unknown, expired or revoked. Check that you copied all of it (it starts with bkp_), or ask your operator for a new one.');
      } else {
        showError(e && e.message ? e.message : String(e));
      }
    } finally {
      button.disabled = false;
      button.textContent = 'Sign in';
    }
  });

  root.append(h('div', { class: 'login-wrap' }, form));
  input.focus();
}
