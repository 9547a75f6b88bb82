// `dsv4 serve`'s /v1/responses (the OpenAI Responses API, Codex CLI's protocol) driven by the
// official `openai` client: responses.create, responses.stream with its event sequence, and a
// function call round trip continued with previous_response_id (store) that reuses the cached
// prefix; stateless continuation (the whole conversation as input items); errors.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import OpenAI from 'openai';

const client = new OpenAI({ baseURL: `${process.env.DSV4_URL}/v1`, apiKey: 'none', maxRetries: 0 });
const model = 'dsv4-synthetic';
const TOOLS = [{ type: 'function', name: 'read_file', description: 'Reads a file', strict: false,
  parameters: { type: 'object', properties: { path: { type: 'string' } }, required: ['path'] } }];
// responses.stream's final response has no output_text in this client version: read the items.
const textOf = (r) => r.output.filter((o) => o.type === 'message').flatMap((o) => o.content)
  .filter((c) => c.type === 'output_text').map((c) => c.text).join('');
const CALL = '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="read_file">\n' +
  '<｜DSML｜parameter name="path" string="true">note.txt</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>';

test('responses.create: sampled text, usage', async () => {
  const r = await client.responses.create({ model, instructions: 'Be brief.', input: 'Hi', max_output_tokens: 6 });
  assert.equal(r.object, 'response');
  assert.ok(['completed', 'incomplete'].includes(r.status));
  assert.equal(typeof r.output_text, 'string');
  assert.ok(r.usage.input_tokens > 0 && r.usage.output_tokens > 0);
  assert.equal(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens);
});

test('responses.create: reasoning item and message', async () => {
  const r = await client.responses.create({ model, input: [{ role: 'user', content: [{ type: 'input_text', text: '2+2?' }] }],
    reasoning: { effort: 'high' }, max_output_tokens: 40, dsv4_test_completion: 'Add them.</think>4' });
  assert.equal(r.status, 'completed');
  assert.deepEqual(r.output.map((o) => o.type), ['reasoning', 'message']);
  assert.equal(r.output[0].content[0].text, 'Add them.');
  assert.equal(r.output_text, '4');
  assert.ok(r.usage.output_tokens_details.reasoning_tokens > 0);
});

test('responses.stream: event sequence and final text', async () => {
  const stream = client.responses.stream({ model, input: 'Hello', max_output_tokens: 40, dsv4_test_completion: 'Hi there!' });
  const types = [];
  stream.on('event', (e) => { if (types.at(-1) !== e.type) types.push(e.type); });
  const final = await stream.finalResponse();
  assert.deepEqual(types, ['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added',
    'response.output_text.delta', 'response.output_text.done', 'response.content_part.done', 'response.output_item.done',
    'response.completed']);
  assert.equal(textOf(final), 'Hi there!');
});

test('function call round trip with previous_response_id reuses the prefix', async () => {
  const first = client.responses.stream({ model, input: 'What does note.txt say?', tools: TOOLS, tool_choice: 'auto',
    parallel_tool_calls: false, store: true, prompt_cache_key: 'session-1', max_output_tokens: 80, dsv4_test_completion: CALL });
  const argDeltas = [];
  first.on('response.function_call_arguments.delta', (e) => argDeltas.push(e.delta));
  const r1 = await first.finalResponse();
  const call = r1.output.find((o) => o.type === 'function_call');
  assert.equal(call.name, 'read_file');
  assert.deepEqual(JSON.parse(call.arguments), { path: 'note.txt' });
  assert.equal(argDeltas.join(''), call.arguments);

  const second = client.responses.stream({ model, previous_response_id: r1.id, tools: TOOLS, prompt_cache_key: 'session-1',
    input: [{ type: 'function_call_output', call_id: call.call_id, output: 'secret: 42' }], max_output_tokens: 40,
    dsv4_test_completion: 'The note says secret: 42.' });
  const r2 = await second.finalResponse();
  assert.equal(textOf(r2), 'The note says secret: 42.');
  assert.equal(r2.previous_response_id, r1.id);
  assert.ok(r2.usage.input_tokens_details.cached_tokens > 0, JSON.stringify(r2.usage));
});

test('stateless continuation: the conversation as input items, store false', async () => {
  const r1 = await client.responses.create({ model, input: 'Read note.txt', tools: TOOLS, store: false, max_output_tokens: 80,
    dsv4_test_completion: CALL });
  const call = r1.output.find((o) => o.type === 'function_call');
  const r2 = await client.responses.create({ model, tools: TOOLS, store: false, max_output_tokens: 40,
    input: [{ role: 'user', content: 'Read note.txt' }, call, { type: 'function_call_output', call_id: call.call_id, output: 'secret: 42' }],
    dsv4_test_completion: 'It says 42.' });
  assert.equal(r2.output_text, 'It says 42.');
  assert.ok(r2.usage.input_tokens_details.cached_tokens > 0);
  await assert.rejects(client.responses.create({ model, previous_response_id: r1.id, input: 'x' }),
    (e) => e.status === 400 && /is not stored/.test(e.message));
});

test('bad requests are 400s naming the field', async () => {
  await assert.rejects(client.responses.create({ model, input: 'x', tools: [{ type: 'custom', name: 'apply_patch' }] }),
    (e) => e.status === 400 && e.error.param === 'tools' && /'custom'/.test(e.message));
  await assert.rejects(client.responses.create({ model, input: 'x', reasoning: { effort: 'huge' } }),
    (e) => e.status === 400 && /reasoning.effort/.test(e.message));
  // Unknown roles, malformed items and a prompt beyond the context (4096 on the shared server).
  const bad = [
    [[{ role: 'robot', content: 'x' }], /input\[0\]\.role: unknown role 'robot'/],
    [[{ type: 'function_call_output', call_id: 'c1' }], /input\[0\]\.output is required/],
    [[{ role: 'user', content: 'x' }, 7], /input\[1\] must be an object/],
    [[{ type: 'web_search_call', id: 'w' }], /input\[0\]: input item type 'web_search_call'/],
    ['x '.repeat(5000), /the prompt is \d+ tokens but the context holds 4096/],
  ];
  for (const [input, re] of bad)
    await assert.rejects(client.responses.create({ model, input }), (e) => e.status === 400 && re.test(e.message), String(re));
});
