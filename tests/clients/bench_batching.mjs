// Measures what batching buys: N requests one after another vs all N at once (total generated
// tokens per second), on the synthetic model. Not a test (timings are machine-dependent):
//   node tests/clients/bench_batching.mjs --bin build/bin/dsv4 [--n 4] [--tokens 48]
import path from 'node:path';
import { startServer } from './server.mjs';

const args = process.argv.slice(2);
const opt = (name, def) => (args.includes(name) ? args[args.indexOf(name) + 1] : def);
const n = Number(opt('--n', 4)), tokens = Number(opt('--tokens', 48));
const server = await startServer({ bin: path.resolve(opt('--bin', 'build/bin/dsv4')), cache: opt('--cache', process.env.DSV4_CACHE),
  extra: ['--parallel', String(n), '--cache-mb', '0'] });
const ask = async (i) => {
  const r = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ prompt: `Request number ${i}: tell me a story about`, max_tokens: tokens, temperature: 0 }) });
  return (await r.json()).usage.completion_tokens;
};
try {
  await ask(-1);  // warm-up
  let t = performance.now(), seqTok = 0;
  for (let i = 0; i < n; i++) seqTok += await ask(i);
  const seq = seqTok / ((performance.now() - t) / 1000);
  t = performance.now();
  const parTok = (await Promise.all(Array.from({ length: n }, (_, i) => ask(i)))).reduce((a, b) => a + b, 0);
  const par = parTok / ((performance.now() - t) / 1000);
  console.log(`sequential: ${seqTok} tokens, ${seq.toFixed(1)} tok/s; ${n} parallel: ${parTok} tokens, ${par.toFixed(1)} tok/s; ` +
    `speed-up ${(par / seq).toFixed(2)}x`);
} finally {
  await server.stop();
}
