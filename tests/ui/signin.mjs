// Browser test of web sign-in, run by `cargo test --test ui` (tests/ui.rs), which starts the
// fake gateway, a real OpenID provider (oidc-provider, tests/oidc/provider.mjs) and the proxy
// configured for it, and passes:
//   BASE_URL         the proxy, e.g. http://127.0.0.1:PORT
//   EMAIL            who signs in (a new team member: no account yet)
//   ADMIN_EMAIL      an address listed in auth.oidc.admin_emails
//   OPENAI_KEY       the OpenAI key the new member adds
//   SDK_DIR          tests/sdk (its node_modules has the official `openai` package)
//   SCREENSHOT_DIR, CHROMIUM
//
// The story: a new team member opens /ui/, signs in with the identity provider, adds their
// OpenAI key, creates a token limited to the models they need, copies the OpenAI SDK snippet
// from "Connect your tools" and runs it — it answers. The curl snippet works too; a model
// outside the token's patterns is refused. Then the keyboard, a 390 px screen, logout, and an
// admin's Admin page (disabling the member ends their session).
//
// Exits 0 when every check passed; prints `ui-signin: all checks passed` last.

import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const env = process.env;
const BASE_URL = need('BASE_URL');
const EMAIL = need('EMAIL');
const ADMIN_EMAIL = need('ADMIN_EMAIL');
const OPENAI_KEY = need('OPENAI_KEY');
const SDK_DIR = need('SDK_DIR');
const SCREENSHOT_DIR = env.SCREENSHOT_DIR || 'ui-screenshots';
const CHROMIUM = env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT = 15_000;

function need(name) {
  const v = env[name];
  if (!v) throw new Error(`environment variable ${name} is required (run through cargo test --test ui)`);
  return v;
}
const log = (msg) => console.log(`ui-signin: ${msg}`);
function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
}

fs.mkdirSync(SCREENSHOT_DIR, { recursive: true });
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'byok-ui-signin-'));
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const problems = [];
let failed = false;

async function newPage(context) {
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    const text = m.text();
    if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of (401|403|404)/.test(text)) {
      problems.push(`console error: ${text}`);
    }
    if (/Content Security Policy/i.test(text)) problems.push(`CSP violation: ${text}`);
  });
  return page;
}

