// Every flag of `dsv4 serve` end to end through the binary, quick enough for the ASan build
// (CTest server_flags_test, label unit; no npm packages needed):
//   node serve_flags.mjs --bin build/bin/dsv4 [--cache DIR]
// The flag list is read from `dsv4 serve --help`: a flag without a check here fails the test.
// Each server gets a request, then SIGTERM while requests are in flight, and must exit 0.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { serverEnv, startServer } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const opt = (name, def) => (args.includes(name) ? args[args.indexOf(name) + 1] : def);
const bin = path.resolve(opt('--bin', path.join(here, '../../build/bin/dsv4')));
const cache = opt('--cache', process.env.DSV4_CACHE);

// The flags this file exercises (each one's check is named in a comment below).
const COVERED = ['-h', '--help', '--model', '--host', '--port', '--api-key', '--parallel', '--queue', '--ctx',
  '--cache-mb', '--memory-mb', '--max-body-mb', '--default-max-tokens', '--served-model-name', '--numerics', '--mmap',
  '--no-mmap', '--test-hooks', '--test-completions', '--expert-cache-gb', '--kv-cache-dir', '--kv-cache-disk-gb',
  '--expert-parallel', '--ep-waves', '--ep-timeout'];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const MiB = 1024 * 1024;

test('every flag in `dsv4 serve --help` is covered here', () => {
  const r = spawnSync(bin, ['serve', '--help'], { encoding: 'utf8' });
  assert.equal(r.status, 0);  // --help, -h
  const flags = [];
  for (const line of r.stdout.split('\n')) {
    const m = /^\s+(-[\w-]+(?:,--[\w-]+)?)/.exec(line);
    if (m) flags.push(...m[1].split(','));
  }
  assert.ok(flags.length > 10, r.stdout);
  assert.deepEqual(flags.filter((f) => !COVERED.includes(f)), [], 'flags without an end-to-end check');
  assert.deepEqual(COVERED.filter((f) => !flags.includes(f)), [], 'checks of flags that no longer exist');
});

test('bad serve arguments: one error line naming the problem, non-zero exit', () => {
  const cases = [
    [['--port', '70000'], /--port/], [['--port'], /--port/], [['--parallel', '0'], /--parallel/],
    [['--queue', '-1'], /--queue/], [['--ctx', '0'], /--ctx/], [['--cache-mb', '-5'], /--cache-mb/],
    [['--memory-mb', '0'], /--memory-mb/], [['--max-body-mb', '2000'], /--max-body-mb/],
    [['--default-max-tokens', '0'], /--default-max-tokens/], [['--numerics', 'fp3'], /--numerics/],
    [['--mmap', '--no-mmap'], /excludes/], [['--expert-cache-gb', '0'], /--expert-cache-gb/],
    [['--expert-cache-gb', '1', '--mmap'], /excludes/], [['--bogus'], /--bogus/], [['--api-key'], /--api-key/],
    [['--served-model-name'], /--served-model-name/], [['--expert-parallel', '--ep-waves', '0'], /--ep-waves/],
    [['--ep-timeout', '0'], /--ep-timeout/],
    [['--model', '/nonexistent-dsv4-model'], /nonexistent-dsv4-model/],
    [['--host', '256.1.1.1', '--port', '0'], /cannot listen on 256\.1\.1\.1/],
    [['--kv-cache-disk-gb', '1'], /--kv-cache-disk-gb requires --kv-cache-dir/], [['--kv-cache-dir'], /--kv-cache-dir/],
    [['--kv-cache-dir', '/tmp', '--kv-cache-disk-gb', '0'], /--kv-cache-disk-gb/],
    [['--kv-cache-dir', '/proc/dsv4-nonexistent/kv', '--port', '0'], /--kv-cache-dir \/proc\/dsv4-nonexistent\/kv: cannot create/],
  ];
  for (const [a, want] of cases) {
    const r = spawnSync(bin, ['serve', ...a], { encoding: 'utf8', env: serverEnv(cache), timeout: 300_000 });
    const what = `dsv4 serve ${a.join(' ')}: ${r.stderr}`;
    assert.ok(r.status !== 0 && r.status !== null, what);
    const errors = r.stderr.split('\n').filter((l) => /error/i.test(l));
    assert.equal(errors.length, 1, what);
    assert.match(errors[0], /^dsv4( serve)?: error: /, what);
    assert.match(errors[0], want, what);
  }
});

