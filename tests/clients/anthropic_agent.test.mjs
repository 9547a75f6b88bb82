// `dsv4 serve` given what Claude Code sends, through the official `@anthropic-ai/sdk` beta
// client (`?beta=true`, anthropic-beta headers): a system message inside `messages`, adaptive
// thinking with display omitted, cache_control blocks, context_management, output_config,
// metadata and a field no server knows; a tool round trip that reuses the cached prefix, and
// count_tokens for the same body.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';

const client = new Anthropic({ baseURL: process.env.DSV4_URL, apiKey: 'none', maxRetries: 0 });
const eph = { type: 'ephemeral' };
const TOOLS = [{ name: 'Read', description: 'Reads a file', input_schema: { type: 'object',
  properties: { file_path: { type: 'string' } }, required: ['file_path'] }, cache_control: eph }];
const CALL = '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="Read">\n' +
  '<｜DSML｜parameter name="file_path" string="true">/tmp/note.txt</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>';

function body(messages, completion) {
  return {
    model: 'dsv4', max_tokens: 64, betas: ['claude-code-20250219', 'context-management-2025-06-27'],
    system: [{ type: 'text', text: 'billing header' }, { type: 'text', text: 'You are a coding agent.', cache_control: eph }],
    messages, tools: TOOLS, metadata: { user_id: '{"device_id":"x"}' },
    thinking: { type: 'adaptive', display: 'omitted' },
    context_management: { edits: [{ type: 'clear_thinking_20251015', keep: 'all' }] },
    output_config: { effort: 'high' }, some_future_field: { x: 1 },
    dsv4_test_completion: completion,
  };
}

test('claude code shaped request: tool round trip with a mid-conversation system message', async () => {
  const messages = [
    { role: 'user', content: [{ type: 'text', text: '<system-reminder>r</system-reminder>' },
      { type: 'text', text: 'What does note.txt say?', cache_control: eph }] },
    { role: 'system', content: [{ type: 'text', text: '# Environment\nPlatform: linux', cache_control: eph }] },
  ];
  const first = await client.beta.messages.create(body(messages, 'I will read it.</think>' + CALL));
  assert.equal(first.stop_reason, 'tool_use');
  // display "omitted": the thinking block comes without its text, which travels in the signature.
  assert.equal(first.content[0].type, 'thinking');
  assert.equal(first.content[0].thinking, '');
  assert.ok(first.content[0].signature.length > 0);
  const use = first.content.find((b) => b.type === 'tool_use');
  assert.equal(use.name, 'Read');
  assert.deepEqual(use.input, { file_path: '/tmp/note.txt' });

  messages.push({ role: 'assistant', content: first.content },
    { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: [{ type: 'text', text: 'secret: 42' }] }] });
  const stream = client.beta.messages.stream(body(messages, 'Got it.</think>The note says secret: 42.'));
  let usage = null;
  stream.on('streamEvent', (e) => { if (e.type === 'message_delta') usage = e.usage; });
  const second = await stream.finalMessage();
  assert.equal(second.stop_reason, 'end_turn');
  assert.equal(second.content.find((b) => b.type === 'text').text, 'The note says secret: 42.');
  // The second request continues from the first one's cached prefix (the final usage, in
  // message_delta, says how much; this SDK version keeps only output_tokens from it).
  assert.ok(usage.cache_read_input_tokens > 0, JSON.stringify(usage));

  const { dsv4_test_completion, max_tokens, ...countBody } = body(messages, '');
  const counted = await client.beta.messages.countTokens(countBody);
  assert.equal(counted.input_tokens, usage.input_tokens + usage.cache_read_input_tokens);
});

test('thinking disabled and a system message between turns', async () => {
  const r = await client.beta.messages.create({ ...body([{ role: 'user', content: 'q1' }, { role: 'assistant', content: 'a1' },
    { role: 'system', content: 'Answer in French from now on.' }, { role: 'user', content: 'q2' }], 'Oui.'),
    thinking: { type: 'disabled' } });
  assert.deepEqual(r.content, [{ type: 'text', text: 'Oui.' }]);
});

test('bad thinking type is a 400 naming it', async () => {
  await assert.rejects(client.beta.messages.create({ ...body([{ role: 'user', content: 'q' }], 'x'), thinking: { type: 'sometimes' } }),
    (e) => e.status === 400 && /thinking.type/.test(e.message));
});
