// `dsv4 serve` driven by the official `openai` npm client and by curl: models, chat
// (plain and streamed), a tool-call round trip, completions, logprobs, greedy outputs that do
// not depend on batching, and prefix reuse across the turns of a conversation.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import OpenAI from 'openai';

const url = process.env.DSV4_URL;
const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 });
const model = 'dsv4-synthetic';
const user = (content) => ({ role: 'user', content });
const TOOLS = [{ type: 'function', function: { name: 'get_weather', description: 'Weather of a city',
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
const DSML_CALL = '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="get_weather">\n' +
  '<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>';

const curl = (...args) => execFileSync('curl', ['-sS', ...args], { encoding: 'utf8' });

test('curl: health, models, chat, and a 400 for malformed JSON', () => {
  const h = JSON.parse(curl(`${url}/health`));
  assert.equal(h.status, 'ok');
  assert.equal(JSON.parse(curl(`${url}/v1/models`)).data[0].id, model);
  const r = JSON.parse(curl('-X', 'POST', `${url}/v1/chat/completions`, '-H', 'Content-Type: application/json',
    '-d', JSON.stringify({ model, messages: [user('Hi')], max_tokens: 4 })));
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.usage.completion_tokens <= 4, true);
  const bad = curl('-w', '\n%{http_code}', '-X', 'POST', `${url}/v1/chat/completions`, '-d', '{"messages": [');
  const [body, code] = bad.split('\n');
  assert.equal(code, '400');
  assert.match(JSON.parse(body).error.message, /not valid JSON/);
});

test('models.list', async () => {
  const list = await client.models.list();
  assert.deepEqual(list.data.map((m) => m.id), [model]);
});

test('chat: non-streaming', async () => {
  const r = await client.chat.completions.create({ model, messages: [user('Say hi')], max_tokens: 8, temperature: 0 });
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.ok(r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

test('chat: streaming deltas and a final usage chunk', async () => {
  const forced = 'Streaming works: 1, 2, 3.';
  const stream = await client.chat.completions.create({ model, messages: [user('Count')], stream: true,
    stream_options: { include_usage: true }, max_tokens: 40, dsv4_test_completion: forced });
  let text = '', chunks = 0, finish = null, usage = null;
  for await (const c of stream) {
    if (c.usage) usage = c.usage;
    if (!c.choices.length) continue;
    chunks++;
    text += c.choices[0].delta.content ?? '';
    finish = c.choices[0].finish_reason ?? finish;
  }
  assert.equal(text, forced);
  assert.ok(chunks > 3);
  assert.equal(finish, 'stop');
  assert.ok(usage.completion_tokens > 3);
});

test('chat: thinking mode separates reasoning_content', async () => {
  const r = await client.chat.completions.create({ model, messages: [user('2+2?')], max_tokens: 40,
    thinking: { type: 'enabled' }, dsv4_test_completion: 'Add them.</think>4' });
  assert.equal(r.choices[0].message.reasoning_content, 'Add them.');
  assert.equal(r.choices[0].message.content, '4');
  const s = await client.chat.completions.create({ model, messages: [user('2+2?')], max_tokens: 40, stream: true,
    chat_template_kwargs: { thinking: true }, dsv4_test_completion: 'Add them.</think>4' });
  let reasoning = '', content = '';
  for await (const c of s) {
    reasoning += c.choices[0]?.delta?.reasoning_content ?? '';
    content += c.choices[0]?.delta?.content ?? '';
  }
  assert.equal(reasoning, 'Add them.');
  assert.equal(content, '4');
});

test('chat: tool call round trip (non-streaming and streaming)', async () => {
  const messages = [user('What is the weather in Paris?')];
  const r = await client.chat.completions.create({ model, messages, tools: TOOLS, max_tokens: 80, dsv4_test_completion: DSML_CALL });
  const msg = r.choices[0].message;
  assert.equal(r.choices[0].finish_reason, 'tool_calls');
  assert.equal(msg.tool_calls.length, 1);
  assert.equal(msg.tool_calls[0].function.name, 'get_weather');
  assert.deepEqual(JSON.parse(msg.tool_calls[0].function.arguments), { city: 'Paris' });
  assert.ok(!(msg.content ?? '').includes('DSML'));

  // Streaming: the client's own accumulator assembles the call from the deltas.
  const runner = client.beta.chat.completions.stream({ model, messages, tools: TOOLS, max_tokens: 80, dsv4_test_completion: DSML_CALL });
  const final = await runner.finalChatCompletion();
  assert.equal(final.choices[0].finish_reason, 'tool_calls');
  assert.deepEqual(JSON.parse(final.choices[0].message.tool_calls[0].function.arguments), { city: 'Paris' });

  // The tool result goes back; the model answers.
  messages.push(msg, { role: 'tool', tool_call_id: msg.tool_calls[0].id, content: '{"temp": 21}' });
  const r2 = await client.chat.completions.create({ model, messages, tools: TOOLS, max_tokens: 40,
    dsv4_test_completion: 'It is 21 degrees in Paris.' });
  assert.equal(r2.choices[0].message.content, 'It is 21 degrees in Paris.');
  assert.equal(r2.choices[0].finish_reason, 'stop');
  // The second request starts with the first one's prompt and answer: they were not prefilled again.
  assert.ok(r2.usage.prompt_tokens_details.cached_tokens >= r.usage.prompt_tokens - 2);
});

test('chat: a multi-turn conversation prefills only the new message', async () => {
  const messages = [{ role: 'system', content: 'You are terse.' }, user('Name a colour.')];
  const r1 = await client.chat.completions.create({ model, messages, max_tokens: 20, dsv4_test_completion: 'Blue.' });
  messages.push({ role: 'assistant', content: r1.choices[0].message.content }, user('Another one?'));
  const r2 = await client.chat.completions.create({ model, messages, max_tokens: 20, dsv4_test_completion: 'Green.' });
  const cached = r2.usage.prompt_tokens_details.cached_tokens;
  // Turn 1's prompt and its answer are reused; only EOS + the new user turn + the assistant prefix run.
  assert.ok(cached >= r1.usage.prompt_tokens + r1.usage.completion_tokens - 2, `cached ${cached}`);
  assert.ok(r2.usage.prompt_tokens - cached <= 12, `prefilled ${r2.usage.prompt_tokens - cached}`);
  // Thinking mode drops turn 1's reasoning when rendering turn 2: the snapshot at the message
  // boundary before it still applies.
  const t = [user('Pick a number.')];
  const a1 = await client.chat.completions.create({ model, messages: t, max_tokens: 30, thinking: { type: 'enabled' },
    dsv4_test_completion: 'Seven is nice.</think>7' });
  t.push({ role: 'assistant', content: '7', reasoning_content: a1.choices[0].message.reasoning_content }, user('Double it.'));
  const a2 = await client.chat.completions.create({ model, messages: t, max_tokens: 30, thinking: { type: 'enabled' },
    dsv4_test_completion: '</think>14' });
  assert.ok(a2.usage.prompt_tokens_details.cached_tokens >= a1.usage.prompt_tokens - 2);
});

test('completions: text and token-id prompts, streaming, logprobs', async () => {
  const r = await client.completions.create({ model, prompt: 'The capital of France is', max_tokens: 5, temperature: 0, logprobs: 2 });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices[0].logprobs.tokens.length, r.usage.completion_tokens);
  assert.equal(Object.keys(r.choices[0].logprobs.top_logprobs[0]).length <= 2, true);
  const ids = await client.completions.create({ model, prompt: [0, 100, 200, 300], max_tokens: 3 });
  assert.equal(ids.usage.prompt_tokens, 4);
  const s = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 6, temperature: 0, stream: true });
  let text = '';
  for await (const c of s) text += c.choices[0]?.text ?? '';
  assert.equal(text, (await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 6, temperature: 0 })).choices[0].text);
});

