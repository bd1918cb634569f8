// Browser test of the byok-proxy web UI, run by `cargo test --test ui` (tests/ui.rs), which
// starts the fake gateway and the real proxy, creates a user and passes:
//   BASE_URL         the proxy, e.g. http://127.0.0.1:PORT
//   TOKEN            the user's app token
//   SCREENSHOT_DIR   where to save one PNG per page
//   OPENAI_KEY, OPENAI_SPARE_KEY   the OpenAI keys to add through the UI
//   CHROMIUM         the browser (default /usr/bin/chromium, Debian's package)
//
// The harness scripts the fake gateway on request: this script prints `@@<command>` on stdout
// and waits for `ok` on stdin (`@@stream <delay_ms>`: the next upstream request streams the
// chat answer "Hello from fake" in 5 SSE events `delay_ms` apart; `@@error <status> <message>`:
// the next upstream request fails with that status and a gateway error body with that message).
//
// Exits 0 when every check passed; any failure throws (exit 1) with what went wrong.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

const env = process.env;
const BASE_URL = need('BASE_URL');
const TOKEN = need('TOKEN');
const OPENAI_KEY = need('OPENAI_KEY');
const OPENAI_SPARE_KEY = need('OPENAI_SPARE_KEY');
const SCREENSHOT_DIR = env.SCREENSHOT_DIR || 'ui-screenshots';
const CHROMIUM = env.CHROMIUM || '/usr/bin/chromium';
const UPSTREAM_ERROR_MESSAGE = 'Rate limit reached for this model. Retry in 20 seconds.';
const TIMEOUT = 15_000;

function need(name) {
  const v = env[name];
  if (!v) throw new Error(`environment variable ${name} is required (run through cargo test --test ui)`);
  return v;
}

function log(msg) {
  console.log(`ui-e2e: ${msg}`);
}

function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
}

// --- harness protocol (stdout/stdin)
const stdinLines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function harness(command) {
  console.log(`@@${command}`);
  const { value, done } = await stdinLines.next();
  if (done || String(value).trim() !== 'ok') throw new Error(`harness did not accept "${command}": ${value}`);
}

// --- direct API calls (to verify server state behind the UI)
async function apiGet(p) {
  const r = await fetch(`${BASE_URL}${p}`, { headers: { authorization: `Bearer ${TOKEN}` } });
  return { status: r.status, body: r.status === 204 ? null : await r.json().catch(() => null) };
}

fs.mkdirSync(SCREENSHOT_DIR, { recursive: true });
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'byok-ui-e2e-'));

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: CHROMIUM,
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
  viewport: { width: 1280, height: 860 },
  deviceScaleFactor: 1,
  colorScheme: 'light',
  reducedMotion: 'reduce',
});

const problems = [];
const offsite = [];
let failed = false;

