// `dsv4 serve --kv-cache-dir` across a crash, through the binary with plain fetch (CTest
// kv_cache_restart_test, label unit: runs in the ASan build too; no npm packages):
//   node kv_cache_restart.mjs --bin build/bin/dsv4 [--cache DIR]
// In both numerics, on the synthetic model (every layer type), a two-turn chat at temperature 0:
// - turn 1 → kill -9 → restart on the same directory → turn 2 reports cached tokens from the
//   disk (a disk hit in /health) and answers with the same tokens AND the same logprobs (top 3
//   too) as a server that never stopped; the restarted server keeps nothing in memory
//   (--cache-mb 0), and the Anthropic and Responses APIs report their disk hits as cached too;
// - the directory's files damaged (flipped bits mid-file, truncated, the other numerics' files
//   under these names) → skipped, deleted and counted in /health, and turn 2's answer is still
//   the same tokens.
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startServer } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const opt = (name, def) => (args.includes(name) ? args[args.indexOf(name) + 1] : def);
const bin = path.resolve(opt('--bin', path.join(here, '../../build/bin/dsv4')));
const cache = opt('--cache', process.env.DSV4_CACHE);
const root = mkdtempSync(path.join(tmpdir(), 'dsv4-kvcache-'));
after(() => rmSync(root, { recursive: true, force: true }));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const NUMERICS = ['reference', 'plain'];

const turn1 = [{ role: 'user', content: 'Tell me a story about a lighthouse keeper and a storm at sea, in three sentences.' }];
const turn2 = (answer) => [...turn1, { role: 'assistant', content: answer }, { role: 'user', content: 'And what happened the next morning?' }];

