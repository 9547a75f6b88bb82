// The server's runtime under abuse (bounded, loopback, stops by itself): slow connections,
// clients that hang up, requests over the memory budget, simulated allocation failures, prompts
// of a thousand messages and SIGTERM during generation. After each: /health answers, no
// sequence is left running, and the resident size stays within a stated bound.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { afterEach, test } from 'node:test';
import { startServer } from './server.mjs';

const url = process.env.DSV4_URL;
const pid = process.env.DSV4_SERVER_PID;
const bin = process.env.DSV4_BIN;
const cache = process.env.DSV4_CACHE;
const { hostname, port } = new URL(url);

// Growth of the shared server's resident size over this file (200 connection threads, the
// cancelled sequences' snapshots in the 64 MiB prefix cache, allocator slack).
const RSS_GROWTH_MB = 256;
const rssMb = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;
const rss0 = rssMb();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Liveness bounds, not performance checks: a starved or hung server never answers in time.
const health = async (base = url) => {
  const r = await fetch(`${base}/health`, { signal: AbortSignal.timeout(10_000) });
  assert.equal(r.status, 200);
  return r.json();
};
async function waitFor(pred, what, base = url, ms = 60_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const h = await health(base);
    if (pred(h)) return h;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(h)}`);
    await sleep(50);
  }
}
const idle = (base = url) => waitFor((h) => h.active === 0 && h.queued === 0, 'no running sequence', base);
const post = (path, body, base = url) =>
  fetch(`${base}${path}`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
const chat = (extra) => ({ model: 'm', messages: [{ role: 'user', content: 'tell me a long story' }], ...extra });

// A raw HTTP request on its own socket (so that the test can hang up mid-response).
function rawPost(path, body) {
  const sock = net.connect(Number(port), hostname);
  const data = JSON.stringify(body);
  sock.write(`POST ${path} HTTP/1.1\r\nHost: ${hostname}\r\nContent-Type: application/json\r\n` +
             `Content-Length: ${Buffer.byteLength(data)}\r\n\r\n${data}`);
  let received = '';
  sock.on('data', (d) => (received += d));
  sock.on('error', () => {});
  return { sock, received: () => received };
}

// After each test: the shared server answers, runs no sequence, and its RSS stays bounded.
afterEach(async () => {
  const h = await idle();
  assert.equal(h.memory.reserved_bytes, 0, 'a finished request still holds memory');
  const grew = rssMb() - rss0;
  console.log(`# RSS growth so far: ${grew.toFixed(1)} MiB (bound ${RSS_GROWTH_MB})`);
  assert.ok(grew < RSS_GROWTH_MB, `RSS grew by ${grew.toFixed(1)} MiB`);
});

test('200 slow connections (headers byte by byte, never finished) leave /health and requests served', async () => {
  const slow = [];
  for (let i = 0; i < 200; ++i) {
    const s = net.connect(Number(port), hostname);
    s.on('error', () => {});
    slow.push(s);
  }
  await Promise.all(slow.map((s) => new Promise((r) => (s.connecting ? s.once('connect', r) : r()))));
  const head = `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ${'a'.repeat(1000)}`;
  let at = 0;
  const trickle = setInterval(() => {
    for (const s of slow) if (!s.destroyed) s.write(head[at % head.length]);
    ++at;
  }, 100);
  try {
    await sleep(1000);
    const latencies = [];
    for (let i = 0; i < 5; ++i) {
      const t = Date.now();
      const h = await health();
      latencies.push(Date.now() - t);
      assert.equal(h.status, 'ok');
    }
    console.log(`# /health latency with 200 slow connections open: ${latencies.join(', ')} ms`);
    const r = await post('/v1/chat/completions', chat({ max_tokens: 2 }));
    assert.equal(r.status, 200);
    assert.equal((await r.json()).usage.completion_tokens <= 2, true);
    assert.ok(slow.filter((s) => !s.destroyed).length > 150, 'the slow connections were still open');
  } finally {
    clearInterval(trickle);
    for (const s of slow) s.destroy();
  }
  await idle();
});

