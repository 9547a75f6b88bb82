// `dsv4 serve` driven by the official `@anthropic-ai/sdk` client: Messages API, plain and
// streamed (with its event types), thinking blocks, and a tool_use / tool_result round trip.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';

const url = process.env.DSV4_URL;
const client = new Anthropic({ baseURL: url, apiKey: 'none', maxRetries: 0 });
const model = 'dsv4-synthetic';
const TOOLS = [{ name: 'get_weather', description: 'Weather of a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } }];
const DSML_CALL = '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="get_weather">\n' +
  '<｜DSML｜parameter name="city" string="true">Berlin</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>';

test('messages: non-streaming', async () => {
  const r = await client.messages.create({ model, max_tokens: 8, system: 'Be brief.', messages: [{ role: 'user', content: 'Hi' }] });
  assert.equal(r.type, 'message');
  assert.equal(r.role, 'assistant');
  assert.ok(['end_turn', 'max_tokens'].includes(r.stop_reason));
  assert.ok(r.usage.input_tokens + r.usage.cache_read_input_tokens > 0);
  assert.ok(r.usage.output_tokens > 0);
});

test('messages: streaming with thinking', async () => {
  const stream = client.messages.stream({ model, max_tokens: 60, thinking: { type: 'enabled', budget_tokens: 1024 },
    messages: [{ role: 'user', content: 'Capital of Italy?' }], dsv4_test_completion: 'Easy one.</think>Rome.' });
  const types = new Set();
  stream.on('streamEvent', (e) => types.add(e.type));
  const final = await stream.finalMessage();
  for (const t of ['message_start', 'content_block_start', 'content_block_delta', 'content_block_stop', 'message_delta', 'message_stop'])
    assert.ok(types.has(t), t);
  assert.equal(final.content[0].type, 'thinking');
  assert.equal(final.content[0].thinking, 'Easy one.');
  assert.equal(final.content[1].type, 'text');
  assert.equal(final.content[1].text, 'Rome.');
  assert.equal(final.stop_reason, 'end_turn');
});

test('messages: plain streaming of sampled text', async () => {
  const stream = await client.messages.create({ model, max_tokens: 6, stream: true, messages: [{ role: 'user', content: 'Go' }] });
  let n = 0, stop = null;
  for await (const e of stream) {
    if (e.type === 'content_block_delta') n++;
    if (e.type === 'message_delta') stop = e.delta.stop_reason;
  }
  assert.ok(n > 0);
  assert.ok(['end_turn', 'max_tokens'].includes(stop));
});

test('messages: tool_use round trip', async () => {
  const messages = [{ role: 'user', content: 'Weather in Berlin?' }];
  const r = await client.messages.create({ model, max_tokens: 80, tools: TOOLS, messages, dsv4_test_completion: DSML_CALL });
  assert.equal(r.stop_reason, 'tool_use');
  const use = r.content.find((b) => b.type === 'tool_use');
  assert.equal(use.name, 'get_weather');
  assert.deepEqual(use.input, { city: 'Berlin' });

  const s = client.messages.stream({ model, max_tokens: 80, tools: TOOLS, messages, dsv4_test_completion: DSML_CALL });
  const streamed = await s.finalMessage();
  assert.deepEqual(streamed.content.find((b) => b.type === 'tool_use').input, { city: 'Berlin' });
  assert.equal(streamed.stop_reason, 'tool_use');

  messages.push({ role: 'assistant', content: r.content },
    { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: 'Cloudy, 15°C' }] });
  const r2 = await client.messages.create({ model, max_tokens: 40, tools: TOOLS, messages, dsv4_test_completion: 'Cloudy and 15°C.' });
  assert.equal(r2.content[0].text, 'Cloudy and 15°C.');
  assert.equal(r2.stop_reason, 'end_turn');
  assert.ok(r2.usage.cache_read_input_tokens > 0);
});

// Anthropic's usage split: input_tokens + cache_creation_input_tokens + cache_read_input_tokens
// is the whole prompt (count_tokens); read = the part continued from the prefix cache. Turn 2
// of a conversation reports the same split in message_start as in the final usage.
test('usage: cache counts on a two-turn conversation, plain and streamed', async () => {
  const system = `Cache-count test ${Math.random()}: answer in one word.`;
  const messages = [{ role: 'user', content: 'Name a colour.' }];
  const whole = (u) => u.input_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens;
  const r1 = await client.messages.create({ model, max_tokens: 10, system, messages, dsv4_test_completion: 'Blue.' });
  const n1 = (await client.messages.countTokens({ model, system, messages })).input_tokens;
  assert.equal(whole(r1.usage), n1);
  assert.equal(r1.usage.cache_creation_input_tokens, 0);
  assert.ok(r1.usage.input_tokens > 10, JSON.stringify(r1.usage));  // the new system text was prefilled

  messages.push({ role: 'assistant', content: r1.content }, { role: 'user', content: 'Another one.' });
  const n2 = (await client.messages.countTokens({ model, system, messages })).input_tokens;
  const s = client.messages.stream({ model, max_tokens: 10, system, messages, dsv4_test_completion: 'Red.' });
  let start = null, delta = null;
  s.on('streamEvent', (e) => {
    if (e.type === 'message_start') start = { ...e.message.usage };  // the client updates this object later
    if (e.type === 'message_delta') delta = { ...e.usage };
  });
  await s.finalMessage();
  assert.ok(start.cache_read_input_tokens >= n1 - 1, `turn 2 continues from turn 1: ${JSON.stringify(start)}, turn 1 ${n1}`);
  assert.equal(whole(start), n2);
  assert.equal(start.output_tokens, 0);
  for (const k of ['input_tokens', 'cache_creation_input_tokens', 'cache_read_input_tokens']) assert.equal(delta[k], start[k], k);
  assert.ok(delta.output_tokens > 0);
});