test('serve with every flag: each one has its effect; SIGTERM mid-generation exits 0', async () => {
  const key = 'flags-key';
  const script = path.join(mkdtempSync(path.join(tmpdir(), 'dsv4-flags-')), 'script.json');
  writeFileSync(script, JSON.stringify([{ match: 'scripted-probe', completion: 'ok' }]));
  const kvDir = path.join(path.dirname(script), 'kv');
  const s = await startServer({
    bin, cache, extra: ['--api-key', key, '--parallel', '2', '--queue', '1', '--ctx', '512', '--cache-mb', '8',
      '--memory-mb', '64', '--max-body-mb', '1', '--default-max-tokens', '3', '--served-model-name', 'flags-model',
      '--numerics', 'reference', '--no-mmap', '--test-hooks', '--test-completions', script,
      '--kv-cache-dir', kvDir, '--kv-cache-disk-gb', '0.5'],
  });
  let stopped = false;
  try {
    const auth = { 'x-api-key': key, 'Content-Type': 'application/json' };
    const post = (p, body, signal) => fetch(`${s.url}${p}`, { method: 'POST', headers: auth, body: JSON.stringify(body), signal });
    assert.equal((await fetch(`${s.url}/health`)).status, 401);  // --api-key
    const h = await (await fetch(`${s.url}/health`, { headers: auth })).json();  // --host 127.0.0.1, --port
    assert.equal(h.max_context, 512);  // --ctx
    assert.equal(h.prefix_cache.max_bytes, 8 * MiB);  // --cache-mb
    assert.equal(h.memory.budget_bytes, 64 * MiB);  // --memory-mb
    assert.equal(h.model, 'flags-model');  // --served-model-name
    const models = await (await fetch(`${s.url}/v1/models`, { headers: auth })).json();
    assert.equal(models.data[0].id, 'flags-model');
    // --default-max-tokens and --test-hooks: a forced answer longer than 3 tokens is cut at 3.
    const forced = await post('/v1/chat/completions', {
      messages: [{ role: 'user', content: 'count' }], dsv4_test_completion: 'one two three four five six seven eight',
    });
    assert.equal(forced.status, 200);
    const fb = await forced.json();
    assert.equal(fb.usage.completion_tokens, 3);
    assert.equal(fb.choices[0].finish_reason, 'length');
    assert.equal(fb.choices[0].message.content, 'one two three');
    // --test-completions: a request whose prompt holds the entry's match gets the scripted text.
    const scripted = await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'scripted-probe' }] });
    assert.equal(scripted.status, 200);
    assert.equal((await scripted.json()).choices[0].message.content, 'ok');
    // --kv-cache-dir, --kv-cache-disk-gb 0.5: the finished requests' states are written there.
    for (let i = 0; ; ++i) {
      const d = (await (await fetch(`${s.url}/health`, { headers: auth })).json()).disk_cache;
      assert.equal(d.max_bytes, 0.5 * 1024 * MiB);
      if (d.writes >= 2 && readdirSync(kvDir).filter((f) => f.endsWith('.dsv4kv')).length === d.files) break;
      assert.ok(i < 600, JSON.stringify(d));
      await sleep(50);
    }
    // --max-body-mb 1
    const big = await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'x'.repeat(1.5 * MiB) }] });
    assert.equal(big.status, 413);
    // --ctx 512: a longer prompt is refused.
    const long = await post('/v1/completions', { prompt: Array(600).fill(100), max_tokens: 1 });
    assert.equal(long.status, 400);
    assert.match((await long.json()).error.message, /context holds 512/);
    // --parallel 2 --queue 1: two run, one waits, a fourth is refused.
    const streams = [];
    for (let i = 0; i < 3; ++i) {
      const r = await post('/v1/chat/completions', { messages: [{ role: 'user', content: `story ${i}` }], max_tokens: 480, stream: true });
      assert.equal(r.status, 200);
      streams.push(r.text());
    }
    for (let i = 0; ; ++i) {
      const st = await (await fetch(`${s.url}/health`, { headers: auth })).json();
      if (st.active === 2 && st.queued === 1 && st.totals.generated_tokens > 0) break;
      assert.ok(i < 1200, JSON.stringify(st));
      await sleep(50);
    }
    const refused = await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], max_tokens: 4 });
    assert.equal(refused.status, 429);
    assert.match((await refused.json()).error.message, /busy: 2 requests running and 1 queued/);
    // SIGTERM with two streams generating and one queued: each ends with an error event.
    const code = await s.stop('SIGTERM', 60_000);
    stopped = true;
    assert.equal(code, 0, s.log());
    for (const text of await Promise.all(streams)) {
      assert.match(text, /shutting down/);
      assert.match(text, /data: \[DONE\]/);
    }
  } finally {
    if (!stopped) await s.stop('SIGKILL', 1000);
  }
});

