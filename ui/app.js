// byok-proxy web UI: hash routing (#/providers, #/chat, #/models, #/usage, #/login), the
// session, and the page frame. Each page module exports `mount(root, ctx)`, which may return
// a cleanup function called when the user leaves the page.

import { api, session, onUnauthorized, ApiError } from './api.js';
import { h } from './dom.js';
import * as login from './login.js';
import * as providers from './providers.js';
import * as chat from './chat.js';
import * as models from './models.js';
import * as usage from './usage.js';

const PAGES = {
  login: { title: 'Sign in', page: login, open: true },
  providers: { title: 'Providers', page: providers },
  chat: { title: 'Chat', page: chat },
  models: { title: 'Models', page: models },
  usage: { title: 'Usage', page: usage },
};
const DEFAULT_PAGE = 'providers';

const state = {
  me: null,
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
  if (session.token) signOut({ kind: 'error', text: 'Your app token is no longer accepted (revoked or expired). Sign in again with a valid token.' });
});

function setFrame(name) {
  const topbar = document.getElementById('topbar');
  topbar.hidden = name === 'login';
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.getElementById('whoami').textContent = state.me ? state.me.name : '';
}

async function render() {
  const seq = ++state.renderSeq;
  let { name, params } = parseHash();
  if (!PAGES[name]) name = 'notfound';
  if (name !== 'login' && !session.token) {
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

document.getElementById('logout').addEventListener('click', () => {
  signOut({ kind: 'info', text: 'You are logged out. The token was removed from this browser tab.' });
});

window.addEventListener('hashchange', () => {
  if (location.hash === '' || location.hash.startsWith('#/')) render();
});

render();
