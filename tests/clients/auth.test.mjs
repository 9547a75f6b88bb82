// A second server with --api-key (and without --test-hooks): every endpoint wants the key, in
// either header, and the test hook field is refused.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startServer } from './server.mjs';

let server;
before(async () => {
  server = await startServer({ bin: process.env.DSV4_BIN, cache: process.env.DSV4_CACHE, extra: ['--api-key', 'sekrit', '--parallel', '1'] });
});
after(async () => assert.equal(await server.stop(), 0));

test('the API key is enforced on every endpoint', async () => {
  for (const path of ['/health', '/v1/models']) assert.equal((await fetch(`${server.url}${path}`)).status, 401);
  const r = await fetch(`${server.url}/v1/messages`, { method: 'POST', body: '{}' });
  assert.equal(r.status, 401);
  assert.equal((await r.json()).error.type, 'authentication_error');
  const bad = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(bad.models.list(), (e) => e.status === 401);
  const good = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'sekrit', maxRetries: 0 });
  assert.equal((await good.models.list()).data.length, 1);
  const anth = new Anthropic({ baseURL: server.url, apiKey: 'sekrit', maxRetries: 0 });  // sends x-api-key
  const m = await anth.messages.create({ model: 'm', max_tokens: 2, messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(m.type, 'message');
});

test('the test hook needs --test-hooks', async () => {
  const good = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'sekrit', maxRetries: 0 });
  await assert.rejects(good.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }], dsv4_test_completion: 'x' }),
    (e) => e.status === 400 && /--test-hooks/.test(e.message));
});