test('serve --port 0 --mmap --numerics plain (no --test-hooks): a request, then SIGTERM exits 0', async () => {
  const s = await startServer({ bin, cache, anyPort: true, extra: ['--mmap', '--numerics', 'plain'] });
  let stopped = false;
  try {
    assert.notEqual(new URL(s.url).port, '0');  // --port 0: a free port, reported
    const post = (body) => fetch(`${s.url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    const r = await post({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 });
    assert.equal(r.status, 200);
    assert.ok((await r.json()).usage.completion_tokens >= 1);
    const hook = await post({ messages: [{ role: 'user', content: 'hi' }], dsv4_test_completion: 'x' });
    assert.equal(hook.status, 400);
    assert.match((await hook.json()).error.message, /--test-hooks/);
    const code = await s.stop('SIGTERM', 60_000);
    stopped = true;
    assert.equal(code, 0, s.log());
  } finally {
    if (!stopped) await s.stop('SIGKILL', 1000);
  }
});

// --expert-cache-gb: routed experts streamed from disk through a cache of 8 experts, shared by
// three sequences decoding together; every greedy answer equals the resident server's (issue 16).
test('serve --expert-cache-gb --parallel 3: concurrent greedy answers equal the resident ones', async () => {
  const answers = async (extra) => {
    const s = await startServer({ bin, cache, anyPort: true, extra: ['--parallel', '3', ...extra] });
    try {
      const post = (i) => fetch(`${s.url}/v1/chat/completions`, {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ messages: [{ role: 'user', content: `tell me about ${i}` }], max_tokens: 24, temperature: 0 }),
      });
      const rs = await Promise.all([0, 1, 2].map(post));
      const out = [];
      for (const r of rs) {
        assert.equal(r.status, 200);
        const j = await r.json();
        assert.ok(j.usage.completion_tokens >= 1);
        out.push(j.choices[0].message.content);
      }
      assert.equal(await s.stop('SIGTERM', 60_000), 0, s.log());
      return out;
    } catch (e) {
      await s.stop('SIGKILL', 1000);
      throw e;
    }
  };
  const resident = await answers([]);
  const streamed = await answers(['--expert-cache-gb', '0.0005']);
  assert.deepEqual(streamed, resident);
});

// --expert-parallel (with --ep-waves, --ep-timeout) under `mpirun -np 2` (DSV4_TEST_MPIEXEC, set
// by CTest in a -DDSV4_MPI=ON build): rank 0 answers exactly what one process answers. Without
// MPI the flag is one clear error.
test('serve --expert-parallel --ep-waves 2 --ep-timeout 60 under mpirun -np 2 answers as one process', async () => {
  const mpiexec = process.env.DSV4_TEST_MPIEXEC;
  const extra = ['--expert-parallel', '--ep-waves', '2', '--ep-timeout', '60'];
  if (!mpiexec && process.env.DSV4_TEST_MPI_BUILT) {
    // The sanitizer build: mpirun cases run in the release build (docs/distributed.md); here the
    // flags' argument checks (the bad-argument test above) are what runs.
    return;
  }
  if (!mpiexec) {
    const r = spawnSync(bin, ['serve', ...extra], { encoding: 'utf8', env: serverEnv(cache), timeout: 300_000 });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /^dsv4: error: --expert-parallel: this dsv4 was built without MPI/);
    return;
  }
  const body = { messages: [{ role: 'user', content: 'Tell me about experts' }], max_tokens: 8, temperature: 0 };
  const ask = async (s) => {
    const r = await fetch(`${s.url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    assert.equal(r.status, 200);
    return (await r.json()).choices[0].message.content;
  };
  const one = await startServer({ bin, cache });
  let want;
  try {
    want = await ask(one);
  } finally {
    await one.stop('SIGTERM', 60_000);
  }
  const ep = await startServer({
    bin, cache, extra,
    launcher: [mpiexec, '--oversubscribe', '--mca', 'btl', 'self,vader', '--mca', 'oob_tcp_if_include', 'lo', '-np', '2'],
    launcherEnv: { OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' },
  });
  try {
    assert.equal(await ask(ep), want, ep.log());
  } finally {
    await ep.stop('SIGKILL', 1000);
  }
});
