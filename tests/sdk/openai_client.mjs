// The official `openai` Node SDK against byok-proxy: a streamed chat completion.
//
// Run by `cargo test --test sdk` (tests/sdk.rs):
//
//     BYOK_BASE_URL=http://127.0.0.1:PORT/v1 BYOK_TOKEN=bkp_... node openai_client.mjs
//
// Any mismatch throws (exit code 1). The last line printed on success is
// `SDK-OK chat_stream`; the Rust side requires it.

import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { VERSION } from 'openai/version';

const MODEL = 'openai/gpt-4o';
const REPLY = 'Hello from fake';

console.log('openai node SDK', VERSION);

const client = new OpenAI({
  baseURL: process.env.BYOK_BASE_URL,
  apiKey: process.env.BYOK_TOKEN,
  timeout: 15_000,
  maxRetries: 0,
});

const stream = await client.chat.completions.create({
  model: MODEL,
  messages: [{ role: 'user', content: 'Say hello' }],
  stream: true,
  stream_options: { include_usage: true },
});

const deltas = [];
const finishReasons = [];
let usage = null;
let chunks = 0;
for await (const chunk of stream) {
  chunks += 1;
  assert.equal(chunk.object, 'chat.completion.chunk');
  assert.equal(chunk.model, MODEL);
  for (const choice of chunk.choices) {
    if (choice.delta?.content) deltas.push(choice.delta.content);
    if (choice.finish_reason) finishReasons.push(choice.finish_reason);
  }
  if (chunk.usage) usage = chunk.usage;
}
const text = deltas.join('');
console.log('chunks:', chunks, 'deltas:', JSON.stringify(deltas), 'text:', JSON.stringify(text));
assert.deepEqual(deltas, ['Hello', ' from', ' fake']);
assert.equal(text, REPLY);
assert.deepEqual(finishReasons, ['stop']);
assert.ok(usage, 'no usage chunk although include_usage was requested');
assert.equal(usage.total_tokens, 18);
console.log('SDK-OK chat_stream');
