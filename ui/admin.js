// Admin page (admins signed in by web session; the operator API under /admin): every user
// with their sign-in email, admin flag and state; disable / enable, a per-user
// requests-per-minute override, and each user's tokens with revoke.

import { api } from './api.js';
import { h, toast, confirmDialog, spinner, errorBox } from './dom.js';
import { fmtDate } from './format.js';

function tokenState(t) {
  if (t.revoked_at) return 'revoked';
  if (t.expires_at && Date.parse(t.expires_at) <= Date.now()) return 'expired';
  return 'active';
}

export async function mount(root, ctx) {
  const page = h('section', { class: 'page page-admin' });
  page.append(h('div', { class: 'page-head' },
    h('div', {},
      h('h1', {}, 'Admin'),
      h('p', { class: 'lead' }, 'Everyone who can use this byok-proxy. Disabling a user stops their sessions and tokens on the next request, on every replica.'))));
  const box = h('div', { id: 'admin-users' });
  page.append(box);
  root.append(page);

  if (!(ctx.me && ctx.me.user && ctx.me.user.is_admin)) {
    box.replaceChildren(h('div', { class: 'alert alert-info', role: 'status' }, 'The Admin page is for administrators signed in with the identity provider.'));
    return;
  }

  async function tokensOf(user, into) {
    into.replaceChildren(spinner('Loading tokens…'));
    try {
      const body = await api(`/admin/users/${user.id}/tokens`);
      const rows = body.data || [];
      if (!rows.length) {
        into.replaceChildren(h('p', { class: 'empty' }, 'No tokens.'));
        return;
      }
      into.replaceChildren(h('ul', { class: 'admin-tokens' }, rows.map((t) => {
        const st = tokenState(t);
        return h('li', { dataset: { token: t.id } },
          h('span', {}, t.name || '(unnamed)', ' ', h('code', { class: 'muted' }, `${t.prefix}…`)),
          h('span', { class: 'muted small' }, ` last used ${fmtDate(t.last_used_at)} · ${st}`),
          st === 'active'
            ? h('button', {
              type: 'button',
              class: 'btn btn-sm btn-danger-ghost',
              'aria-label': `Revoke ${user.name}’s token ${t.name || t.prefix}`,
              onClick: async () => {
                const ok = await confirmDialog({ title: 'Revoke this token?', text: `${user.name}’s tools using it stop working at once.`, ok: 'Revoke token' });
                if (!ok) return;
                try {
                  await api(`/admin/tokens/${t.id}`, { method: 'DELETE' });
                  toast('Token revoked.');
                  await tokensOf(user, into);
                } catch (e) {
                  toast(e.message, 'error');
                }
              },
            }, 'Revoke')
            : null);
      })));
    } catch (e) {
      into.replaceChildren(errorBox(e.message));
    }
  }

  function userCard(u) {
    const self = ctx.me.user.id === u.id;
    const rpmId = `rpm-${u.id}`;
    const rpm = h('input', { id: rpmId, type: 'number', min: 1, step: 1, inputmode: 'numeric', value: u.requests_per_minute ?? '', placeholder: 'default' });
    const tokens = h('div', { class: 'admin-token-box' });
    const toggle = h('button', {
      type: 'button',
      class: `btn btn-sm ${u.disabled ? '' : 'btn-danger-ghost'}`,
      disabled: self,
      title: self ? 'You cannot disable yourself.' : null,
      onClick: async () => {
        if (!u.disabled) {
          const ok = await confirmDialog({ title: `Disable ${u.name}?`, text: 'Their web sessions and app tokens stop working on the next request.', ok: 'Disable user' });
          if (!ok) return;
        }
        try {
          await api(`/admin/users/${u.id}`, { method: 'PATCH', body: { disabled: !u.disabled } });
          toast(u.disabled ? `${u.name} enabled.` : `${u.name} disabled.`);
          await load();
        } catch (e) {
          toast(e.message, 'error');
        }
      },
    }, u.disabled ? 'Enable' : 'Disable');
    const details = h('details', { class: 'admin-tokens-details' },
      h('summary', {}, 'Tokens'),
      tokens);
    details.addEventListener('toggle', () => {
      if (details.open) tokensOf(u, tokens);
    });
    const limitForm = h('form', { class: 'field-inline admin-limit', novalidate: true },
      h('label', { for: rpmId }, 'Requests/min'),
      rpm,
      h('button', { type: 'submit', class: 'btn btn-sm' }, 'Save'));
    limitForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const v = rpm.value.trim();
      try {
        await api(`/admin/users/${u.id}`, { method: 'PATCH', body: { requests_per_minute: v ? Number(v) : null } });
        toast(v ? `${u.name}: ${v} requests per minute.` : `${u.name}: the default limit.`);
      } catch (e) {
        toast(e.message, 'error');
      }
    });
    return h('li', { class: `card admin-user ${u.disabled ? 'key-inactive' : ''}`, dataset: { user: u.name } },
      h('div', { class: 'card-head' },
        h('h2', {}, u.name),
        u.is_admin ? h('span', { class: 'tag' }, 'admin') : null,
        h('span', { class: `pill ${u.disabled ? '' : 'pill-ok'}` }, u.disabled ? 'Disabled' : 'Active')),
      h('p', { class: 'muted small' }, u.email || 'no email', ' · since ', fmtDate(u.created_at)),
      h('div', { class: 'admin-actions' }, limitForm, toggle),
      details);
  }

  async function load() {
    box.replaceChildren(spinner('Loading users…'));
    try {
      const body = await api('/admin/users');
      const users = body.data || [];
      box.replaceChildren(h('ul', { class: 'admin-user-list' }, users.map(userCard)));
    } catch (e) {
      box.replaceChildren(errorBox(e.message));
    }
  }
  await load();
}
