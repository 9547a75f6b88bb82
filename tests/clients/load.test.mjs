// A bounded loopback load test: concurrent streaming clients that randomly hang up, a few
// hundred malformed requests, and afterwards no sequence left behind (/health) and a stable
// resident size.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

const url = process.env.DSV4_URL;
const pid = process.env.DSV4_SERVER_PID;
const rssMb = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;
const health = async () => (await fetch(`${url}/health`)).json();
const post = (path, body, headers = {}, signal = undefined) =>
  fetch(`${url}${path}`, { method: 'POST', headers: { 'Content-Type': 'application/json', ...headers }, body, signal });

// Seeded, so a failure can be reproduced.
let seed = 12345;
const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);

async function streamingClient(i) {
  const ctrl = new AbortController();
  const abortAfter = rand() < 0.4 ? 50 + rand() * 1500 : null;
  const timer = abortAfter ? setTimeout(() => ctrl.abort(), abortAfter) : null;
  const anthropic = i % 3 === 2;
  // A client that will hang up asks for a long answer, so it is still generating when it does.
  const maxTokens = abortAfter ? 3000 : 4 + (i % 12);
  const body = anthropic
    ? { model: 'm', max_tokens: maxTokens, stream: true, messages: [{ role: 'user', content: `client ${i}` }] }
    : { model: 'm', max_tokens: maxTokens, stream: true, temperature: 0.8, seed: i,
        messages: [{ role: 'user', content: `client ${i} says ${'hello '.repeat(i % 7)}` }] };
  try {
    const r = await post(anthropic ? '/v1/messages' : '/v1/chat/completions', JSON.stringify(body), {}, ctrl.signal);
    if (r.status === 429) return 'busy';
    assert.equal(r.status, 200);
    const reader = r.body.getReader();
    for (;;) {
      const { done } = await reader.read();
      if (done) break;
    }
    return 'done';
  } catch (e) {
    if (ctrl.signal.aborted) return 'aborted';
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

function malformed(i) {
  const m = (role) => [{ role, content: 'x' }];
  const cases = [
    ['/v1/chat/completions', '{"messages": ['],
    ['/v1/chat/completions', 'null'],
    ['/v1/chat/completions', '[]'],
    ['/v1/chat/completions', JSON.stringify({ messages: 'hi' })],
    ['/v1/chat/completions', JSON.stringify({ messages: m('wizard') })],
    ['/v1/chat/completions', JSON.stringify({ messages: m('user'), temperature: -1 })],
    ['/v1/chat/completions', JSON.stringify({ messages: m('user'), max_tokens: 'many' })],
    ['/v1/chat/completions', JSON.stringify({ messages: m('user'), top_p: 0 })],
    ['/v1/chat/completions', JSON.stringify({ messages: m('user'), stop: [1, 2] })],
    ['/v1/chat/completions', JSON.stringify({ messages: m('user'), tools: 'all' })],
    ['/v1/chat/completions', JSON.stringify({ messages: [{ role: 'assistant', tool_calls: [{ function: {} }] }] })],
    ['/v1/chat/completions', '{"messages":[{"role":"user","content":"\\ud800"}]}'],
    ['/v1/completions', JSON.stringify({ prompt: [1, 2, 1e9] })],
    ['/v1/completions', JSON.stringify({ prompt: {} })],
    ['/v1/completions', JSON.stringify({ prompt: 'x', n: 3 })],
    ['/v1/messages', JSON.stringify({ messages: m('user') })],
    ['/v1/messages', JSON.stringify({ max_tokens: 5, messages: [{ role: 'user', content: [{ type: 'image' }] }] })],
    ['/v1/messages', JSON.stringify({ max_tokens: -5, messages: m('user') })],
    ['/v1/messages', Buffer.from([0xff, 0xfe, 0x7b, 0x00])],
    ['/v1/nowhere', '{}'],
  ];
  return cases[i % cases.length];
}

async function round(n) {
  const clients = await Promise.all(Array.from({ length: n }, (_, i) => streamingClient(i)));
  const statuses = [];
  for (let k = 0; k < 150; k += 25) {
    statuses.push(...(await Promise.all(Array.from({ length: 25 }, async (_, j) => {
      const [path, body] = malformed(k + j);
      const r = await post(path, body);
      const text = await r.text();
      assert.ok(r.status >= 400 && r.status < 500, `${path} ${body}: ${r.status} ${text}`);
      const j2 = JSON.parse(text);
      assert.ok(j2.error, text);
      return r.status;
    }))));
  }
  // An oversized body is refused with 413 without reading it all.
  const big = await post('/v1/chat/completions', JSON.stringify({ messages: [{ role: 'user', content: 'x'.repeat(9 << 20) }] }));
  assert.equal(big.status, 413);
  assert.match((await big.json()).error.message, /exceeds/);
  return { clients, statuses };
}

async function idle() {
  for (let i = 0; i < 200; i++) {
    const h = await health();
    if (h.active === 0 && h.queued === 0) return h;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail('the server still has active sequences');
}

test('concurrent clients, cancellations and malformed requests', async () => {
  const r1 = await round(12);
  const h1 = await idle();
  const rss1 = rssMb();
  const r2 = await round(12);
  const h2 = await idle();
  const rss2 = rssMb();
  const outcomes = [...r1.clients, ...r2.clients];
  console.log(`load: ${outcomes.filter((o) => o === 'done').length} finished, ${outcomes.filter((o) => o === 'aborted').length} ` +
    `aborted, ${outcomes.filter((o) => o === 'busy').length} refused (429); ${r1.statuses.length + r2.statuses.length + 2} ` +
    `malformed → 4xx; RSS ${rss1.toFixed(0)} → ${rss2.toFixed(0)} MiB; cache ${h2.prefix_cache.entries} entries ` +
    `${(h2.prefix_cache.bytes / 2 ** 20).toFixed(1)} MiB`);
  assert.ok(outcomes.includes('done'));
  assert.ok(h2.totals.cancelled > h1.totals.cancelled || !r2.clients.includes('aborted'));
  assert.ok(h2.prefix_cache.bytes <= h2.prefix_cache.max_bytes);
  assert.ok(rss2 < rss1 + 48, `RSS grew from ${rss1} to ${rss2} MiB`);
  // Still serving.
  const ok = await post('/v1/completions', JSON.stringify({ prompt: 'still alive', max_tokens: 2 }));
  assert.equal(ok.status, 200);
});
