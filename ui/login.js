// Login. With web sign-in configured (auth.oidc), the main action is "Sign in with <issuer>"
// (a plain link to /auth/login: the issuer's page, then back to /ui/ with a session cookie);
// a failed sign-in comes back as /ui/?login_error=<code>, shown here in words. Pasting an app
// token stays available (the only way without auth.oidc): it is checked with GET /api/me and
// kept in sessionStorage (this tab only) on success.

import { api, session, ApiError } from './api.js';
import { h } from './dom.js';

/** What each `login_error` of /auth/callback means, and what to do. */
const LOGIN_ERRORS = {
  bad_state: 'The sign-in could not be matched to this browser (it took too long, or was started in another tab). Try again.',
  denied: 'The sign-in was cancelled or refused at the identity provider.',
  issuer_unavailable: 'The identity provider could not be reached. Try again shortly; if it persists, tell your operator.',
  exchange_failed: 'The identity provider did not confirm the sign-in (the link was used already or expired). Try again.',
  invalid_id_token: 'The identity provider’s answer could not be verified. Tell your operator.',
  email_not_verified: 'Your email address is not verified at the identity provider. Verify it there, then sign in again.',
  no_email: 'The identity provider did not share your email address, which this proxy needs.',
  domain_not_allowed: 'Your email domain is not allowed on this proxy. Sign in with your work account, or ask your operator.',
  user_disabled: 'Your account on this proxy is disabled. Ask your operator to re-enable it.',
  server_error: 'byok-proxy could not finish the sign-in. Try again; if it persists, tell your operator.',
};

/** The `login_error` of the page URL, once (it is removed from the address bar). */
function takeLoginError() {
  const params = new URLSearchParams(location.search);
  const code = params.get('login_error');
  if (!code) return null;
  history.replaceState(null, '', `${location.pathname}${location.hash}`);
  return LOGIN_ERRORS[code] || `The sign-in failed (${code}). Try again.`;
}

export async function mount(root, ctx) {
  const signIn = ctx.config && ctx.config.sign_in;
  const loginError = takeLoginError();
  const error = h('div', { class: 'alert alert-error', role: 'alert', id: 'login-error', hidden: true });
  const notice = ctx.notice
    ? h('div', { class: `alert ${ctx.notice.kind === 'error' ? 'alert-error' : 'alert-info'}`, role: 'status', id: 'login-notice' }, ctx.notice.text)
    : null;
  const failed = loginError ? h('div', { class: 'alert alert-error', role: 'alert', id: 'sign-in-error' }, loginError) : null;
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

  const tokenFields = [
    h('div', { class: 'field' },
      h('label', { for: 'token' }, 'App token'),
      input,
      h('p', { class: 'help', id: 'token-help' },
        'Paste the app token you were given (it starts with ', h('code', {}, 'bkp_'),
        '). It is kept in this browser tab only, and removed when you log out or close the tab.')),
    error,
    button,
  ];
  const sso = signIn
    ? h('a', { class: 'btn btn-primary btn-block', id: 'sign-in-sso', href: signIn.login_url }, `Sign in with ${signIn.name}`)
    : null;
  const form = h('form', { class: 'card login-card', id: 'login-form', novalidate: true },
    h('div', { class: 'login-brand' }, h('img', { src: '/ui/favicon.svg', alt: '', width: 40, height: 40 }), h('span', {}, 'byok-proxy')),
    h('h1', {}, 'Sign in'),
    notice,
    failed,
    sso,
    signIn
      ? h('details', { class: 'token-login' },
        h('summary', {}, 'Use an app token instead'),
        ...tokenFields)
      : tokenFields,
    signIn
      ? h('p', { class: 'muted small' }, 'First time here? Signing in creates your account; then create app tokens for your tools under Tokens.')
      : h('p', { class: 'muted small' }, 'No token yet? An operator creates one with ',
        h('code', {}, 'byok-proxy token create --user NAME'), '.'));
  if (signIn) button.classList.remove('btn-primary');

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
  if (sso) sso.focus();
  else input.focus();
}
