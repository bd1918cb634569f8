// Chat page: a model picker limited to the models the caller can use (GET /v1/models), a badge
// with the model's context window and price, and a conversation whose answer is rendered while
// it streams (POST /v1/chat/completions with stream: true, read with fetch + a stream reader).
// Stop aborts the request (AbortController), which makes the proxy drop the upstream request.

import { api, v1AuthHeaders, errorFrom, loadHealth, NETWORK_MESSAGE } from './api.js';
import { h, spinner, errorBox } from './dom.js';
import { SseParser } from './sse.js';
import { perMillion, fmtPrice, fmtTokensShort, fmtInt, fmtCost, creatorOf } from './format.js';

const MODEL_KEY = 'byok-proxy.chat-model';

/** The conversation survives page switches (not reloads): it lives in this module. */
let conversation = [];
/** The DOM of past turns, re-rendered from `conversation` when the page mounts again. */
let transcript = [];

/** Forget everything (logout). */
export function reset() {
  conversation = [];
  transcript = [];
  sessionStorage.removeItem(MODEL_KEY);
}

function isChatModel(m) {
  const t = m.type || 'language';
  return t === 'language';
}

export async function mount(root) {
  const page = h('section', { class: 'page page-chat' });
  root.append(page);
  page.append(h('div', { class: 'page-head' }, h('h1', {}, 'Chat')), spinner('Loading your models…'));

  let models;
  try {
    const body = await api('/v1/models');
    models = (body.data || []).filter(isChatModel);
  } catch (e) {
    page.replaceChildren(h('div', { class: 'page-head' }, h('h1', {}, 'Chat')), errorBox(e.message));
    throw e;
  }

  if (models.length === 0) {
    page.replaceChildren(
      h('div', { class: 'page-head' }, h('h1', {}, 'Chat')),
      h('div', { class: 'card empty-state' },
        h('h2', {}, 'No model available yet'),
        h('p', {}, 'You can chat with the models of providers you hold an active key for. Add a key first.'),
        h('p', {}, h('a', { class: 'btn btn-primary', href: '#/providers' }, 'Add a provider key'),
          ' ', h('a', { class: 'btn', href: '#/models' }, 'Browse models'))));
    return undefined;
  }

  // --- toolbar: model picker + badge
  const select = h('select', { id: 'chat-model', name: 'model' });
  const byCreator = new Map();
  for (const m of models) {
    const c = creatorOf(m.id);
    if (!byCreator.has(c)) byCreator.set(c, []);
    byCreator.get(c).push(m);
  }
  for (const [creator, list] of byCreator) {
    const group = h('optgroup', { label: creator });
    for (const m of list) group.append(h('option', { value: m.id, dataset: { provider: creator } }, m.name || m.id));
    select.append(group);
  }
  const saved = sessionStorage.getItem(MODEL_KEY);
  if (saved && models.some((m) => m.id === saved)) select.value = saved;

  const badge = h('div', { class: 'model-badge', id: 'model-badge', 'aria-live': 'polite' });
  function renderBadge() {
    const m = models.find((x) => x.id === select.value);
    if (!m) {
      badge.replaceChildren();
      return;
    }
    const p = m.pricing || {};
    badge.replaceChildren(
      h('span', { class: 'chip', title: 'Context window' }, h('span', { class: 'chip-k' }, 'context'), fmtTokensShort(m.context_window)),
      h('span', { class: 'chip', title: 'Maximum output tokens' }, h('span', { class: 'chip-k' }, 'max output'), fmtTokensShort(m.max_tokens)),
      h('span', { class: 'chip', title: 'Price per 1M input tokens' }, h('span', { class: 'chip-k' }, 'in'), `${fmtPrice(perMillion(p.input))} / 1M`),
      h('span', { class: 'chip', title: 'Price per 1M output tokens' }, h('span', { class: 'chip-k' }, 'out'), `${fmtPrice(perMillion(p.output))} / 1M`),
      h('code', { class: 'chip chip-id' }, m.id),
    );
  }
  select.addEventListener('change', () => {
    sessionStorage.setItem(MODEL_KEY, select.value);
    renderBadge();
  });
  renderBadge();

  // Issue 7 hook: mark models whose provider is degraded or down (only when the endpoint exists).
  loadHealth().then((health) => {
    if (!health) return;
    for (const opt of select.querySelectorAll('option')) {
      const entry = health.get(opt.dataset.provider);
      if (entry && (entry.status === 'degraded' || entry.status === 'down')) {
        opt.textContent = `${opt.textContent} — ${entry.status}`;
        opt.dataset.health = entry.status;
      }
    }
  });

  const newChat = h('button', { type: 'button', class: 'btn btn-ghost', id: 'chat-new' }, 'New chat');

  // --- conversation
  const log = h('div', { class: 'conversation', id: 'conversation', role: 'log', 'aria-live': 'polite', 'aria-label': 'Conversation' });
  const intro = h('div', { class: 'conversation-empty' },
    h('p', {}, 'Ask anything. The answer streams from the provider with your own key.'),
    h('p', { class: 'muted small' }, 'Enter sends, Shift+Enter adds a line, Escape stops an answer.'));
  function renderTranscript() {
    log.replaceChildren(...(transcript.length ? transcript : [intro]));
  }
  renderTranscript();

  // --- composer
  const input = h('textarea', { id: 'chat-input', name: 'message', rows: 3, placeholder: 'Write a message…', required: true });
  const send = h('button', { type: 'submit', class: 'btn btn-primary', id: 'chat-send' }, 'Send');
  const stop = h('button', { type: 'button', class: 'btn', id: 'chat-stop', disabled: true }, 'Stop');
  const form = h('form', { class: 'composer', id: 'chat-form' },
    h('label', { for: 'chat-input', class: 'sr-only' }, 'Message'),
    input,
    h('div', { class: 'composer-actions' }, stop, send));

  page.replaceChildren(
    h('div', { class: 'page-head chat-head' },
      h('h1', {}, 'Chat'),
      h('div', { class: 'chat-toolbar' },
        h('div', { class: 'field field-inline' }, h('label', { for: 'chat-model' }, 'Model'), select),
        newChat)),
    badge,
    log,
    form);

  let controller = null;

  function setBusy(busy) {
    send.disabled = busy;
    stop.disabled = !busy;
    select.disabled = busy;
    newChat.disabled = busy;
    log.setAttribute('aria-busy', busy ? 'true' : 'false');
    page.dataset.streaming = busy ? 'true' : 'false';
  }
  setBusy(false);

  function scrollDown() {
    log.scrollTop = log.scrollHeight;
  }

  function bubble(role, label, text) {
    const body = h('div', { class: 'msg-text' }, text);
    const meta = h('div', { class: 'msg-meta' });
    const el = h('article', { class: ['msg', `msg-${role}`] },
      h('div', { class: 'msg-role' }, label),
      body,
      meta);
    return { el, body, meta };
  }

  async function sendMessage(text) {
    const model = select.value;
    const modelInfo = models.find((m) => m.id === model);
    const user = bubble('user', 'You', text);
    conversation.push({ role: 'user', content: text });
    const answer = bubble('assistant', modelInfo ? modelInfo.name || model : model, '');
    answer.el.dataset.state = 'streaming';
    answer.el.setAttribute('aria-busy', 'true');
    transcript.push(user.el, answer.el);
    renderTranscript();
    scrollDown();

    controller = new AbortController();
    setBusy(true);
    let acc = '';
    let done = false;
    let usage = null;
    let finish = null;
    let streamError = null;
    const parser = new SseParser((data) => {
      if (data === '[DONE]') {
        done = true;
        return;
      }
      let obj;
      try {
        obj = JSON.parse(data);
      } catch {
        return;
      }
      if (obj && obj.error) {
        streamError = errorFrom(0, obj, { notify: false }).message;
        return;
      }
      const choice = obj && Array.isArray(obj.choices) ? obj.choices[0] : null;
      const delta = choice && choice.delta ? choice.delta.content : null;
      if (typeof delta === 'string' && delta) {
        acc += delta;
        answer.body.textContent = acc;
        scrollDown();
      }
      if (choice && choice.finish_reason) finish = choice.finish_reason;
      if (obj && obj.usage) usage = obj.usage;
    });

    try {
      let resp;
      const auth = await v1AuthHeaders();
      try {
        resp = await fetch('/v1/chat/completions', {
          method: 'POST',
          headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...auth },
          body: JSON.stringify({ model, messages: conversation, stream: true, stream_options: { include_usage: true } }),
          signal: controller.signal,
          cache: 'no-store',
          credentials: 'omit',
        });
      } catch (e) {
        if (e && e.name === 'AbortError') throw e;
        throw new Error(NETWORK_MESSAGE);
      }
      if (!resp.ok) {
        const t = await resp.text();
        let json = null;
        try {
          json = JSON.parse(t);
        } catch {
          json = null;
        }
        throw errorFrom(resp.status, json);
      }
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done: end } = await reader.read();
        if (end) break;
        parser.push(decoder.decode(value, { stream: true }));
        if (streamError) break;
      }
      parser.push(decoder.decode());
      parser.end();
      if (streamError) throw new Error(streamError);
      if (!acc) throw new Error('The model returned no text.');
      conversation.push({ role: 'assistant', content: acc });
      answer.el.dataset.state = 'done';
      const notes = [];
      if (usage) {
        notes.push(`${fmtInt(usage.prompt_tokens)} in · ${fmtInt(usage.completion_tokens)} out tokens`);
        if (usage.cost !== undefined && usage.cost !== null) notes.push(fmtCost(usage.cost));
      }
      if (finish === 'length') notes.push('cut off: the output token limit was reached');
      if (!done && finish === null) notes.push('the stream ended early');
      answer.meta.textContent = notes.join(' · ');
    } catch (e) {
      if (e && e.name === 'AbortError') {
        answer.el.dataset.state = 'stopped';
        answer.meta.textContent = 'Stopped.';
        if (acc) conversation.push({ role: 'assistant', content: acc });
        else conversation.pop();
      } else {
        answer.el.dataset.state = 'error';
        answer.el.classList.add('msg-error');
        answer.body.textContent = acc;
        const msg = e && e.message ? e.message : String(e);
        answer.meta.replaceChildren(h('span', { class: 'error-text', role: 'alert' }, msg));
        if (e && e.code === 'no_provider_key') {
          answer.meta.append(' ', h('a', { href: '#/providers' }, 'Open Providers'));
        }
        // The failed turn is not part of the history sent next time.
        if (acc) conversation.push({ role: 'assistant', content: acc });
        else conversation.pop();
      }
    } finally {
      answer.el.removeAttribute('aria-busy');
      controller = null;
      setBusy(false);
      scrollDown();
    }
  }

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    if (!text || controller) return;
    input.value = '';
    sendMessage(text).finally(() => input.focus());
  });
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });
  page.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && controller) controller.abort();
  });
  stop.addEventListener('click', () => {
    if (controller) controller.abort();
  });
  newChat.addEventListener('click', () => {
    conversation = [];
    transcript = [];
    renderTranscript();
    input.focus();
  });

  return () => {
    if (controller) controller.abort();
  };
}
