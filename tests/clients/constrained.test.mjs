// Constrained decoding through the real server and the official clients. The synthetic model's
// weights are random, so its free output is noise; with tool_choice required / a named tool, or
// a json_schema response format, every answer must still be a tool call / JSON document that an
// independent validator (ajv) accepts against the request's own schema. Strings carry a
// maxLength so that random sampling ends within max_tokens (closing a free string is one token
// in ~10^4 under uniform noise).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import Ajv from 'ajv';
import OpenAI from 'openai';

const url = process.env.DSV4_URL;
const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 });
const anthropic = new Anthropic({ baseURL: url, apiKey: 'none', maxRetries: 0 });
const model = 'dsv4-synthetic';
const user = (content) => ({ role: 'user', content });
const ajv = new Ajv({ strict: false, allErrors: true });

function assertValid(schema, value, what) {
  const validate = ajv.compile(schema);
  assert.ok(validate(value), `${what}: ${JSON.stringify(value)} fails its schema: ${ajv.errorsText(validate.errors)}`);
}

const WEATHER = {
  type: 'object',
  properties: {
    city: { type: 'string', maxLength: 12 },
    days: { type: 'integer' },
    unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
    detailed: { type: 'boolean' },
  },
  required: ['city', 'unit'],
  additionalProperties: false,
};
const SEARCH = {
  type: 'object',
  properties: {
    query: { type: 'string', maxLength: 10 },
    filters: {
      type: 'object',
      properties: { lang: { enum: ['en', 'fr', null] }, max: { type: 'number' } },
      required: ['lang'],
      additionalProperties: false,
    },
    tags: { type: 'array', items: { type: 'string', maxLength: 4 }, maxItems: 3 },
    mode: { anyOf: [{ type: 'integer' }, { type: 'null' }] },
  },
  required: ['query', 'filters', 'tags'],
  additionalProperties: false,
};
const CHAT_TOOLS = [
  { type: 'function', function: { name: 'get_weather', description: 'Weather of a city', parameters: WEATHER } },
  { type: 'function', function: { name: 'search', description: 'Search the web', parameters: SEARCH } },
];
const SCHEMAS = { get_weather: WEATHER, search: SEARCH };
const PERSON = {
  type: 'object',
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 12 },
    age: { type: 'integer' },
    email: { type: ['string', 'null'], maxLength: 8 },
    roles: { type: 'array', items: { $ref: '#/$defs/role' }, minItems: 1, maxItems: 3 },
    score: { type: 'number' },
  },
  required: ['name', 'age', 'roles', 'score'],
  additionalProperties: false,
  $defs: { role: { type: 'string', enum: ['admin', 'user', 'guest'] } },
};

function checkCalls(calls, allowed) {
  assert.ok(calls.length >= 1, 'at least one tool call');
  for (const c of calls) {
    assert.ok(allowed.includes(c.name), `${c.name} is one of ${allowed}`);
    assertValid(SCHEMAS[c.name], JSON.parse(c.arguments), c.name);
  }
}

test('chat: tool_choice required → a valid call of one of the tools, greedy and sampled', async () => {
  for (const [temperature, seed] of [[0, 0], [1, 1], [1, 2]]) {
    const r = await openai.chat.completions.create({ model, messages: [user('Weather in Paris?')], tools: CHAT_TOOLS,
      tool_choice: 'required', temperature, seed, max_tokens: 400 });
    const c = r.choices[0];
    assert.equal(c.finish_reason, 'tool_calls', JSON.stringify(c.message));
    assert.equal(c.message.content, null);
    checkCalls(c.message.tool_calls.map((t) => t.function), ['get_weather', 'search']);
  }
});

