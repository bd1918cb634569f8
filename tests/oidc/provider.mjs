// A real OpenID provider for the sign-in tests: the certified `oidc-provider` package,
// listening on 127.0.0.1 (a free port), with one confidential test client and an
// interaction that asks only for an email address and then consents on its own.
//
// Run by the tests (tests/it/oidc.rs, tests/ui.rs) with:
//   CLIENT_ID, CLIENT_SECRET   the test client
//   REDIRECT_URIS              space-separated callback URLs of the proxies under test
//   UNVERIFIED                 optional, space-separated emails whose email_verified is false
// Prints one line `{"issuer":"http://127.0.0.1:PORT"}` on stdout when ready; stops when its
// stdin closes (the test process went away).
//
// Accounts: whoever signs in is an account; its `sub` is derived from the lower-cased email.

import http from 'node:http';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

const env = process.env;
const CLIENT_ID = need('CLIENT_ID');
const CLIENT_SECRET = need('CLIENT_SECRET');
const REDIRECT_URIS = need('REDIRECT_URIS').split(/\s+/).filter(Boolean);
const UNVERIFIED = new Set((env.UNVERIFIED || '').split(/\s+/).filter(Boolean).map((e) => e.toLowerCase()));

function need(name) {
  if (!env[name]) throw new Error(`environment variable ${name} is required`);
  return env[name];
}

function subjectOf(email) {
  return `sub-${crypto.createHash('sha256').update(email.toLowerCase()).digest('hex').slice(0, 24)}`;
}

const accounts = new Map(); // sub -> email

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    redirect_uris: REDIRECT_URIS,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
  },
  scopes: ['openid', 'email', 'profile'],
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  features: { devInteractions: { enabled: false } },
  pkce: { required: () => true },
  conformIdTokenClaims: false,
  async findAccount(ctx, sub) {
    const email = accounts.get(sub);
    if (!email) return undefined;
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          email,
          email_verified: !UNVERIFIED.has(email.toLowerCase()),
          name: email.split('@')[0],
          preferred_username: email.split('@')[0],
        };
      },
    };
  },
  // Auto-consent: the test client is first-party.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid email profile');
    await grant.save();
    return grant;
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
});

if (env.OIDC_DEBUG) {
  server.on('clientError', (err, socket) => {
    console.error(`oidc-provider clientError: ${err.code} ${err.message} ${err.rawPacket ? JSON.stringify(err.rawPacket.toString()) : ''}`);
    socket.destroy();
  });
  for (const ev of ['grant.error', 'server_error', 'authorization.error', 'grant.success']) {
    provider.on(ev, (ctx, err) => console.error(`oidc-provider ${ev}: ${err ? `${err.message} ${err.error_description || ''}` : ''}`));
  }
}

function page(res, uid, error) {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Test issuer: sign in</title></head>
<body><h1>Test issuer</h1>${error ? `<p role="alert">${error}</p>` : ''}
<form method="post" action="/interaction/${uid}/login">
<label for="email">Email</label> <input id="email" name="email" type="email" autocomplete="off" required>
<button type="submit">Continue</button></form></body></html>`);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

server.on('request', async (req, res) => {
  const m = /^\/interaction\/([^/?]+)(\/login)?/.exec(req.url);
  if (!m) return provider.callback()(req, res);
  try {
    const details = await provider.interactionDetails(req, res);
    if (!m[2]) return page(res, details.uid);
    const email = ((await readForm(req)).get('email') || '').trim();
    if (!email.includes('@')) return page(res, details.uid, 'Enter an email address.');
    const sub = subjectOf(email);
    accounts.set(sub, email);
    await provider.interactionFinished(req, res, { login: { accountId: sub } }, { mergeWithLastSubmission: false });
  } catch (e) {
    res.writeHead(500, { 'content-type': 'text/plain' });
    res.end(String(e && e.message ? e.message : e));
  }
});

// The test may stop reading: never die of a closed pipe.
process.stdout.on('error', () => {});
console.log(JSON.stringify({ issuer }));
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
