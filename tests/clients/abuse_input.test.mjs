// Hostile request bodies against the running server (bounded: about a hundred requests, a few
// MB each at most): JSON nested 50,000–100,000 deep in every field that is copied or
// re-rendered, fields of the wrong type, max_tokens at the edges, invalid UTF-8, 10^6-element
// arrays, 10^4 messages. Each must get a 4xx JSON error naming the problem, or be served. After
// each: /health answers, no sequence is left running or queued, and the server's resident size
// stays within RSS_BOUND_MB of what it was after the first request (and does not grow when
// everything is sent again). Also: model output that is
// not V4 markup reaches the client byte for byte, streamed or not, in both APIs.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

const url = process.env.DSV4_URL;
const pid = process.env.DSV4_SERVER_PID;
// Parsing a 4 MB body of 10^6 small values takes some 100 MB for a moment, and each malloc
// arena an HTTP thread used may keep ~50 MB of it (measured: +240 MiB over the first round).
// Anything near this bound is a leak or an unbounded copy; sending everything again must not
// add more than RSS_REPEAT_MB. The same state measures 380–469 MiB from run to run on a loaded
// machine (which thread's arena the 10^4-message prompts land in), so the bound sits above that
// noise and below what keeping the round's bodies (~59 of up to 4 MB, parsed) would add.
const RSS_BOUND_MB = 384;
const RSS_REPEAT_MB = 128;

const rssMb = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;
const post = (path, body, headers = {}) =>
  fetch(`${url}${path}`, { method: 'POST', headers: { 'Content-Type': 'application/json', ...headers }, body });

const CHAT = '/v1/chat/completions';
const COMPLETIONS = '/v1/completions';
const MESSAGES = '/v1/messages';
const COUNT = '/v1/messages/count_tokens';

// `depth` levels of alternating arrays and objects around a number, as text.
function nested(depth) {
  let open = '';
  let close = '';
  for (let i = 0; i < depth; i++) {
    open += i % 2 ? '{"k":' : '[';
    close = (i % 2 ? '}' : ']') + close;
  }
  return `${open}1${close}`;
}
const repeat = (item, n) => `[${new Array(n).fill(item).join(',')}]`;
const hi = [{ role: 'user', content: 'hi' }];
// Replaces the string "@" in JSON text by raw text (a value too deep to build as an object).
const splice = (obj, raw) => JSON.stringify(obj).replace('"@"', raw);
const bytes = (...parts) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : Buffer.from(p))));
const BAD_UTF8 = [0x78, 0xff, 0xfe, 0x79];