test('chat: a named function, parallel_tool_calls false → exactly one call of it (streamed)', async () => {
  const stream = await openai.chat.completions.create({ model, messages: [user('Find cats')], tools: CHAT_TOOLS,
    tool_choice: { type: 'function', function: { name: 'search' } }, parallel_tool_calls: false,
    temperature: 1, seed: 5, max_tokens: 400, stream: true });
  const calls = [];
  let finish = null;
  for await (const chunk of stream) {
    for (const d of chunk.choices[0]?.delta?.tool_calls ?? []) {
      if (!calls[d.index]) calls[d.index] = { name: '', arguments: '' };
      calls[d.index].name += d.function?.name ?? '';
      calls[d.index].arguments += d.function?.arguments ?? '';
    }
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(finish, 'tool_calls');
  assert.equal(calls.length, 1);
  checkCalls(calls, ['search']);
});

test('chat: response_format json_schema strict → a document valid against it', async () => {
  for (const [temperature, seed, stream] of [[0, 0, false], [1, 3, false], [1, 4, true]]) {
    const body = { model, messages: [user('Describe a person')], temperature, seed, max_tokens: 300,
      response_format: { type: 'json_schema', json_schema: { name: 'person', strict: true, schema: PERSON } } };
    let text = '', finish;
    if (stream) {
      for await (const chunk of await openai.chat.completions.create({ ...body, stream: true })) {
        text += chunk.choices[0]?.delta?.content ?? '';
        finish = chunk.choices[0]?.finish_reason ?? finish;
      }
    } else {
      const r = await openai.chat.completions.create(body);
      text = r.choices[0].message.content;
      finish = r.choices[0].finish_reason;
    }
    assert.equal(finish, 'stop', text);
    assertValid(PERSON, JSON.parse(text), 'person');
  }
});

test('chat: json_object → an object; without a constraint the same request is not JSON', async () => {
  const base = { model, messages: [user('JSON please')], temperature: 1, seed: 9, max_tokens: 40 };
  const free = await openai.chat.completions.create(base);
  assert.throws(() => JSON.parse(free.choices[0].message.content));
  // A free-form object: its strings are unbounded, so noise runs on to max_tokens, but what
  // arrives is the start of an object.
  const r = await openai.chat.completions.create({ ...base, response_format: { type: 'json_object' } });
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.match(r.choices[0].message.content, /^\{("|\})/);
});

test('chat: max_tokens before the document closes → finish_reason length, no faked closure', async () => {
  const r = await openai.chat.completions.create({ model, messages: [user('x')], max_tokens: 3, temperature: 1, seed: 1,
    response_format: { type: 'json_schema', json_schema: { name: 'p', strict: true, schema: PERSON } } });
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 3);
  assert.throws(() => JSON.parse(r.choices[0].message.content));
  const text = r.choices[0].message.content;
  assert.ok('{"name":'.startsWith(text) || text.startsWith('{"name":'), text);
});

test('responses.create: tool_choice required / named function, text.format json_schema', async () => {
  const tools = CHAT_TOOLS.map((t) => ({ type: 'function', name: t.function.name, parameters: t.function.parameters }));
  for (const [tool_choice, allowed] of [['required', ['get_weather', 'search']], [{ type: 'function', name: 'get_weather' }, ['get_weather']]]) {
    const r = await openai.responses.create({ model, input: 'Weather?', tools, tool_choice, temperature: 1, max_output_tokens: 400 });
    assert.equal(r.status, 'completed');
    const calls = r.output.filter((o) => o.type === 'function_call');
    assert.equal(calls.length, r.output.length, JSON.stringify(r.output));
    checkCalls(calls, allowed);
  }
  const r = await openai.responses.create({ model, input: 'A person', temperature: 1, max_output_tokens: 300,
    text: { format: { type: 'json_schema', name: 'person', strict: true, schema: PERSON } } });
  assert.equal(r.status, 'completed');
  assertValid(PERSON, JSON.parse(r.output_text), 'person');
});

test('anthropic messages: tool_choice any / tool → valid tool_use blocks', async () => {
  const tools = CHAT_TOOLS.map((t) => ({ name: t.function.name, description: t.function.description, input_schema: t.function.parameters }));
  for (const [tool_choice, allowed] of [[{ type: 'any' }, ['get_weather', 'search']],
    [{ type: 'tool', name: 'get_weather', disable_parallel_tool_use: true }, ['get_weather']]]) {
    const r = await anthropic.messages.create({ model, max_tokens: 400, temperature: 1, tools, tool_choice,
      messages: [{ role: 'user', content: 'Weather in Rome?' }] });
    assert.equal(r.stop_reason, 'tool_use');
    const uses = r.content.filter((b) => b.type === 'tool_use');
    assert.equal(uses.length, r.content.length, JSON.stringify(r.content));
    if (tool_choice.disable_parallel_tool_use) assert.equal(uses.length, 1);
    checkCalls(uses.map((u) => ({ name: u.name, arguments: JSON.stringify(u.input) })), allowed);
  }
  // none and auto keep working (no constraint): a plain answer.
  for (const tool_choice of [{ type: 'none' }, { type: 'auto' }]) {
    const r = await anthropic.messages.create({ model, max_tokens: 5, tools, tool_choice, messages: [{ role: 'user', content: 'Hi' }] });
    assert.ok(['end_turn', 'max_tokens'].includes(r.stop_reason));
  }
});

test('unsupported schema features → 400 naming the keyword and where it is', async () => {
  const withPattern = structuredClone(CHAT_TOOLS);
  withPattern[1].function.parameters.properties.query.pattern = '^[a-z]+$';
  await assert.rejects(openai.chat.completions.create({ model, messages: [user('x')], tools: withPattern, tool_choice: 'required', max_tokens: 5 }),
    (e) => e.status === 400 && e.error.param === 'tools' &&
      /keyword 'pattern' at tools\[1\]\.function\.parameters\.properties\.query is not supported/.test(e.message));
  const dated = { type: 'object', properties: { when: { type: 'string', format: 'date-time' } } };
  await assert.rejects(openai.chat.completions.create({ model, messages: [user('x')], max_tokens: 5,
    response_format: { type: 'json_schema', json_schema: { name: 'd', strict: true, schema: dated } } }),
  (e) => e.status === 400 && e.error.param === 'response_format' &&
      /keyword 'format' at response_format\.json_schema\.schema\.properties\.when/.test(e.message));
  await assert.rejects(openai.responses.create({ model, input: 'x', max_output_tokens: 5,
    text: { format: { type: 'json_schema', name: 'd', strict: true, schema: { type: 'array', items: { type: 'integer', minimum: 0 } } } } }),
  (e) => e.status === 400 && /keyword 'minimum' at text\.format\.schema\.items/.test(e.message));
  await assert.rejects(anthropic.messages.create({ model, max_tokens: 5, tool_choice: { type: 'any' }, messages: [{ role: 'user', content: 'x' }],
    tools: [{ name: 'f', input_schema: { type: 'object', properties: { n: { type: 'integer', multipleOf: 2 } } } }] }),
  (e) => e.status === 400 && /keyword 'multipleOf' at tools\[0\]\.input_schema\.properties\.n/.test(e.message));
  await assert.rejects(anthropic.messages.create({ model, max_tokens: 5, tool_choice: { type: 'tool', name: 'nope' },
    messages: [{ role: 'user', content: 'x' }], tools: [{ name: 'f', input_schema: { type: 'object' } }] }),
  (e) => e.status === 400 && /names the tool 'nope'/.test(e.message));
  // Not strict: best effort, the schema only reaches the prompt.
  const r = await openai.chat.completions.create({ model, messages: [user('x')], max_tokens: 3,
    response_format: { type: 'json_schema', json_schema: { name: 'd', schema: dated } } });
  assert.equal(r.object, 'chat.completion');
});
