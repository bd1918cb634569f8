// "Connect your tools": ready-to-paste setup for the clients people point at byok-proxy,
// filled in with the proxy's public_base_url and a token. Pure functions (no DOM), so the
// test suite imports this very module and runs or parses each snippet against a real proxy
// (tests/it/connect.rs).

/** Shell-safe single quoting. */
function sq(text) {
  return `'${String(text).replace(/'/g, `'\\''`)}'`;
}

/**
 * Every snippet for `baseUrl` (the proxy's public_base_url, no trailing slash), `token`
 * (an app token, or a placeholder) and an OpenAI-style `model` (`provider/model`) and a
 * Claude `claudeModel` for the Anthropic route.
 * Each: { id, title, lang, text, help }.
 */
export function snippets({ baseUrl, token, model = 'openai/gpt-4o-mini', claudeModel = 'anthropic/claude-sonnet-4.5' }) {
  const base = String(baseUrl).replace(/\/+$/, '');
  const v1 = `${base}/v1`;
  return [
    {
      id: 'openai-python',
      title: 'OpenAI SDK (Python)',
      lang: 'python',
      help: 'pip install openai — any OpenAI-compatible Python code works the same way.',
      text: `from openai import OpenAI

client = OpenAI(
    base_url="${v1}",
    api_key="${token}",
)
reply = client.chat.completions.create(
    model="${model}",
    messages=[{"role": "user", "content": "Say hello"}],
)
print(reply.choices[0].message.content)
`,
    },
    {
      id: 'openai-node',
      title: 'OpenAI SDK (Node.js)',
      lang: 'javascript',
      help: 'npm install openai — save as hello.mjs and run node hello.mjs.',
      text: `import OpenAI from "openai";

const client = new OpenAI({
  baseURL: "${v1}",
  apiKey: "${token}",
});
const reply = await client.chat.completions.create({
  model: "${model}",
  messages: [{ role: "user", content: "Say hello" }],
});
console.log(reply.choices[0].message.content);
`,
    },
    {
      id: 'claude-code',
      title: 'Claude Code',
      lang: 'shell',
      help: 'Claude Code talks to /v1/messages; put these in your shell profile, then run claude.',
      text: `export ANTHROPIC_BASE_URL=${sq(base)}
export ANTHROPIC_AUTH_TOKEN=${sq(token)}
claude
`,
    },
    {
      id: 'codex',
      title: 'Codex CLI',
      lang: 'toml',
      help: 'Add to ~/.codex/config.toml, and export BYOK_PROXY_TOKEN (first comment line) in the shell that runs codex.',
      text: `# ~/.codex/config.toml — and in the shell that runs codex:
#   export BYOK_PROXY_TOKEN=${sq(token)}
model = "${model}"
model_provider = "byok"

[model_providers.byok]
name = "byok-proxy"
base_url = "${v1}"
env_key = "BYOK_PROXY_TOKEN"
wire_api = "responses"
`,
      env: { BYOK_PROXY_TOKEN: token },
    },
    {
      id: 'continue',
      title: 'Cursor / Continue',
      lang: 'yaml',
      help: 'Continue: add to config.yaml. Cursor: Settings → Models → OpenAI API Key = the token, Override OpenAI Base URL = the apiBase below.',
      text: `models:
  - name: byok-proxy ${model}
    provider: openai
    model: ${model}
    apiBase: ${v1}
    apiKey: ${token}
`,
    },
    {
      id: 'curl',
      title: 'curl',
      lang: 'shell',
      help: 'Any HTTP client: the OpenAI API with the token as a bearer.',
      text: `curl ${sq(`${v1}/chat/completions`)} \\
  -H ${sq(`Authorization: Bearer ${token}`)} \\
  -H 'Content-Type: application/json' \\
  -d ${sq(JSON.stringify({ model, messages: [{ role: 'user', content: 'Say hello' }] }))}
`,
    },
    {
      id: 'curl-anthropic',
      title: 'curl (Anthropic Messages, as Claude Code sends it)',
      lang: 'shell',
      help: 'The Anthropic API on /v1/messages: the token as x-api-key (or a bearer).',
      text: `curl ${sq(`${v1}/messages`)} \\
  -H ${sq(`x-api-key: ${token}`)} \\
  -H 'anthropic-version: 2023-06-01' \\
  -H 'Content-Type: application/json' \\
  -d ${sq(JSON.stringify({ model: claudeModel, max_tokens: 256, messages: [{ role: 'user', content: 'Say hello' }] }))}
`,
    },
  ];
}