// [name, path, body, expected: a RegExp the error message must match, or 'ok']
const deep = nested(100000);
const cases = [
  // The reported crash: ~100 KB, unauthenticated, 50,000 levels in tools[0].function.parameters.
  ['issue repro: parameters 50,000 deep', CHAT,
    splice({ model: 'm', messages: hi, tools: [{ type: 'function', function: { name: 'f', parameters: '@' } }] },
      '['.repeat(50000) + ']'.repeat(50000)),
    /nests JSON deeper than 128 levels \(at tools\[0\]\.function\.parameters/],
  ['deep response_format schema', CHAT,
    splice({ messages: hi, response_format: { type: 'json_schema', json_schema: { schema: '@' } } }, deep),
    /deeper than 128 levels \(at response_format\.json_schema\.schema/],
  ['deep metadata', CHAT, splice({ messages: hi, metadata: '@' }, deep), /deeper than 128 levels \(at metadata/],
  ['deep message content', CHAT, splice({ messages: [{ role: 'user', content: '@' }] }, deep),
    /deeper than 128 levels \(at messages\[0\]\.content/],
  ['deep tool-call arguments', CHAT,
    splice({ messages: [...hi, { role: 'assistant', content: '', tool_calls: [{ id: 'c', type: 'function',
      function: { name: 'f', arguments: '@' } }] }] }, deep),
    /deeper than 128 levels \(at messages\[1\]\.tool_calls\[0\]\.function\.arguments/],
  ['deep stop', CHAT, splice({ messages: hi, stop: '@' }, deep), /deeper than 128 levels \(at stop/],
  ['deep completions prompt', COMPLETIONS, splice({ prompt: '@' }, deep), /deeper than 128 levels \(at prompt/],
  ['deep input_schema', MESSAGES, splice({ max_tokens: 5, messages: hi, tools: [{ name: 'f', input_schema: '@' }] }, deep),
    /deeper than 128 levels \(at tools\[0\]\.input_schema/],
  ['deep tool_use input', MESSAGES,
    splice({ max_tokens: 5, messages: [...hi, { role: 'assistant', content: [{ type: 'tool_use', id: 't', name: 'f',
      input: { x: '@' } }] }] }, deep),
    /deeper than 128 levels \(at messages\[1\]\.content\[0\]\.input\.x/],
  ['deep tool_result content', MESSAGES,
    splice({ max_tokens: 5, messages: [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: 't', content: '@' }] }] }, deep),
    /deeper than 128 levels \(at messages\[0\]\.content\[0\]\.content/],
  ['deep system', MESSAGES, splice({ max_tokens: 5, system: '@', messages: hi }, deep), /deeper than 128 levels \(at system/],
  ['deep Anthropic metadata', MESSAGES, splice({ max_tokens: 5, messages: hi, metadata: '@' }, deep),
    /deeper than 128 levels \(at metadata/],
  ['deep count_tokens', COUNT, splice({ messages: hi, tools: [{ name: 'f', input_schema: '@' }] }, deep),
    /deeper than 128 levels \(at tools\[0\]\.input_schema/],
  ['deep object keys', CHAT, '{"a":'.repeat(100000) + '1' + '}'.repeat(100000), /deeper than 128 levels \(at a\.a\.a/],

  // Wrong types (the unit test api_abuse_test.cc has every field × every type).
  ['messages: string', CHAT, JSON.stringify({ messages: 'hi' }), /'messages' must be a non-empty array/],
  ['messages: null', CHAT, JSON.stringify({ messages: null }), /'messages'/],
  ['content: number', CHAT, JSON.stringify({ messages: [{ role: 'user', content: 5 }] }), /messages\[0\]\.content/],
  ['temperature: string', CHAT, JSON.stringify({ messages: hi, temperature: 'hot' }), /'temperature' must be a number/],
  ['max_tokens: string', CHAT, JSON.stringify({ messages: hi, max_tokens: 'many' }), /'max_tokens' must be an integer/],
  ['stream: string', CHAT, JSON.stringify({ messages: hi, stream: 'yes' }), /'stream' must be a boolean/],
  ['tools: object', CHAT, JSON.stringify({ messages: hi, tools: {} }), /'tools' must be an array/],
  ['tool type: number', CHAT, JSON.stringify({ messages: hi, tools: [{ type: 5, function: { name: 'f' } }] }), /tools\[0\]/],
  ['tool parameters: array', CHAT, JSON.stringify({ messages: hi, tools: [{ type: 'function', function: { name: 'f', parameters: [1] } }] }),
    /tools\[0\]\.function\.parameters must be a JSON schema object/],
  ['tool_choice: number', CHAT, JSON.stringify({ messages: hi, tool_choice: 5 }), /'tool_choice'/],
  ['tool_call id: number', CHAT, JSON.stringify({ messages: [...hi, { role: 'assistant', content: '', tool_calls: [
    { id: 5, type: 'function', function: { name: 'f', arguments: '{}' } }] }] }), /'id' must be a string/],
  ['response_format: array', CHAT, JSON.stringify({ messages: hi, response_format: [] }), /'response_format'/],
  ['stop: number', CHAT, JSON.stringify({ messages: hi, stop: 5 }), /'stop' must be a string or an array/],
  ['seed: float', CHAT, JSON.stringify({ messages: hi, seed: 1.5 }), /'seed' must be an integer/],
  ['prompt: object', COMPLETIONS, JSON.stringify({ prompt: {} }), /'prompt' must be/],
  ['system: number', MESSAGES, JSON.stringify({ max_tokens: 5, system: 5, messages: hi }), /system must be a string/],
  ['system block type: number', MESSAGES, JSON.stringify({ max_tokens: 5, system: [{ type: 5, text: 'x' }], messages: hi }),
    /system\[0\] must be a text block/],
  ['tool_use id: number', MESSAGES, JSON.stringify({ max_tokens: 5, messages: [...hi, { role: 'assistant', content: [
    { type: 'tool_use', id: 5, name: 'f', input: {} }] }] }), /'id' must be a string/],
  ['tool_use_id: number', MESSAGES, JSON.stringify({ max_tokens: 5, messages: [{ role: 'user', content: [
    { type: 'tool_result', tool_use_id: 5, content: 'r' }] }] }), /'tool_use_id' must be a string/],
  ['is_error: string', MESSAGES, JSON.stringify({ max_tokens: 5, messages: [{ role: 'user', content: [
    { type: 'tool_result', tool_use_id: 't', content: 'r', is_error: 'yes' }] }] }), /'is_error' must be a boolean/],
  ['input_schema: string', MESSAGES, JSON.stringify({ max_tokens: 5, messages: hi, tools: [{ name: 'f', input_schema: 'x' }] }),
    /tools\[0\]\.input_schema must be a JSON schema object/],
  ['tool_choice without tools: number', MESSAGES, JSON.stringify({ max_tokens: 5, messages: hi, tool_choice: 5 }), /'tool_choice'/],
  ['budget_tokens: string', MESSAGES, JSON.stringify({ max_tokens: 5, messages: hi, thinking: { type: 'enabled', budget_tokens: 'x' } }),
    /'budget_tokens' must be an integer/],

  // max_tokens at the edges; 2^63 means "as many as fit" (the test hook makes the answer short).
  ['max_tokens 0', CHAT, JSON.stringify({ messages: hi, max_tokens: 0 }), /'max_tokens' must be between 1/],
  ['max_tokens -1', MESSAGES, JSON.stringify({ messages: hi, max_tokens: -1 }), /'max_tokens' must be between 1/],
  ['max_tokens 1e300', COMPLETIONS, JSON.stringify({ prompt: 'x', max_tokens: 1e300 }), /'max_tokens' must be an integer/],
  ['max_tokens 2^63 (chat)', CHAT, '{"messages":[{"role":"user","content":"hi"}],"max_tokens":9223372036854775808,"dsv4_test_completion":"ok"}', 'ok'],
  ['max_tokens 2^63 (messages)', MESSAGES, '{"messages":[{"role":"user","content":"hi"}],"max_tokens":9223372036854775808,"dsv4_test_completion":"ok"}', 'ok'],
  ['max_tokens 2^64-1 (completions)', COMPLETIONS, '{"prompt":"hi","max_tokens":18446744073709551615,"dsv4_test_completion":"ok"}', 'ok'],
  ['temperature 1e400', CHAT, '{"messages":[{"role":"user","content":"hi"}],"temperature":1e400}', /not valid JSON at temperature/],

  // Invalid UTF-8 in strings (raw bytes and lone surrogates), named by where it is.
  ['bad UTF-8 in content', CHAT, bytes('{"messages":[{"role":"user","content":"', BAD_UTF8, '"}]}'),
    /not valid JSON at messages\[0\]\.content: .*UTF-8/],
  ['bad UTF-8 in a tool name', CHAT, bytes('{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"', BAD_UTF8, '"}}]}'),
    /at tools\[0\]\.function\.name: .*UTF-8/],
  ['bad UTF-8 in a key', CHAT, bytes('{"messages":[{"role":"user","content":"hi"}],"metadata":{"', BAD_UTF8, '":1}}'), /at metadata: .*UTF-8/],
  ['lone surrogate', CHAT, '{"messages":[{"role":"user","content":"\\ud800"}]}', /at messages\[0\]\.content: .*surrogate/],
  ['bad UTF-8 in system', MESSAGES, bytes('{"max_tokens":5,"system":"', BAD_UTF8, '","messages":[{"role":"user","content":"hi"}]}'),
    /at system: .*UTF-8/],
  ['bad UTF-8 in stop_sequences', MESSAGES, bytes('{"max_tokens":5,"stop_sequences":["', BAD_UTF8, '"],"messages":[{"role":"user","content":"hi"}]}'),
    /at stop_sequences\[0\]: .*UTF-8/],

  // 10^6-element arrays and 10^4 messages.
  ['10^6 stop strings', CHAT, `{"messages":[{"role":"user","content":"hi"}],"stop":${repeat('"a"', 1e6)}}`, /'stop' may hold at most 16/],
  ['10^6 messages that are numbers', CHAT, `{"messages":${repeat('0', 1e6)}}`, /messages\[0\] must be an object/],
  ['10^6 tools', CHAT, `{"messages":[{"role":"user","content":"hi"}],"tools":${repeat('1', 1e6)}}`, /tools\[0\]/],
  ['10^6 content parts', CHAT, `{"messages":[{"role":"user","content":${repeat('7', 1e6)}}]}`, /messages\[0\]\.content\[0\]/],
  ['10^6 prompt ids', COMPLETIONS, `{"prompt":${repeat('1', 1e6)}}`, /the prompt is 1000000 tokens but the context holds/],
  ['10^6 stop_sequences', MESSAGES, `{"max_tokens":5,"messages":[{"role":"user","content":"hi"}],"stop_sequences":${repeat('"a"', 1e6)}}`,
    /'stop_sequences' may hold at most 16/],
  ['10^4 messages (chat)', CHAT, JSON.stringify({ messages: Array.from({ length: 1e4 }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: `m${i}` })) }),
    /the prompt is \d+ tokens but the context holds 4096/],
  ['10^4 messages (Anthropic)', MESSAGES, JSON.stringify({ max_tokens: 5, messages: Array.from({ length: 1e4 }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: `m${i}` })) }),
    /the prompt is \d+ tokens but the context holds 4096/],
  ['10^4 messages counted', COUNT, JSON.stringify({ messages: Array.from({ length: 1e4 }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: `m${i}` })) }), 'ok'],
];

async function idle() {
  for (let i = 0; i < 300; i++) {
    const r = await fetch(`${url}/health`);
    assert.equal(r.status, 200);
    const h = await r.json();
    if (h.active === 0 && h.queued === 0) return h;
    await new Promise((res) => setTimeout(res, 100));
  }
  assert.fail('the server still has active or queued sequences');
}

function errorMessage(path, json) {
  if (path.startsWith('/v1/messages')) {
    assert.equal(json.type, 'error');
    assert.equal(typeof json.error.type, 'string');
  }
  return json.error?.message;
}

async function send([name, path, body, expected]) {
  const r = await post(path, body);
  const text = await r.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    assert.fail(`${name}: the response is not JSON (${r.status}): ${text.slice(0, 200)}`);
  }
  if (expected === 'ok') {
    assert.equal(r.status, 200, `${name}: ${text.slice(0, 300)}`);
    return false;
  }
  assert.ok(r.status >= 400 && r.status < 500, `${name}: status ${r.status}: ${text.slice(0, 300)}`);
  assert.match(errorMessage(path, json) ?? '', expected, `${name}: ${text.slice(0, 300)}`);
  return true;
}

test('hostile bodies get a 4xx naming the problem; the server stays up and bounded', async () => {
  let first = null;
  let peak = 0;
  let refused = 0;
  const rounds = [];
  // Twice: the second round must not grow the resident size further (no leak; what the
  // allocator keeps after the first round is reused).
  for (let round = 0; round < 2; round++) {
    for (const c of cases) {
      if (await send(c)) refused++;
      await idle();
      const rss = rssMb();
      first ??= rss;
      peak = Math.max(peak, rss);
      if (process.env.DSV4_ABUSE_VERBOSE) console.log(`${c[0]}: RSS ${rss.toFixed(0)} MiB`);
      assert.ok(rss < first + RSS_BOUND_MB, `${c[0]}: RSS ${rss.toFixed(0)} MiB, first ${first.toFixed(0)} MiB`);
    }
    rounds.push(rssMb());
  }
  console.log(`abuse: ${refused} refused with a 4xx, ${2 * cases.length - refused} served; RSS first ${first.toFixed(0)} MiB, ` +
    `peak ${peak.toFixed(0)}, after round 1 ${rounds[0].toFixed(0)}, after round 2 ${rounds[1].toFixed(0)}`);
  assert.ok(rounds[1] < rounds[0] + RSS_REPEAT_MB, `RSS grew from ${rounds[0]} to ${rounds[1]} MiB when the bodies were sent again`);
  // Still serving.
  const ok = await post(CHAT, JSON.stringify({ messages: hi, max_tokens: 2 }));
  assert.equal(ok.status, 200);
});

// Model output that is not V4 markup (made with the test hook) reaches the client exactly.
const MALFORMED = [
  'a</think>b',
  '<think>x',
  'x<｜begin▁of▁sentence｜>y',
  'ends with a newline\n\n',
  'x\n\n<｜DSML｜tool_calls>junk',
  'x\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="f">\n<｜DSML｜parameter name="a" string="maybe">1</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>',
];

async function sseEvents(r) {
  const text = await r.text();
  return text.split('\n\n').filter((b) => b.includes('data: {')).map((b) => JSON.parse(b.slice(b.indexOf('data: ') + 6)));
}

test('model output that is not V4 markup is passed on byte for byte', async () => {
  for (const completion of MALFORMED) {
    const base = { messages: hi, max_tokens: 200, dsv4_test_completion: completion };
    const plain = await (await post(CHAT, JSON.stringify(base))).json();
    assert.equal(plain.choices[0].message.content, completion, 'OpenAI');
    const chunks = await sseEvents(await post(CHAT, JSON.stringify({ ...base, stream: true })));
    assert.equal(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''), completion, 'OpenAI stream');
    const msg = await (await post(MESSAGES, JSON.stringify(base))).json();
    assert.equal(msg.content.map((b) => b.text ?? '').join(''), completion, 'Anthropic');
    const events = await sseEvents(await post(MESSAGES, JSON.stringify({ ...base, stream: true })));
    assert.equal(events.filter((e) => e.type === 'content_block_delta').map((e) => e.delta.text ?? '').join(''), completion,
      'Anthropic stream');
  }
  await idle();
});