async function signIn(page, email) {
  await page.goto(`${BASE_URL}/ui/`);
  await page.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor();
  const sso = page.getByRole('link', { name: 'Sign in with Test issuer' });
  await sso.waitFor();
  await sso.click();
  // The identity provider's own page.
  await page.getByLabel('Email').fill(email);
  await page.getByRole('button', { name: 'Continue' }).click();
  await page.getByRole('heading', { level: 1, name: 'Providers' }).waitFor();
  check((await page.locator('#whoami').textContent()) === email, 'the signed-in user is shown');
}

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, colorScheme: 'light', reducedMotion: 'reduce', permissions: ['clipboard-read', 'clipboard-write'] });
  const page = await newPage(context);
  const shot = async (name, opts = {}) => {
    await page.mouse.move(0, 0);
    await page.evaluate(() => {
      document.getElementById('toast')?.classList.remove('show');
      window.scrollTo(0, 0);
    });
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, `${name}.png`), fullPage: true, ...opts });
    log(`screenshot ${name}.png`);
  };

  // ---------------------------------------------------------------- a failed sign-in says why
  log('a failed sign-in comes back with a reason');
  await page.goto(`${BASE_URL}/ui/?login_error=domain_not_allowed`);
  await page.locator('#sign-in-error').waitFor();
  check(/email domain is not allowed/.test(await page.locator('#sign-in-error').textContent()), 'login_error is explained');
  check(!page.url().includes('login_error'), 'the reason is taken out of the address bar');
  check(await page.getByLabel('App token').isHidden(), 'the token form is folded away when sign-in is configured');
  await shot('signin-login');

  // ---------------------------------------------------------------- sign in
  log('sign in with the identity provider');
  await signIn(page, EMAIL);
  const cookies = await context.cookies(BASE_URL);
  const sessionCookie = cookies.find((c) => c.name === 'byok_session');
  check(sessionCookie && sessionCookie.httpOnly && sessionCookie.sameSite === 'Lax' && sessionCookie.path === '/', `the session cookie is HttpOnly, Lax, Path=/: ${JSON.stringify(sessionCookie)}`);
  check(await page.evaluate(() => document.cookie.indexOf('byok_session') === -1), 'scripts cannot read the session cookie');
  check(await page.evaluate(() => sessionStorage.getItem('byok-proxy.token') === null), 'no app token in the tab');
  check(await page.locator('[data-nav="admin"]').isHidden(), 'no Admin link for a non-admin');

  log('add an OpenAI key (Providers)');
  const openai = page.locator('#provider-openai');
  await openai.locator('summary').click();
  await openai.getByLabel('Label').fill('mine');
  await openai.getByLabel('API key', { exact: true }).fill(OPENAI_KEY);
  await openai.getByRole('button', { name: 'Save key' }).click();
  await openai.locator('li.key', { hasText: 'mine' }).waitFor();

  // ---------------------------------------------------------------- tokens
  log('create a token limited to OpenAI models');
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Tokens' }).click();
  await page.getByRole('heading', { level: 1, name: 'Tokens' }).waitFor();
  await page.locator('#connect').waitFor();
  check((await page.locator('#snippet-openai-python').textContent()).includes('bkp_YOUR_TOKEN'), 'the snippets have a placeholder before a token exists');
  await page.getByRole('button', { name: 'Create token' }).click();
  await page.locator('#token-error').waitFor();
  check(/name/.test(await page.locator('#token-error').textContent()), 'a token needs a name');
  await page.getByLabel('Name').fill('laptop');
  await page.getByLabel('Models').fill('openai/*');
  await page.getByLabel('Embeddings').uncheck();
  await page.getByRole('button', { name: 'Create token' }).click();
  const tokenCode = page.locator('#new-token');
  await tokenCode.waitFor();
  const token = (await tokenCode.textContent()).trim();
  check(/^bkp_[A-Za-z0-9_-]{43}$/.test(token), `the token is shown once: ${token.slice(0, 8)}…`);
  await page.locator('#copy-token').click();
  check((await page.evaluate(() => navigator.clipboard.readText())) === token, 'Copy puts the token on the clipboard');
  const row = page.locator('#tokens-table tbody tr', { hasText: 'laptop' });
  await row.waitFor();
  check(/models: openai\/\*/.test(await row.textContent()), 'the list shows the scopes');
  check(!(await page.locator('#tokens-table').textContent()).includes(token), 'the list never shows the token');

  log('Connect your tools: the snippets carry the proxy address and the token');
  const nodeSnippet = (await page.locator('#snippet-openai-node').textContent());
  check(nodeSnippet.includes(`${BASE_URL}/v1`) && nodeSnippet.includes(token), 'the Node snippet is filled in');
  for (const id of ['openai-python', 'claude-code', 'codex', 'continue', 'curl', 'curl-anthropic']) {
    check((await page.locator(`#snippet-${id}`).textContent()).includes(token), `${id} is filled in`);
  }
  await page.locator('details[data-snippet="openai-node"] summary').click();
  await page.locator('#copy-openai-node').click();
  const pasted = await page.evaluate(() => navigator.clipboard.readText());
  check(pasted === nodeSnippet, 'Copy copies the whole snippet');
  await shot('tokens');

  log('the pasted OpenAI SDK snippet runs');
  const file = path.join(SDK_DIR, `.signin-snippet-${process.pid}.mjs`);
  fs.writeFileSync(file, pasted);
  let out;
  try {
    out = execFileSync(process.execPath, [file], { cwd: SDK_DIR, encoding: 'utf8', timeout: 30_000 });
  } finally {
    fs.rmSync(file, { force: true });
  }
  check(out.trim() === 'Hello from fake', `the SDK snippet prints the answer: ${out}`);

  log('the curl snippet runs; a model outside the token is refused');
  const curl = await page.locator('#snippet-curl').textContent();
  const curlOut = execFileSync('sh', ['-c', curl], { encoding: 'utf8', timeout: 30_000 });
  check(JSON.parse(curlOut).choices[0].message.content === 'Hello from fake', `curl answers: ${curlOut}`);
  const refused = await fetch(`${BASE_URL}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'anthropic/claude-sonnet-4.5', messages: [] }),
  });
  check(refused.status === 403 && (await refused.json()).error.code === 'model_not_allowed', 'another provider\'s model is refused');
  const embeddings = await fetch(`${BASE_URL}/v1/embeddings`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'openai/text-embedding-3-small', input: 'x' }),
  });
  check(embeddings.status === 403 && (await embeddings.json()).error.code === 'route_not_allowed', 'an unticked route is refused');

  log('reload: the token is not shown again; its last use is listed');
  await page.reload();
  await page.getByRole('heading', { level: 1, name: 'Tokens' }).waitFor();
  await row.waitFor();
  check((await page.locator('#new-token').count()) === 0, 'the token is shown only once');
  await page.waitForFunction(async () => {
    const r = await fetch('/api/tokens', { credentials: 'same-origin' });
    const body = await r.json();
    return body.data.some((t) => t.name === 'laptop' && t.last_used_at);
  });

  log('chat works under the session (the page mints its own /v1 token)');
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Chat' }).click();
  await page.getByLabel('Model').waitFor();
  await page.getByLabel('Message').fill('Say hello');
  await page.getByLabel('Message').press('Enter');
  await page.waitForFunction(() => {
    const last = [...document.querySelectorAll('.msg-assistant')].pop();
    return last && last.dataset.state === 'done';
  }, null, { timeout: 20_000 });

  log('keyboard: revoke a token without the mouse');
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Tokens' }).click();
  await row.waitFor();
  await row.getByRole('button', { name: 'Revoke laptop' }).focus();
  await page.keyboard.press('Enter');
  const dialog = page.locator('#confirm-dialog');
  await dialog.waitFor({ state: 'visible' });
  await page.keyboard.press('Tab');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => [...document.querySelectorAll('#tokens-table tbody tr')].some((r) => r.textContent.includes('laptop') && r.textContent.includes('Revoked')));
  const after = await fetch(`${BASE_URL}/v1/models`, { headers: { authorization: `Bearer ${token}` } });
  check(after.status === 401, 'a revoked token is refused at once');

  log('390 px');
  await page.setViewportSize({ width: 390, height: 844 });
  await page.reload();
  await page.getByRole('heading', { level: 1, name: 'Tokens' }).waitFor();
  await page.locator('#tokens-table').waitFor();
  await page.waitForTimeout(100);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  const wide = await page.evaluate(() => [...document.querySelectorAll('body *')]
    .filter((e) => e.getBoundingClientRect().width > document.documentElement.clientWidth + 1)
    .slice(0, 5).map((e) => `${e.tagName}.${e.className}#${e.id} (${Math.round(e.getBoundingClientRect().right)}px)`));
  check(overflow <= 1, `Tokens fits a 390 px screen (overflow ${overflow}px: ${wide.join(', ')})`);
  await shot('tokens-mobile', { fullPage: false });
  await page.setViewportSize({ width: 1280, height: 860 });

  // ---------------------------------------------------------------- admin
  log('an admin signs in elsewhere and disables the member');
  const adminContext = await browser.newContext({ viewport: { width: 1280, height: 860 }, colorScheme: 'light', reducedMotion: 'reduce' });
  const adminPage = await newPage(adminContext);
  await signIn(adminPage, ADMIN_EMAIL);
  const adminLink = adminPage.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Admin' });
  await adminLink.click();
  await adminPage.getByRole('heading', { level: 1, name: 'Admin' }).waitFor();
  const member = adminPage.locator(`li.admin-user[data-user="${EMAIL}"]`);
  await member.waitFor();
  await member.locator('summary', { hasText: 'Tokens' }).click();
  await member.locator('.admin-tokens li', { hasText: 'laptop' }).waitFor();
  await member.getByLabel('Requests/min').fill('120');
  await member.getByRole('button', { name: 'Save' }).click();
  await adminPage.locator('#toast', { hasText: '120 requests per minute' }).waitFor();
  await adminPage.mouse.move(0, 0);
  await adminPage.evaluate(() => document.getElementById('toast')?.classList.remove('show'));
  await adminPage.screenshot({ path: path.join(SCREENSHOT_DIR, 'admin.png'), fullPage: true });
  await adminPage.setViewportSize({ width: 390, height: 844 });
  await adminPage.waitForTimeout(100);
  const adminOverflow = await adminPage.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  check(adminOverflow <= 1, `Admin fits a 390 px screen (overflow ${adminOverflow}px)`);
  await adminPage.screenshot({ path: path.join(SCREENSHOT_DIR, 'admin-mobile.png') });
  await adminPage.setViewportSize({ width: 1280, height: 860 });
  // Disable by keyboard: focus the button, Enter, then confirm in the dialog.
  await member.getByRole('button', { name: 'Disable' }).focus();
  await adminPage.keyboard.press('Enter');
  await adminPage.locator('#confirm-dialog').waitFor({ state: 'visible' });
  await adminPage.keyboard.press('Escape');
  await adminPage.locator('#confirm-dialog').waitFor({ state: 'hidden' });
  check((await member.locator('.pill').textContent()) === 'Active', 'Escape cancels the disable');
  await member.getByRole('button', { name: 'Disable' }).click();
  await adminPage.locator('#confirm-dialog').getByRole('button', { name: 'Disable user' }).click();
  await member.locator('.pill', { hasText: 'Disabled' }).waitFor();

  log('the member\'s session ends on their next request');
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Providers' }).click();
  await page.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor();
  check(/session has ended/.test(await page.locator('#login-notice').textContent()), 'the member is told the session ended');
  await adminPage.close();
  await adminContext.close();

  log('logout');
  await page.close();
  const again = await newPage(context);
  await context.clearCookies();
  await signIn(again, ADMIN_EMAIL);
  await again.getByRole('button', { name: 'Log out' }).click();
  await again.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor();
  check(/signed out/.test(await again.locator('#login-notice').textContent()), 'logout says so');
  check(!(await context.cookies(BASE_URL)).some((c) => c.name === 'byok_session' && c.value), 'logout clears the cookie');
  await again.goto(`${BASE_URL}/ui/#/tokens`);
  await again.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor();

  check(problems.length === 0, `no script error or CSP violation:\n  ${problems.join('\n  ')}`);
  log('all checks passed');
} catch (e) {
  failed = true;
  console.error(`ui-signin: FAILED: ${e && e.stack ? e.stack : e}`);
  if (problems.length) console.error(`ui-signin: page problems so far:\n  ${problems.join('\n  ')}`);
  try {
    for (const ctx of browser.contexts()) {
      for (const p of ctx.pages()) await p.screenshot({ path: path.join(SCREENSHOT_DIR, `signin-failure-${ctx.pages().indexOf(p)}.png`), fullPage: true });
    }
  } catch {
    /* best effort */
  }
} finally {
  await browser.close().catch(() => {});
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