async function chat(s, messages) {
  const r = await fetch(`${s.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ messages, max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 3 }),
  });
  assert.equal(r.status, 200);
  const b = await r.json();
  return { text: b.choices[0].message.content, logprobs: b.choices[0].logprobs.content, cached: b.usage.prompt_tokens_details.cached_tokens };
}
const health = async (s) => (await fetch(`${s.url}/health`)).json();

async function serve(numerics, dir, extra = []) {
  return startServer({ bin, cache, extra: ['--numerics', numerics, '--kv-cache-dir', dir, '--kv-cache-disk-gb', '1', ...extra] });
}

// Turn 2 through the Anthropic Messages and the Responses API: the cached-token count each reports.
async function otherApis(s, answer) {
  const post = async (p, body) => {
    const r = await fetch(`${s.url}${p}`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    assert.equal(r.status, 200);
    return r.json();
  };
  const m = await post('/v1/messages', { model: 'm', max_tokens: 4, temperature: 0, messages: turn2(answer) });
  const r = await post('/v1/responses', { model: 'm', max_output_tokens: 4, temperature: 0, input: turn2(answer) });
  return { anthropic: m.usage.cache_read_input_tokens, responses: r.usage.input_tokens_details.cached_tokens };
}

// Waits until every snapshot the memory cache took (message boundaries and finished requests)
// is on disk. The worker's counters are published after each step while the disk counters are
// live, so the count is only complete once the `completed` requests show as completed: before
// that, an early boundary snapshot's write could satisfy it while the final state is unqueued.
async function waitForWrites(s, completed) {
  for (let i = 0; ; ++i) {
    const h = await health(s);
    const d = h.disk_cache;
    if (h.totals.completed >= completed && d.writes + d.skipped >= h.memory.snapshots + h.totals.completed)
      return d.writes;
    assert.ok(i < 600, JSON.stringify(h));
    await sleep(50);
  }
}

const files = (dir) => readdirSync(dir).filter((f) => f.endsWith('.dsv4kv')).sort();
function copyDir(from, to) {
  rmSync(to, { recursive: true, force: true });
  mkdirSync(to, { recursive: true });
  for (const f of files(from)) copyFileSync(path.join(from, f), path.join(to, f));
}

const reference = {};  // numerics → { first, second: the never-stopped server's turns }
const pristine = {};   // numerics → the crashed server's directory, as it was

for (const numerics of NUMERICS) {
  test(`${numerics}: turn 2 after kill -9 continues from disk exactly like a server that never stopped`, async () => {
    const steady = await serve(numerics, path.join(root, `steady-${numerics}`));
    let first, second;
    try {
      first = await chat(steady, turn1);
      second = await chat(steady, turn2(first.text));
      assert.ok(second.cached > 0, 'the never-stopped server reuses turn 1 from memory');
    } finally {
      await steady.stop();
    }
    reference[numerics] = { first, second };

    const dir = path.join(root, `crash-${numerics}`);
    const a = await serve(numerics, dir);
    const again = await chat(a, turn1);
    assert.deepEqual(again, first);
    assert.ok((await waitForWrites(a, 1)) >= 1);
    assert.equal(await a.stop('SIGKILL'), 'SIGKILL');
    assert.ok(files(dir).length >= 1);
    copyDir(dir, path.join(root, `pristine-${numerics}`));
    pristine[numerics] = path.join(root, `pristine-${numerics}`);

    // --cache-mb 0: nothing is kept in memory, every hit comes from the disk.
    const b = await serve(numerics, dir, ['--cache-mb', '0']);
    try {
      const h0 = await health(b);
      assert.equal(h0.disk_cache.files, files(dir).length);  // the index rebuilt from the directory
      assert.equal(h0.prefix_cache.entries, 0);  // nothing in memory: a fresh process
      const restored = await chat(b, turn2(first.text));
      assert.equal(restored.cached, second.cached, 'the same prefix as the never-stopped server, from disk');
      assert.equal(restored.text, second.text);
      assert.deepEqual(restored.logprobs, second.logprobs);  // same tokens, bit-identical logprobs (top 3 too)
      const h = await health(b);
      assert.equal(h.disk_cache.hits, 1);
      assert.equal(h.disk_cache.damaged, 0);
      assert.ok(h.disk_cache.bytes > 0 && h.disk_cache.bytes <= h.disk_cache.max_bytes);
      assert.equal(h.disk_cache.max_bytes, 2 ** 30);  // --kv-cache-disk-gb 1
      // The other APIs report their disk hits too.
      const other = await otherApis(b, first.text);
      assert.ok(other.anthropic > 0 && other.responses > 0, JSON.stringify(other));
      assert.equal((await health(b)).disk_cache.hits, 3);
    } finally {
      await b.stop();
    }
  });
}

// Damage: each kind applied to every file of the crashed server's directory.
const damages = {
  'flipped bit mid-file': (name, bytes) => {
    bytes[bytes.length >> 1] ^= 0x08;
    return bytes;
  },
  truncated: (name, bytes) => bytes.subarray(0, Math.floor(bytes.length * 0.6)),
  // A valid state file, but of the other numerics (a different rounding of the same model).
  'other numerics': (name, bytes, numerics) => {
    const other = pristine[numerics === 'reference' ? 'plain' : 'reference'];
    return readFileSync(path.join(other, files(other)[0]));
  },
};

for (const numerics of NUMERICS) {
  for (const [what, damage] of Object.entries(damages)) {
    test(`${numerics}: ${what} files are skipped, deleted and counted; the answer is unchanged`, async () => {
      assert.ok(pristine.reference && pristine.plain, 'the restart tests ran first');
      const dir = path.join(root, `damaged-${numerics}-${what.replace(/\W+/g, '-')}`);
      copyDir(pristine[numerics], dir);
      const names = files(dir);
      for (const f of names) writeFileSync(path.join(dir, f), damage(f, readFileSync(path.join(dir, f)), numerics));
      const s = await serve(numerics, dir);
      try {
        const r = await chat(s, turn2(reference[numerics].first.text));
        assert.equal(r.cached, 0);
        assert.equal(r.text, reference[numerics].second.text);
        const h = await health(s);
        assert.equal(h.disk_cache.hits, 0);
        // Rejected at start (header / token section) or when the request loads the file.
        assert.ok(h.disk_cache.damaged >= 1, JSON.stringify(h.disk_cache));
        if (what === 'other numerics') assert.equal(h.disk_cache.damaged, names.length);
        assert.match(s.log(), /kv cache: deleted a damaged file: .*(checksum mismatch|truncated|numerics)/);
      } finally {
        await s.stop();
      }
    });
  }
}
