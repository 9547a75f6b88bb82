// Aggregate decode speed of `dsv4 serve` with N streaming clients at once (issue 19: the server's
// throughput against `dsv4 bench --batch N` on the same checkpoint). Each client is the `openai`
// npm package (tests/clients: `npm ci` there first) streaming a /v1/completions request with its
// own prompt; every content delta is timestamped. The decode rate of a round is the deltas that
// arrive while all N streams are decoding (from the last stream's first delta to the first
// stream's last) over that window, so the prompts' prefill is not counted. Not a test: timings.
//
//   node bench/serve_throughput.mjs --model DIR [--bin build/bin/dsv4] [--n 1,2,4,8] [--tokens 48] [--rounds 3]
//
// A delta is normally one token; one that ends inside a UTF-8 character is held back and merged
// with the next, so the rate can read slightly low (the usage counts are printed beside it).
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '../tests/clients/package.json'));
const OpenAI = require('openai');

const args = process.argv.slice(2);
const opt = (name, def) => (args.includes(name) ? args[args.indexOf(name) + 1] : def);
const bin = path.resolve(opt('--bin', path.join(here, '../build/bin/dsv4')));
const model = opt('--model', null);
if (!model) {
  console.error('serve_throughput: --model DIR is required');
  process.exit(2);
}
const ns = opt('--n', '1,2,4,8').split(',').map(Number);
const tokens = Number(opt('--tokens', '48')), rounds = Number(opt('--rounds', '3'));
const median = (v) => [...v].sort((a, b) => a - b)[Math.floor((v.length - 1) / 2)];

const freePort = () => new Promise((resolve) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => {
    const { port } = s.address();
    s.close(() => resolve(port));
  });
});

async function startServer(parallel) {
  const port = await freePort();
  const child = spawn(bin, ['serve', '--model', path.resolve(model), '--host', '127.0.0.1', '--port', String(port),
    '--parallel', String(parallel)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => (log += d));
  const url = `http://127.0.0.1:${port}`;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`dsv4 serve exited (${child.exitCode}):\n${log}`);
    try {
      if ((await fetch(`${url}/v1/models`)).ok) return { child, url };
    } catch {}
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function stream(client, i) {
  const times = [];
  let usage = null;
  const s = await client.completions.create({ model: 'dsv4', prompt: `Client ${i} asks: tell me a long story about`,
    max_tokens: tokens, temperature: 0, stream: true, stream_options: { include_usage: true } });
  for await (const chunk of s) {
    if (chunk.choices?.[0]?.text) times.push(performance.now());
    if (chunk.usage) usage = chunk.usage;
  }
  return { times, tokens: usage?.completion_tokens ?? times.length };
}

async function round(client, n) {
  const res = await Promise.all(Array.from({ length: n }, (_, i) => stream(client, i + n * 100)));
  const t0 = Math.max(...res.map((r) => r.times[0])), t1 = Math.min(...res.map((r) => r.times.at(-1)));
  const inWindow = res.reduce((a, r) => a + r.times.filter((t) => t > t0 && t <= t1).length, 0);
  return { rate: t1 > t0 ? inWindow / ((t1 - t0) / 1000) : NaN, tokens: res.map((r) => r.tokens) };
}

const server = await startServer(Math.max(...ns));
try {
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'none' });
  await round(client, 1);  // warm-up
  for (const n of ns) {
    const rates = [];
    let toks = [];
    for (let r = 0; r < rounds; r++) {
      const o = await round(client, n);
      rates.push(o.rate);
      toks = o.tokens;
    }
    console.log(`N=${n}: ${median(rates).toFixed(2)} tok/s aggregate decode (median of ${rounds}: ` +
      `${rates.map((x) => x.toFixed(2)).join(', ')}); completion tokens per client ${toks.join(' ')}`);
  }
} finally {
  server.child.kill('SIGTERM');
}
