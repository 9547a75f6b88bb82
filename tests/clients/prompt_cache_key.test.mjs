// prompt_cache_key, driven by the official `openai` client: a conversation sent under a key
// continues from its cached prefix even after other traffic has filled the (small) prefix cache
// several times over; the same conversation without a key has lost its prefix by then. Both
// APIs that accept the field (Responses and chat completions) are checked, plus its validation.
// Runs its own server: --cache-mb 3 holds about five snapshots of the synthetic model.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';
import { startServer } from './server.mjs';

let server, client;
const model = 'dsv4-synthetic';
const SYSTEM = 'You are a careful assistant. '.repeat(20);

before(async () => {
  server = await startServer({ bin: process.env.DSV4_BIN, cache: process.env.DSV4_CACHE,
    extra: ['--test-hooks', '--cache-mb', '3', '--parallel', '1'] });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'none', maxRetries: 0 });
});
after(async () => assert.equal(await server.stop(), 0));

// Traffic from other conversations (no key): each request stores about three snapshots.
async function otherTraffic() {
  for (let i = 0; i < 6; ++i)
    await client.chat.completions.create({ model, max_tokens: 2, dsv4_test_completion: 'ok',
      messages: [{ role: 'user', content: `Other conversation number ${i}: ${'filler '.repeat(30)}` }] });
}

// Turn 1, other traffic, turn 2 (the whole conversation again, plus a new user message);
// returns [turn 1's input tokens, turn 2's cached tokens].
async function responsesConversation(key) {
  const input = [{ role: 'user', content: `Tell me about cache keys (${key || 'no key'}).` }];
  const r1 = await client.responses.create({ model, instructions: SYSTEM, input, max_output_tokens: 20,
    dsv4_test_completion: 'They name a conversation.', ...(key ? { prompt_cache_key: key } : {}) });
  assert.equal(r1.output_text, 'They name a conversation.');
  await otherTraffic();
  const r2 = await client.responses.create({ model, instructions: SYSTEM, max_output_tokens: 20, store: false,
    input: [...input, { role: 'assistant', content: r1.output_text }, { role: 'user', content: 'And then?' }],
    dsv4_test_completion: 'Then they are reused.', ...(key ? { prompt_cache_key: key } : {}) });
  return [r1.usage.input_tokens, r2.usage.input_tokens_details.cached_tokens];
}

test('responses: a keyed conversation keeps its prefix through other traffic', async () => {
  const [first, cached] = await responsesConversation('agent-a');
  // At least turn 1's prompt up to its <｜Assistant｜> marker came from the cache.
  assert.ok(cached >= first - 1, `cached ${cached} of turn 1's ${first}`);
  const [firstU, cachedU] = await responsesConversation('');
  assert.ok(cachedU < firstU - 1, `without a key the prefix was evicted: cached ${cachedU} of ${firstU}`);
});

test('chat completions: prompt_cache_key keeps the prefix too', async () => {
  const messages = [{ role: 'system', content: SYSTEM }, { role: 'user', content: 'What is a prefix cache?' }];
  const c1 = await client.chat.completions.create({ model, messages, max_tokens: 20, prompt_cache_key: 'agent-c',
    dsv4_test_completion: 'Saved states.' });
  assert.equal(c1.choices[0].message.content, 'Saved states.');
  await otherTraffic();
  const c2 = await client.chat.completions.create({ model, max_tokens: 20, prompt_cache_key: 'agent-c',
    messages: [...messages, { role: 'assistant', content: 'Saved states.' }, { role: 'user', content: 'More?' }],
    dsv4_test_completion: 'No.' });
  assert.ok(c2.usage.prompt_tokens_details.cached_tokens >= c1.usage.prompt_tokens - 1,
    JSON.stringify([c1.usage, c2.usage]));
});

test('prompt_cache_key must be a string of at most 1024 bytes', async () => {
  for (const [key, re] of [[42, /'prompt_cache_key' must be a string/], ['k'.repeat(1025), /longer than 1024 bytes/]]) {
    await assert.rejects(client.responses.create({ model, input: 'x', prompt_cache_key: key }),
      (e) => e.status === 400 && re.test(e.message) && e.param === 'prompt_cache_key');
    await assert.rejects(client.chat.completions.create({ model, messages: [{ role: 'user', content: 'x' }], prompt_cache_key: key }),
      (e) => e.status === 400 && re.test(e.message) && e.param === 'prompt_cache_key');
  }
});