test('chat logprobs', async () => {
  const r = await client.chat.completions.create({ model, messages: [user('x')], max_tokens: 4, logprobs: true, top_logprobs: 3 });
  const lp = r.choices[0].logprobs.content;
  assert.equal(lp.length, r.usage.completion_tokens);
  assert.equal(lp[0].top_logprobs.length, 3);
  assert.ok(lp[0].logprob <= 0);
});

test('greedy output is the same alone and batched with other requests', async () => {
  const ask = (p, n = 10) => client.completions.create({ model, prompt: p, max_tokens: n, temperature: 0 });
  const alone = (await ask('A quick brown fox')).choices[0].text;
  const together = await Promise.all([ask('A quick brown fox'), ask('Lorem ipsum dolor', 14), ask('1 2 3 4', 12), ask('Hello')]);
  assert.equal(together[0].choices[0].text, alone);
  const health = await (await fetch(`${url}/health`)).json();
  assert.ok(health.totals.decode_rows > health.totals.decode_steps, 'some decode steps were batched');
});

test('errors come back in OpenAI form', async () => {
  await assert.rejects(client.chat.completions.create({ model, messages: [{ role: 'robot', content: 'x' }] }),
    (e) => e.status === 400 && /unknown role 'robot'/.test(e.message));
  await assert.rejects(client.chat.completions.create({ model, messages: [user('x')], temperature: 7 }),
    (e) => e.status === 400 && e.error.param === 'temperature');
  await assert.rejects(client.chat.completions.create({ model, messages: [user('x '.repeat(5000))] }),
    (e) => e.status === 400 && /the prompt is \d+ tokens but the context holds 4096/.test(e.message));
  await assert.rejects(client.chat.completions.create({ model, messages: [{ role: 'user', content: [{ type: 'text' }] }] }),
    (e) => e.status === 400 && /messages\[0\]\.content\[0\]/.test(e.message));
  const r = await fetch(`${url}/v1/nothing`);
  assert.equal(r.status, 404);
  assert.match((await r.json()).error.message, /no route/);
});
