// byok-proxy web UI: hash routing (#/providers, #/chat, #/models, #/usage, #/tokens, #/admin,
// #/login), the session, and the page frame. Each page module exports `mount(root, ctx)`,
// which may return a cleanup function called when the user leaves the page.
//
// Signed in either with a pasted app token, or — when the proxy has web sign-in (auth.oidc) —
// with the session cookie set by /auth/callback: on load the page asks GET /api/me with the
// cookie once, and a session answer makes it signed in without any token.

import { api, session, onUnauthorized, ApiError, dropUiToken } from './api.js';
import { h } from './dom.js';
import * as login from './login.js';
import * as providers from './providers.js';
import * as chat from './chat.js';
import * as models from './models.js';
import * as usage from './usage.js';
import * as tokens from './tokens.js';
import * as admin from './admin.js';

const PAGES = {
  login: { title: 'Sign in', page: login, open: true },
  providers: { title: 'Providers', page: providers },
  chat: { title: 'Chat', page: chat },
  models: { title: 'Models', page: models },
  usage: { title: 'Usage', page: usage },
  tokens: { title: 'Tokens', page: tokens },
  admin: { title: 'Admin', page: admin },
};
const DEFAULT_PAGE = 'providers';

const state = {
  me: null,
  /** GET /auth/config: public_base_url and web sign-in (null until loaded). */
  config: null,
  /** Whether the session cookie was tried already (once per page load). */
  probed: false,
  cleanup: null,
  /** Message shown once on the login page (logged out, token rejected…). */
  loginNotice: null,
  renderSeq: 0,
};

function parseHash() {
  const raw = location.hash.startsWith('#/') ? location.hash.slice(2) : '';
  const q = raw.indexOf('?');
  const name = (q >= 0 ? raw.slice(0, q) : raw) || DEFAULT_PAGE;
  const params = new URLSearchParams(q >= 0 ? raw.slice(q + 1) : '');
  return { name, params };
}

export function navigate(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

function signOut(notice) {
  session.clear();
  state.me = null;
  chat.reset();
  state.loginNotice = notice;
  navigate('#/login');
}

onUnauthorized(() => {
  if (session.csrf) signOut({ kind: 'error', text: 'Your session has ended (signed out, expired or idle too long). Sign in again.' });
  else if (session.token) signOut({ kind: 'error', text: 'Your app token is no longer accepted (revoked or expired). Sign in again with a valid token.' });
});

/** The display name of the signed-in user. */
function whoName(me) {
  return me ? (me.user && me.user.name) || me.name || '' : '';
}

async function loadConfig() {
  if (state.config) return state.config;
  try {
    state.config = await api('/auth/config', { notify: false });
  } catch {
    state.config = { public_base_url: location.origin, sign_in: null };
  }
  return state.config;
}

/** Once per page load: is there a web session (cookie) already? */
async function probeSession() {
  if (state.probed || session.token) return;
  state.probed = true;
  try {
    const me = await api('/api/me', { notify: false });
    if (me && me.auth === 'session' && me.csrf) {
      session.useSession(me.csrf);
      state.me = me;
    }
  } catch {
    /* not signed in */
  }
}

function setFrame(name) {
  const topbar = document.getElementById('topbar');
  topbar.hidden = name === 'login';
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  // The Admin page works with an admin's web session (the operator API takes no app token).
  const isAdmin = Boolean(state.me && state.me.user && state.me.user.is_admin && session.csrf);
  document.querySelector('[data-nav="admin"]').hidden = !isAdmin;
  document.getElementById('whoami').textContent = whoName(state.me);
}

async function render() {
  const seq = ++state.renderSeq;
  let { name, params } = parseHash();
  if (!PAGES[name]) name = 'notfound';
  await loadConfig();
  await probeSession();
  if (seq !== state.renderSeq) return;
  if (name === 'login' && session.active && state.me) {
    location.replace(`#/${DEFAULT_PAGE}`);
    return;
  }
  if (name !== 'login' && !session.active) {
    const next = location.hash && location.hash !== '#/login' ? location.hash : '';
    location.replace(next ? `#/login?next=${encodeURIComponent(next)}` : '#/login');
    return;
  }
  if (name !== 'login' && !state.me) {
    try {
      state.me = await api('/api/me');
    } catch (e) {
      if (seq !== state.renderSeq) return;
      if (e instanceof ApiError && e.status === 401) return; // onUnauthorized moved us to login
      mountError(e);
      return;
    }
    if (seq !== state.renderSeq) return;
  }
  if (state.cleanup) {
    try {
      state.cleanup();
    } catch {
      /* a page's cleanup must not break navigation */
    }
    state.cleanup = null;
  }
  setFrame(name);
  const main = document.getElementById('main');
  main.replaceChildren();
  main.dataset.page = name;
  const entry = PAGES[name];
  document.title = `${entry ? entry.title : 'Not found'} · byok-proxy`;
  if (!entry) {
    main.append(
      h('section', { class: 'page' }, h('h1', {}, 'Page not found'),
        h('p', {}, 'There is no such page. ', h('a', { href: '#/providers' }, 'Go to Providers'), '.')),
    );
    return;
  }
  const ctx = {
    params,
    me: state.me,
    config: state.config,
    navigate,
    notice: name === 'login' ? state.loginNotice : null,
    onLogin(me, next) {
      state.me = me;
      state.loginNotice = null;
      navigate(next && next.startsWith('#/') && !next.startsWith('#/login') ? next : `#/${DEFAULT_PAGE}`);
    },
  };
  state.loginNotice = null;
  try {
    const cleanup = await entry.page.mount(main, ctx);
    if (seq !== state.renderSeq) {
      if (typeof cleanup === 'function') cleanup();
      return;
    }
    state.cleanup = typeof cleanup === 'function' ? cleanup : null;
  } catch (e) {
    if (seq !== state.renderSeq) return;
    if (e instanceof ApiError && e.status === 401) return;
    mountError(e);
  }
  // Move focus to the page heading so keyboard and screen-reader users start at the top.
  const heading = main.querySelector('h1');
  if (heading && document.activeElement === document.body) {
    heading.setAttribute('tabindex', '-1');
    heading.focus({ preventScroll: true });
  }
}

function mountError(e) {
  const main = document.getElementById('main');
  main.replaceChildren(
    h('section', { class: 'page' },
      h('h1', {}, 'Could not load this page'),
      h('div', { class: 'alert alert-error', role: 'alert' }, e && e.message ? e.message : String(e)),
      h('p', {}, h('button', { type: 'button', class: 'btn', onClick: () => render() }, 'Retry'))),
  );
}

document.getElementById('logout').addEventListener('click', async () => {
  if (session.csrf) {
    await dropUiToken();
    try {
      await api('/auth/logout', { method: 'POST', notify: false });
    } catch {
      /* the session may have ended already */
    }
    signOut({ kind: 'info', text: 'You are signed out.' });
    return;
  }
  signOut({ kind: 'info', text: 'You are logged out. The token was removed from this browser tab.' });
});

window.addEventListener('hashchange', () => {
  if (location.hash === '' || location.hash.startsWith('#/')) render();
});

render();