test('a streaming client that hangs up mid-stream cancels its sequence', async () => {
  const before = (await health()).totals;
  const { sock, received } = rawPost('/v1/chat/completions', chat({ max_tokens: 3000, stream: true }));
  const deadline = Date.now() + 60_000;
  while (!/"content":"[^"]/.test(received()) && Date.now() < deadline) await sleep(20);
  assert.match(received(), /HTTP\/1.1 200/);
  sock.destroy();
  const h = await idle();
  assert.equal(h.totals.cancelled, before.cancelled + 1);
  assert.equal(h.totals.completed, before.completed);
});

test('a non-streaming client that hangs up cancels its sequence', async () => {
  const before = (await health()).totals;
  const { sock } = rawPost('/v1/chat/completions', chat({ max_tokens: 3000 }));
  await waitFor((h) => h.totals.generated_tokens >= before.generated_tokens + 5, 'generation to start');
  sock.destroy();
  const h = await idle();
  assert.equal(h.totals.cancelled, before.cancelled + 1, 'cancelled, not run to max_tokens');
  assert.equal(h.totals.completed, before.completed);
  assert.ok(h.totals.generated_tokens - before.generated_tokens < 3000);
});

test('a simulated allocation failure fails only its request (500 / error event)', async () => {
  const before = (await health()).totals;
  for (const at of ['http', 'start', 'prefill', 'decode']) {
    const r = await post('/v1/chat/completions', chat({ max_tokens: 8, dsv4_test_fail_alloc: at }));
    const body = await r.json();
    assert.equal(r.status, 500, at);
    assert.match(body.error.message, /out of memory/, at);
    assert.equal(body.error.type, 'server_error');
  }
  for (const at of ['prefill', 'decode']) {
    const r = await post('/v1/chat/completions', chat({ max_tokens: 8, stream: true, dsv4_test_fail_alloc: at }));
    assert.equal(r.status, 200);
    const text = await r.text();
    assert.match(text, /"error":\{[^}]*out of memory/, at);
    assert.match(text, /data: \[DONE\]/);
  }
  const r = await post('/v1/messages', { model: 'm', max_tokens: 8, messages: [{ role: 'user', content: 'x' }], dsv4_test_fail_alloc: 'decode' });
  assert.equal(r.status, 500);
  assert.equal((await r.json()).error.type, 'api_error');
  const ok = await post('/v1/chat/completions', chat({ max_tokens: 4 }));
  assert.equal(ok.status, 200);
  const h = await idle();
  assert.equal(h.totals.failed, before.failed + 6);  // 'http' fails before the worker sees it
  const bad = await post('/v1/chat/completions', chat({ dsv4_test_fail_alloc: 'everywhere' }));
  assert.equal(bad.status, 400);
});

test('a prompt of 1000 short messages takes a few snapshots and prefill steps, not one per message', async () => {
  const messages = [];
  for (let i = 0; i < 1000; ++i) messages.push({ role: i % 2 ? 'assistant' : 'user', content: 'ok' });
  messages.push({ role: 'user', content: 'and now?' });
  const before = (await health()).memory;
  const t = Date.now();
  const r = await post('/v1/chat/completions', { model: 'm', messages, max_tokens: 1 });
  assert.equal(r.status, 200);
  const body = await r.json();
  console.log(`# 1001 messages, ${body.usage.prompt_tokens} prompt tokens: ${Date.now() - t} ms`);
  assert.ok(body.usage.prompt_tokens > 2000);
  const h = await health();
  assert.ok(h.memory.snapshots - before.snapshots <= 12, `${h.memory.snapshots - before.snapshots} snapshots`);
  assert.ok(h.memory.prefill_steps - before.prefill_steps <= 30, `${h.memory.prefill_steps - before.prefill_steps} prefill steps`);
  // The next turn still continues from the cache (the snapshot before the last turn).
  messages.push({ role: 'assistant', content: body.choices[0].message.content }, { role: 'user', content: 'more' });
  const next = await (await post('/v1/chat/completions', { model: 'm', messages, max_tokens: 1 })).json();
  assert.ok(next.usage.prompt_tokens_details.cached_tokens >= body.usage.prompt_tokens - 4, JSON.stringify(next.usage));
});