// thinking.display "omitted" (Claude Code sends it): the model still thinks, but thinking blocks
// come back with empty text and a signature, streamed without thinking deltas. The signature
// carries the text: sent back in a tool loop (where V4 keeps earlier reasoning), it renders the
// same prompt as the full thinking block would.
test('thinking display omitted: empty thinking text plus signature, plain and streamed', async () => {
  const thinking = { type: 'adaptive', display: 'omitted' };
  const messages = [{ role: 'user', content: 'Weather in Berlin?' }];
  const forced = 'Secret plan: ask the tool.</think>' + DSML_CALL;
  const r = await client.messages.create({ model, max_tokens: 100, thinking, tools: TOOLS, messages, dsv4_test_completion: forced });
  assert.deepEqual(r.content.map((b) => b.type), ['thinking', 'tool_use']);
  assert.equal(r.content[0].thinking, '');
  assert.ok(r.content[0].signature.length > 0);
  assert.equal(r.stop_reason, 'tool_use');

  const s = client.messages.stream({ model, max_tokens: 100, thinking, tools: TOOLS, messages, dsv4_test_completion: forced });
  const deltas = [];
  s.on('streamEvent', (e) => { if (e.type === 'content_block_delta') deltas.push(e.delta.type); });
  const streamed = await s.finalMessage();
  assert.ok(!deltas.includes('thinking_delta'), deltas.join());
  assert.ok(deltas.includes('signature_delta'));
  assert.equal(streamed.content[0].thinking, '');
  assert.equal(streamed.content[0].signature, r.content[0].signature);

  // Sent back, the omitted block counts as its full text would.
  const use = r.content[1];
  const next = (block) => [...messages, { role: 'assistant', content: [block, use] },
    { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: 'Sunny' }] }];
  const count = async (block) => (await client.messages.countTokens({ model, thinking: { type: 'enabled', budget_tokens: 1024 },
    tools: TOOLS, messages: next(block) })).input_tokens;
  const full = await count({ type: 'thinking', thinking: 'Secret plan: ask the tool.', signature: '' });
  assert.equal(await count(r.content[0]), full);
  assert.ok(full > await count({ type: 'thinking', thinking: '', signature: 'foreign-signature' }));

  // Any other display shows the text.
  const shown = await client.messages.create({ model, max_tokens: 100, thinking: { type: 'enabled', budget_tokens: 1024, display: 'summarized' },
    messages, dsv4_test_completion: 'Visible.</think>Hi.' });
  assert.equal(shown.content[0].thinking, 'Visible.');
});

test('messages: errors in Anthropic form', async () => {
  await assert.rejects(client.messages.create({ model, messages: [{ role: 'user', content: 'x' }] }),
    (e) => e.status === 400 && /max_tokens/.test(e.message) && e.error.type === 'error');
  await assert.rejects(client.messages.create({ model, max_tokens: 5, messages: [{ role: 'robot', content: 'x' }] }),
    (e) => e.status === 400 && /unknown role 'robot'/.test(e.message));
  await assert.rejects(client.messages.create({ model, max_tokens: 5, messages: [{ role: 'system', content: 'x' }] }),
    (e) => e.status === 400 && /not only system messages/.test(e.message));
  await assert.rejects(client.messages.create({ model, max_tokens: 5, messages: [{ role: 'assistant', content: [{ type: 'tool_use', id: 't' }] }] }),
    (e) => e.status === 400 && /messages\[0\]\.content\[0\]\.name must be a string/.test(e.message));
  await assert.rejects(client.messages.create({ model, max_tokens: 5, messages: [{ role: 'user', content: [{ type: 'image_url' }] }] }),
    (e) => e.status === 400 && /block type 'image_url' is not supported/.test(e.message));
  await assert.rejects(client.messages.create({ model, max_tokens: 5, messages: [{ role: 'user', content: 'x '.repeat(5000) }] }),
    (e) => e.status === 400 && /the prompt is \d+ tokens but the context holds 4096/.test(e.message));
});