try {
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    const text = m.text();
    // 401 (bad token check) and 404 (optional endpoints) are expected network answers.
    if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of (401|404|429)/.test(text)) {
      problems.push(`console error: ${text}`);
    }
    if (/Content Security Policy/i.test(text)) problems.push(`CSP violation: ${text}`);
  });
  page.on('request', (r) => {
    const url = r.url();
    if (!url.startsWith(BASE_URL) && !url.startsWith('data:')) offsite.push(url);
  });

  const shot = async (name, opts = {}) => {
    // Screenshots for the README: top of the page, no transient toast, no hover.
    await page.mouse.move(0, 0);
    await page.evaluate(() => {
      document.getElementById('toast').classList.remove('show');
      window.scrollTo(0, 0);
    });
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, `${name}.png`), fullPage: true, ...opts });
    log(`screenshot ${name}.png`);
  };
  const nav = async (name) => {
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name }).click();
    await page.getByRole('heading', { level: 1, name }).waitFor();
  };

  // ---------------------------------------------------------------- login
  log('login');
  await page.goto(`${BASE_URL}/ui/`);
  await page.waitForURL(/#\/login/);
  await page.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor();
  check(await page.locator('#topbar').isHidden(), 'the navigation is hidden before login');
  await page.getByLabel('App token').fill('bkp_this-is-not-a-valid-token-00000000000000000');
  await page.getByLabel('App token').press('Enter');
  const loginError = page.locator('#login-error');
  await loginError.waitFor({ state: 'visible' });
  check(/not accepted/.test(await loginError.textContent()), 'a bad token shows a clear message');
  check(await page.evaluate(() => sessionStorage.length === 0), 'a bad token is not stored');
  await shot('login');

  await page.getByLabel('App token').fill(TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { level: 1, name: 'Providers' }).waitFor();
  check((await page.locator('#whoami').textContent()) === 'alice', 'the user name is shown');
  check(await page.evaluate((t) => Object.values(sessionStorage).includes(t), TOKEN), 'the token is kept in sessionStorage');

  // ---------------------------------------------------------------- providers
  log('providers: every provider with its fields');
  const providers = (await apiGet('/api/providers')).body.data;
  for (const p of providers) {
    await page.locator(`#provider-${p.id}`).waitFor();
    for (const f of p.fields) {
      const id = `#f-${p.id}-${f.name.replace(/[^A-Za-z0-9_-]/g, '-')}`;
      check((await page.locator(id).count()) === 1, `${p.id} has a control for ${f.name}`);
      check((await page.locator(`label[for="${id.slice(1)}"]`).count()) === 1, `${p.id}.${f.name} has a label`);
    }
  }
  check((await page.locator('#f-vertex-googleCredentials-privateKey').evaluate((e) => e.tagName)) === 'TEXTAREA', 'the Vertex private key is a textarea');
  check((await page.locator('#f-openai-apiKey').getAttribute('type')) === 'password', 'API keys are password fields');
  for (const id of ['#f-bedrock-accessKeyId', '#f-bedrock-secretAccessKey', '#f-bedrock-region', '#f-azure-apiKey', '#f-azure-resourceName', '#f-azure-modelMappings']) {
    check((await page.locator(id).count()) === 1, `${id} exists`);
  }

  const openai = page.locator('#provider-openai');
  const addKey = async (card, summary, fill) => {
    await card.locator('summary').click();
    await fill();
    await card.getByRole('button', { name: 'Save key' }).click();
  };

  log('providers: add two OpenAI keys');
  await addKey(openai, 'Add OpenAI key', async () => {
    await openai.getByLabel('Label').fill('work');
    await openai.getByLabel('API key', { exact: true }).fill(OPENAI_KEY);
  });
  await openai.locator('li.key', { hasText: 'work' }).waitFor();
  await addKey(openai, 'Add OpenAI key', async () => {
    await openai.getByLabel('Label').fill('spare');
    await openai.getByLabel('API key', { exact: true }).fill(OPENAI_SPARE_KEY);
  });
  await openai.locator('li.key', { hasText: 'spare' }).waitFor();
  check((await openai.locator('li.key').count()) === 2, 'several keys per provider are listed');
  const workKey = openai.locator('li.key', { hasText: 'work' });
  const spareKey = openai.locator('li.key', { hasText: 'spare' });
  check((await workKey.locator('.hint').textContent()).endsWith(OPENAI_KEY.slice(-4)), 'the masked hint shows the last 4 characters');
  const html = await page.content();
  check(!html.includes(OPENAI_KEY) && !html.includes(OPENAI_SPARE_KEY), 'no secret is left in the page');

  log('providers: add a Vertex key');
  const vertex = page.locator('#provider-vertex');
  await addKey(vertex, 'Add Google Vertex AI key', async () => {
    await vertex.getByLabel('Project ID').fill('ui-test-project');
    await vertex.getByLabel('Location').fill('us-central1');
    await vertex.getByLabel('Service account client email').fill('svc@ui-test-project.iam.gserviceaccount.com');
    await vertex.getByLabel('Service account private key (PEM)').fill('-----BEGIN PRIVATE KEY-----\nMIIEvUITESTONLYabcdefghijklmnop\nqrstuvwxyz0123456789\n-----END PRIVATE KEY-----\n');
  });
  const vertexKey = vertex.locator('li.key');
  await vertexKey.waitFor();
  check((await vertexKey.locator('.hint').textContent()) === 'ui-test-project (us-central1)', 'the Vertex hint is project (location)');
  check(!(await page.content()).includes('MIIEvUITESTONLY'), 'the private key is not left in the page');

  log('providers: a client-side error in words (Azure model mappings that are not JSON)');
  const azure = page.locator('#provider-azure');
  await addKey(azure, 'Add Azure OpenAI key', async () => {
    await azure.getByLabel('API key', { exact: true }).fill('azure-key-000000000000');
    await azure.getByLabel('Resource name').fill('my-resource');
    await azure.getByLabel(/Model mappings/).fill('{not json');
  });
  await azure.getByRole('alert').filter({ hasText: 'not valid JSON' }).waitFor();
  check((await azure.locator('li.key').count()) === 0, 'nothing was saved');
  await azure.locator('summary').press('Enter'); // close the form again, by keyboard
  check(!(await azure.locator('details').evaluate((d) => d.open)), 'the form closes from the keyboard');

  log('providers: test keys');
  await workKey.getByRole('button', { name: /^Test/ }).click();
  const workResult = workKey.locator('.test-result.ok');
  await workResult.waitFor();
  const workText = await workResult.textContent();
  check(/Works/.test(workText) && /HTTP 200/.test(workText) && /\d+ ms/.test(workText), `the test result shows ok, status and latency: ${workText}`);
  await vertexKey.getByRole('button', { name: /^Test/ }).click();
  await vertexKey.locator('.test-result.ok').waitFor();

  log('providers: a failing key test is shown with the upstream message');
  await harness('error 401 Incorrect API key provided.');
  await spareKey.getByRole('button', { name: /^Test/ }).click();
  const spareResult = spareKey.locator('.test-result.fail');
  await spareResult.waitFor();
  const spareText = await spareResult.textContent();
  check(/Failed/.test(spareText) && /HTTP 401/.test(spareText) && /Incorrect API key provided/.test(spareText), `a failed test says why: ${spareText}`);

  log('providers: toggle a key');
  await spareKey.getByRole('switch').click();
  await spareKey.locator('.state', { hasText: 'Inactive' }).waitFor();
  let keys = (await apiGet('/api/keys')).body.data;
  check(keys.find((k) => k.label === 'spare').is_active === false, 'the toggle made the key inactive on the server');
  await spareKey.getByRole('switch').press('Space');
  await spareKey.locator('.state', { hasText: /^Active$/ }).waitFor();
  keys = (await apiGet('/api/keys')).body.data;
  check(keys.find((k) => k.label === 'spare').is_active === true, 'the keyboard toggled it back on');

  log('providers: delete a key (with confirmation)');
  await spareKey.getByRole('button', { name: /^Delete/ }).click();
  const dialog = page.locator('#confirm-dialog');
  await dialog.waitFor({ state: 'visible' });
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  await dialog.waitFor({ state: 'hidden' });
  check((await openai.locator('li.key').count()) === 2, 'Cancel keeps the key');
  await spareKey.getByRole('button', { name: /^Delete/ }).click();
  await dialog.waitFor({ state: 'visible' });
  await dialog.getByRole('button', { name: 'Delete key' }).click();
  await spareKey.waitFor({ state: 'detached' });
  keys = (await apiGet('/api/keys')).body.data;
  check(keys.filter((k) => k.provider === 'openai').length === 1, 'the key is deleted on the server');

  const health = await apiGet('/api/providers/health');
  const badges = page.locator('.health');
  if (health.status === 200) {
    await badges.first().waitFor();
    log('providers: health endpoint present, badges shown');
  } else {
    check((await badges.count()) === 0, 'no health badge while /api/providers/health is absent');
  }
  await page.mouse.move(0, 0);
  await shot('providers');

  // ---------------------------------------------------------------- chat
  log('chat: model picker and badge');
  await nav('Chat');
  const picker = page.getByLabel('Model');
  await picker.waitFor();
  const options = await picker.locator('option').evaluateAll((os) => os.map((o) => o.value));
  // The user holds OpenAI and Vertex keys; Vertex serves Google and Anthropic models by default
  // (models.serving_providers), so xAI and Mistral models must not be offered.
  check(
    options.length > 0 && options.every((o) => /^(openai|google|anthropic)\//.test(o)) && options.includes('google/gemini-2.5-flash'),
    `only accessible models are offered: ${options}`,
  );
  check(!options.includes('openai/text-embedding-3-small'), 'embedding models are not offered for chat');
  await picker.selectOption('openai/gpt-4o');
  const badge = page.locator('#model-badge');
  const badgeText = await badge.textContent();
  check(/128K/.test(badgeText) && /\$2\.50/.test(badgeText) && /\$10\.00/.test(badgeText), `the badge shows context and price: ${badgeText}`);

  log('chat: the answer renders while it streams');
  const send = page.getByRole('button', { name: 'Send' });
  const stop = page.getByRole('button', { name: 'Stop' });
  check(await stop.isDisabled(), 'Stop is disabled while idle');
  await harness('stream 700');
  await page.getByLabel('Message').fill('Say hello');
  await page.getByLabel('Message').press('Enter');
  const answer = page.locator('.msg-assistant').last();
  // Snapshot the page in the same animation frame in which the first words show up.
  const partial = await (await page.waitForFunction(() => {
    const msg = [...document.querySelectorAll('.msg-assistant')].pop();
    const text = msg ? msg.querySelector('.msg-text').textContent : '';
    if (!text.startsWith('Hello')) return null;
    return { text, state: msg.dataset.state, stopEnabled: !document.getElementById('chat-stop').disabled };
  })).jsonValue();
  check(partial.text !== 'Hello from fake' && partial.state === 'streaming' && partial.stopEnabled,
    `text appeared before the stream ended: ${JSON.stringify(partial)}`);
  await shot('chat-streaming');
  await page.waitForFunction(() => [...document.querySelectorAll('.msg-assistant')].pop().dataset.state === 'done', null, { timeout: 20_000 });
  check((await answer.locator('.msg-text').textContent()) === 'Hello from fake', 'the whole answer is shown');
  check(/11 in · 7 out tokens/.test(await answer.locator('.msg-meta').textContent()), 'usage is shown under the answer');
  check(await stop.isDisabled() && await send.isEnabled(), 'Stop is disabled again when done');

  log('chat: Stop aborts a slow answer');
  await harness('stream 3000');
  await page.getByLabel('Message').fill('Now tell me a long story');
  await send.click();
  await page.waitForFunction(() => {
    const el = [...document.querySelectorAll('.msg-assistant .msg-text')].pop();
    return el && el.textContent === 'Hello';
  }, null, { timeout: 20_000 });
  await stop.click();
  const stopped = page.locator('.msg-assistant').last();
  await page.waitForFunction(() => [...document.querySelectorAll('.msg-assistant')].pop().dataset.state === 'stopped');
  check((await stopped.locator('.msg-meta').textContent()) === 'Stopped.', 'the stopped answer says so');
  check((await stopped.locator('.msg-text').textContent()) === 'Hello', 'the partial answer is kept');
  check(await stop.isDisabled() && await send.isEnabled(), 'the composer is usable again after Stop');

  log('chat: an upstream error is shown in words');
  await harness(`error 429 ${UPSTREAM_ERROR_MESSAGE}`);
  await page.getByLabel('Message').fill('One more?');
  await page.getByLabel('Message').press('Enter');
  await page.locator('.msg-error').getByText(UPSTREAM_ERROR_MESSAGE).waitFor();
  await page.mouse.move(0, 0);
  await shot('chat');

  // ---------------------------------------------------------------- models
  log('models: search, filter, sort, compare');
  await nav('Models');
  const rows = page.locator('#models-table tbody tr');
  await rows.first().waitFor();
  const total = await rows.count();
  check(total === 8, `the whole catalog is listed (${total})`);
  const rowIds = async () => rows.evaluateAll((rs) => rs.map((r) => r.dataset.model));

  await page.getByLabel('Search by name').fill('gpt');
  let ids = await rowIds();
  check(ids.length === 2 && ids.every((id) => id.startsWith('openai/gpt-4o')), `search by name: ${ids}`);
  await page.getByLabel('Search by name').fill('');

  await page.getByLabel('Provider').selectOption('anthropic');
  ids = await rowIds();
  check(ids.length === 2 && ids.every((id) => id.startsWith('anthropic/')), `filter by provider: ${ids}`);
  check((await page.getByRole('link', { name: /^Add .* key$/ }).count()) === 0, 'anthropic models are usable through the Vertex key');
  await page.getByLabel('Provider').selectOption('xai');
  ids = await rowIds();
  check(ids.length === 1 && ids[0].startsWith('xai/'), `filter by provider: ${ids}`);
  check((await page.getByRole('link', { name: 'Add xAI key' }).count()) === 1, 'models the user cannot use link to adding a key');
  await page.getByLabel('Provider').selectOption('');

  await page.getByLabel('Type').selectOption('embedding');
  ids = await rowIds();
  check(ids.length === 1 && ids[0] === 'openai/text-embedding-3-small', `filter by type: ${ids}`);
  await page.getByLabel('Type').selectOption('');

  await page.getByLabel('Input price').selectOption('0.5');
  ids = await rowIds();
  check(ids.length === 4 && !ids.includes('openai/gpt-4o'), `filter by price: ${ids}`);
  await page.getByLabel('Input price').selectOption('');

  await page.getByLabel('Sort by').selectOption('price-asc');
  ids = await rowIds();
  check(ids[0] === 'openai/text-embedding-3-small', `sort by price: ${ids}`);
  await page.getByLabel('Sort by').selectOption('context-desc');
  ids = await rowIds();
  check(ids[0] === 'google/gemini-2.5-flash', `sort by context window: ${ids}`);

  await page.getByLabel('Only models I can use').check();
  ids = await rowIds();
  check(ids.length === 6 && ids.every((id) => /^(openai|anthropic|google)\//.test(id)), `usable only: ${ids}`);
  check((await page.locator('#models-table .badge-ok').count()) === 6, 'usable models are marked');
  await page.getByLabel('Only models I can use').uncheck();

  await page.getByLabel('Compare GPT-4o', { exact: true }).check();
  await page.getByLabel('Compare Claude Sonnet 4.5').check();
  await page.getByLabel('Compare Gemini 2.5 Flash').check();
  check(await page.getByLabel('Compare Grok 3').isDisabled(), 'at most three models are compared');
  const cmp = page.locator('#compare-table');
  await cmp.waitFor();
  const cmpText = await cmp.textContent();
  check(/128,000/.test(cmpText) && /200,000/.test(cmpText) && /1,000,000/.test(cmpText) && /65,536/.test(cmpText) && /\$3\.00/.test(cmpText),
    `the compare view shows context, max output and price: ${cmpText}`);
  await page.mouse.move(0, 0);
  await shot('models');

  await page.getByRole('link', { name: 'Add xAI key' }).first().click();
  await page.getByRole('heading', { level: 1, name: 'Providers' }).waitFor();
  check(await page.locator('#provider-xai details').evaluate((d) => d.open), 'the link opens the form of that provider');
  await page.waitForFunction(() => document.activeElement && document.activeElement.id === 'f-xai-label');

  // ---------------------------------------------------------------- usage
  log('usage');
  await nav('Usage');
  const usageState = page.locator('#usage-unavailable, #usage-empty, #usage-chart');
  await usageState.first().waitFor();
  const usage = await apiGet('/api/usage?days=30');
  if (usage.status === 404) {
    check(/not recorded yet/i.test(await page.locator('#usage-unavailable').textContent()), 'a 404 says usage is not recorded yet');
  } else {
    check(usage.status === 200, `GET /api/usage answers 200 or 404, not ${usage.status}`);
    const rows = usage.body.data || [];
    if (rows.length) {
      await page.locator('#usage-chart').waitFor();
      const table = await page.locator('#usage-by-model').textContent();
      for (const r of rows) check(table.includes(r.model), `the table lists ${r.model}`);
      const bars = await page.locator('#usage-chart .bar').count();
      check(bars === 30, `30 days, one bar each (${bars})`);
      await page.getByLabel('Period').selectOption('7');
      await page.waitForFunction(() => document.querySelectorAll('#usage-chart .bar').length === 7);
      await page.getByLabel('Period').selectOption('30');
      await page.waitForFunction(() => document.querySelectorAll('#usage-chart .bar').length === 30);
    } else {
      await page.locator('#usage-empty').waitFor();
    }
  }
  await shot('usage-live');

  log('usage: chart and table with sample data (the browser answers /api/usage)');
  const sample = sampleUsage();
  await page.route(/\/api\/usage(\?|$)/, (route) => route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify(sample) }));
  await page.reload();
  await page.locator('#usage-chart').waitFor();
  const bars = await page.locator('#usage-chart .bar').count();
  check(bars === 14, `one bar per day (${bars})`);
  const modelRows = await page.locator('#usage-by-model tbody tr').count();
  check(modelRows === 3, `one table row per model (${modelRows})`);
  check(/\$/.test(await page.locator('#usage-by-model tfoot').textContent()), 'the table totals the cost');
  await page.mouse.move(0, 0);
  await shot('usage');
  await page.unroute(/\/api\/usage(\?|$)/);

  log('providers: health badges with sample data (the browser answers /api/providers/health)');
  await page.route('**/api/providers/health', (route) => route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify(sampleHealth()) }));
  await nav('Providers');
  const openaiBadge = page.locator('#provider-openai .health');
  await openaiBadge.waitFor();
  check((await openaiBadge.getAttribute('data-status')) === 'healthy', 'a healthy badge');
  check((await page.locator('#provider-anthropic .health').getAttribute('data-status')) === 'degraded', 'a degraded badge');
  await page.locator('#provider-anthropic .health').focus();
  await page.locator('#provider-anthropic .health .tip').waitFor({ state: 'visible' });
  check(/p95 2400 ms/.test(await page.locator('#provider-anthropic .health .tip').textContent()), 'the numbers show on focus');
  await shot('providers-health', { fullPage: false });
  await page.unroute('**/api/providers/health');

  // ---------------------------------------------------------------- narrow screen
  log('narrow screen');
  await page.setViewportSize({ width: 390, height: 844 });
  for (const [name, file] of [['Providers', 'providers-mobile'], ['Chat', 'chat-mobile'], ['Models', 'models-mobile']]) {
    await nav(name);
    if (name === 'Chat') {
      // A short exchange on the phone (the fake gateway answers at once).
      await page.getByLabel('Message').fill('Hi from a phone');
      await page.getByRole('button', { name: 'Send' }).click();
      await page.waitForFunction(() => {
        const last = [...document.querySelectorAll('.msg-assistant')].pop();
        return last && last.dataset.state === 'done';
      });
    }
    await page.waitForTimeout(100);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    check(overflow <= 1, `${name} fits a 390 px screen (overflow ${overflow}px)`);
    await shot(file, { fullPage: false });
  }
  await page.setViewportSize({ width: 1280, height: 860 });

  // ---------------------------------------------------------------- health badge change
  log('providers: the health badge follows upstream failures');
  await nav('Providers');
  const liveBadge = page.locator('#provider-openai .health');
  await liveBadge.waitFor();
  check((await liveBadge.getAttribute('data-status')) === 'healthy', `openai is healthy after good chats: ${await liveBadge.getAttribute('data-status')}`);
  for (let i = 0; i < 6; i++) {
    await harness('error 503 upstream overloaded');
    const r = await fetch(`${BASE_URL}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'openai/gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
    });
    check(r.status === 503, `the failing upstream answers 503 (${r.status})`);
  }
  await nav('Chat');
  await nav('Providers');
  await liveBadge.waitFor();
  const after = await liveBadge.getAttribute('data-status');
  check(after === 'down' || after === 'degraded', `the badge turned degraded or down: ${after}`);
  await liveBadge.focus();
  check(/last error: status_5xx/.test(await liveBadge.textContent()), 'the numbers behind the badge show the last error');
  await shot('providers-health-live');

  // ---------------------------------------------------------------- logout
  log('logout');
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor();
  check(await page.evaluate(() => sessionStorage.length === 0), 'logout clears the token');
  check(/logged out/.test(await page.locator('#login-notice').textContent()), 'logout says so');
  await page.goto(`${BASE_URL}/ui/#/chat`);
  await page.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor();

  check(problems.length === 0, `no script error or CSP violation:\n  ${problems.join('\n  ')}`);
  check(offsite.length === 0, `no request leaves the proxy's origin: ${offsite.join(', ')}`);
  log('all checks passed');
} catch (e) {
  failed = true;
  console.error(`ui-e2e: FAILED: ${e && e.stack ? e.stack : e}`);
  if (problems.length) console.error(`ui-e2e: page problems so far:\n  ${problems.join('\n  ')}`);
  try {
    const page = context.pages()[0];
    if (page) await page.screenshot({ path: path.join(SCREENSHOT_DIR, 'failure.png'), fullPage: true });
    console.error(`ui-e2e: screenshot of the failure: ${path.join(SCREENSHOT_DIR, 'failure.png')}`);
  } catch {
    /* best effort */
  }
} finally {
  await context.close().catch(() => {});
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);

/** 14 days of usage over 3 models, in the shape of GET /api/usage. */
function sampleUsage() {
  const models = [
    { model: 'openai/gpt-4o', pin: 0.0000025, pout: 0.00001 },
    { model: 'anthropic/claude-sonnet-4.5', pin: 0.000003, pout: 0.000015 },
    { model: 'openai/gpt-4o-mini', pin: 0.00000015, pout: 0.0000006 },
  ];
  const data = [];
  const start = Date.UTC(2026, 10, 12);
  for (let d = 0; d < 14; d += 1) {
    const day = new Date(start + d * 86_400_000).toISOString().slice(0, 10);
    models.forEach((m, i) => {
      if ((d + i) % 5 === 4) return; // some days without traffic for a model
      const wave = 1 + Math.sin((d + i * 2) / 2.2);
      const prompt = Math.round((12_000 + 9_000 * wave) / (i + 1));
      const completion = Math.round(prompt * (0.25 + 0.1 * i));
      data.push({
        day,
        model: m.model,
        prompt_tokens: prompt,
        completion_tokens: completion,
        cost: prompt * m.pin + completion * m.pout,
        requests: Math.round(prompt / 900),
      });
    });
  }
  return { object: 'list', data };
}

/** Provider health in the shape of GET /api/providers/health (issue 7). */
function sampleHealth() {
  return {
    data: [
      { provider: 'openai', status: 'healthy', requests: 412, success_ratio: 0.998, ttfb_p50_ms: 310, ttfb_p95_ms: 820, last_error_kind: null, last_error_at: null },
      { provider: 'anthropic', status: 'degraded', requests: 96, success_ratio: 0.91, ttfb_p50_ms: 900, ttfb_p95_ms: 2400, last_error_kind: 'upstream_5xx', last_error_at: '2026-11-25T10:42:00Z' },
      { provider: 'vertex', status: 'unknown', requests: 0, success_ratio: null, ttfb_p50_ms: null, ttfb_p95_ms: null, last_error_kind: null, last_error_at: null },
    ],
  };
}
