// `dsv4 serve` driven by the official `@anthropic-ai/sdk` client: Messages API, plain and
// streamed (with its event types), thinking blocks, and a tool_use / tool_result round trip.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';

const url = process.env.DSV4_URL;
const client = new Anthropic({ baseURL: url, apiKey: 'none', maxRetries: 0 });
const model = 'dsv4-demo';
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

test('messages: errors in Anthropic form', async () => {
  await assert.rejects(client.messages.create({ model, messages: [{ role: 'user', content: 'x' }] }),
    (e) => e.status === 400 && /max_tokens/.test(e.message) && e.error.type === 'error');
  await assert.rejects(client.messages.create({ model, max_tokens: 5, messages: [{ role: 'robot', content: 'x' }] }),
    (e) => e.status === 400 && /unknown role 'robot'/.test(e.message));
  await assert.rejects(client.messages.create({ model, max_tokens: 5, messages: [{ role: 'system', content: 'x' }] }),
    (e) => e.status === 400 && /not only system messages/.test(e.message));
});