test('the memory budget: 400 for what can never fit, 429 while full, snapshots within it', async () => {
  // 4 MiB: more than one request of the synthetic model up to 1000 tokens needs (fixed rings and
  // buffers of about 3 MiB, 0.4 KB per token), less than two, and less than one of 4000 tokens.
  const s = await startServer({ bin, cache, extra: ['--memory-mb', '4', '--test-hooks', '--ctx', '4096'] });
  try {
    const never = await post('/v1/chat/completions', chat({ max_tokens: 4000 }), s.url);
    assert.equal(never.status, 400);
    assert.match((await never.json()).error.message, /memory budget is 4 MiB; lower max_tokens/);
    const ctrl = new AbortController();
    const running = await fetch(`${s.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, signal: ctrl.signal,
      body: JSON.stringify(chat({ max_tokens: 1000, stream: true })),
    });
    assert.equal(running.status, 200);
    const full = await post('/v1/messages', { model: 'm', max_tokens: 100, messages: [{ role: 'user', content: 'x' }] }, s.url);
    assert.equal(full.status, 429);
    assert.equal(full.headers.get('retry-after'), '1');
    const fullBody = await full.json();
    assert.equal(fullBody.error.type, 'rate_limit_error');
    assert.match(fullBody.error.message, /memory is full/);
    ctrl.abort();
    const h = await idle(s.url);
    assert.equal(h.memory.reserved_bytes, 0);
    const ok = await post('/v1/chat/completions', chat({ max_tokens: 100 }), s.url);
    assert.equal(ok.status, 200);
    const after = await idle(s.url);
    assert.ok(after.prefix_cache.bytes <= after.memory.budget_bytes);
    assert.equal(await s.stop(), 0);
  } finally {
    await s.stop('SIGKILL', 1000);
  }
});

test('SIGTERM during generation: requests in flight end, the server exits 0 within seconds', async () => {
  const s = await startServer({ bin, cache, extra: ['--test-hooks', '--parallel', '2'] });
  let stopped = false;
  try {
    const streaming = fetch(`${s.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(chat({ max_tokens: 4000, stream: true })),
    }).then(async (r) => ({ status: r.status, text: await r.text() })).catch((e) => ({ error: e }));
    const plain = post('/v1/chat/completions', chat({ max_tokens: 4000 }), s.url)
      .then(async (r) => ({ status: r.status, body: await r.json() })).catch((e) => ({ error: e }));
    await waitFor((h) => h.active === 2 && h.totals.generated_tokens > 10, 'both requests generating', s.url);
    const t = Date.now();
    const code = await s.stop('SIGTERM', 15_000);
    stopped = true;
    const ms = Date.now() - t;
    console.log(`# SIGTERM with 2 requests generating: exit ${code} after ${ms} ms`);
    assert.equal(code, 0);
    assert.ok(ms < 10_000, `exit took ${ms} ms`);
    const st = await streaming;
    assert.equal(st.error, undefined, 'the stream was cut off instead of ending with its last events');
    assert.equal(st.status, 200);
    assert.match(st.text, /shutting down|"finish_reason":"length"/);
    assert.match(st.text, /data: \[DONE\]/);
    const pl = await plain;
    assert.equal(pl.error, undefined, 'the non-streaming response was cut off');
    assert.equal(pl.status, 503);
    assert.match(pl.body.error.message, /shutting down/);
  } finally {
    if (!stopped) await s.stop('SIGKILL', 1000);
  }
});
