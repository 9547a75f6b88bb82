// Time to first token of a coding agent's prompt on `dsv4 serve --model synthetic` (default context):
// turn 1 (nothing cached) and turn 2 (the same conversation plus one more tool round trip, which
// continues from turn 1's prefix-cache snapshot).
//
//   node bench/agent_prompt.mjs [--bin build/bin/dsv4] [--runs 3] [--tokens 20000]
//
// The prompt is Claude Code's own: the script records the request that the pinned Claude Code
// (tests/clients, `npm ci` there first) sends to a stub endpoint on loopback — its system text and
// tool schemas — and extends its conversation with a Read tool round trip whose result (made-up
// source lines) brings the prompt to --tokens. Each run puts a fresh nonce at the start of the
// system text, so turn 1 finds nothing in the prefix cache. Turns are streamed Messages requests
// with scripted one-word answers (--test-hooks); TTFT = request sent → first content delta.
// Prints one line per run and the medians, with the load average before and after and the
// server's CPU time per turn (a figure that a busy machine inflates less than the wall time).
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const clients = path.join(here, '../tests/clients');
const { startServer } = await import(path.join(clients, 'server.mjs'));
const { offlineProxies, runAgent } = await import(path.join(clients, 'agent_util.mjs'));

const args = process.argv.slice(2);
const opt = (name, def) => (args.includes(name) ? args[args.indexOf(name) + 1] : def);
const bin = path.resolve(opt('--bin', path.join(here, '../build/bin/dsv4')));
const runs = Number(opt('--runs', '3')), target = Number(opt('--tokens', '20000'));

// A stub Messages endpoint that answers everything with "ok" and keeps the request bodies.
async function recordClaudeCode() {
  const bodies = [];
  const stub = http.createServer((req, res) => {
    let data = '';
    req.on('data', (c) => (data += c));
    req.on('end', () => {
      if (req.url.startsWith('/v1/messages/count_tokens')) return res.end(JSON.stringify({ input_tokens: 1000 }));
      const body = JSON.parse(data);
      bodies.push(body);
      const msg = { id: 'msg_stub', type: 'message', role: 'assistant', model: body.model, content: [],
        stop_reason: null, stop_sequence: null, usage: { input_tokens: 1, output_tokens: 0 } };
      if (!body.stream) {
        res.setHeader('content-type', 'application/json');
        return res.end(JSON.stringify({ ...msg, content: [{ type: 'text', text: 'ok' }], stop_reason: 'end_turn' }));
      }
      res.setHeader('content-type', 'text/event-stream');
      const ev = (e) => res.write(`event: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`);
      ev({ type: 'message_start', message: msg });
      ev({ type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } });
      ev({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'ok' } });
      ev({ type: 'content_block_stop', index: 0 });
      ev({ type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 1 } });
      ev({ type: 'message_stop' });
      res.end();
    });
  });
  await new Promise((r) => stub.listen(0, '127.0.0.1', r));
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'dsv4-bench-claude-'));
  const home = path.join(tmp, 'home'), work = path.join(tmp, 'work');
  mkdirSync(home);
  mkdirSync(work);
  try {
    const env = { PATH: process.env.PATH, HOME: home, ANTHROPIC_BASE_URL: `http://127.0.0.1:${stub.address().port}`,
      ANTHROPIC_API_KEY: 'sk-bench', DISABLE_TELEMETRY: '1', DISABLE_ERROR_REPORTING: '1', DISABLE_AUTOUPDATER: '1',
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1', ...offlineProxies };
    const wrapper = path.join(clients, 'node_modules/@anthropic-ai/claude-code/cli-wrapper.cjs');
    const r = await runAgent(process.execPath, [wrapper, '-p', 'Read src/main.c and explain it.', '--model', 'dsv4'], { cwd: work, env });
    if (r.code !== 0) throw new Error(`claude exited with ${r.code}: ${r.stderr}`);
  } finally {
    stub.close();
    rmSync(tmp, { recursive: true, force: true });
  }
  const withTools = bodies.filter((b) => Array.isArray(b.tools) && b.tools.length > 0);
  if (!withTools.length) throw new Error('Claude Code sent no request with tools');
  return withTools.sort((a, b) => JSON.stringify(b).length - JSON.stringify(a).length)[0];
}

// Made-up C source lines, deterministic: the tool result that fills the prompt.
function sourceText(lines) {
  const out = [];
  for (let i = 0; i < lines; ++i)
    out.push(`static int step_${i}(struct state *s, int x) { return s->table[${(i * 37) % 251}] + x * ${i % 13}; }`);
  return out.join('\n');
}

const readUse = (id, file) => ({ type: 'tool_use', id, name: 'Read', input: { file_path: file } });
const toolResult = (id, text) => ({ type: 'tool_result', tool_use_id: id, content: text });

// Turn 1's body: Claude Code's request, a nonce first in the system text, then a Read round
// trip whose result has `lines` lines.
function turn1(recorded, nonce, lines) {
  const system = typeof recorded.system === 'string' ? [{ type: 'text', text: recorded.system }] : recorded.system ?? [];
  const messages = [...recorded.messages,
    { role: 'assistant', content: [readUse('toolu_1', '/work/src/main.c')] },
    { role: 'user', content: [toolResult('toolu_1', sourceText(lines))] }];
  return { ...recorded, system: [{ type: 'text', text: `Session ${nonce}.` }, ...system], messages, max_tokens: 64, stream: true };
}

function turn2(body1, answer) {
  return { ...body1, messages: [...body1.messages,
    { role: 'assistant', content: [{ type: 'text', text: answer }, readUse('toolu_2', '/work/src/util.c')] },
    { role: 'user', content: [toolResult('toolu_2', sourceText(20))] }] };
}

// Streams one request; resolves with TTFT (ms) and message_start's usage.
async function timed(url, body, completion) {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/messages`, { method: 'POST', headers: { 'content-type': 'application/json',
    'anthropic-version': '2023-06-01' }, body: JSON.stringify({ ...body, dsv4_test_completion: completion }) });
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  let ttft = null, usage = null, buf = '';
  const dec = new TextDecoder();
  for await (const chunk of res.body) {
    buf += dec.decode(chunk, { stream: true });
    for (let i; (i = buf.indexOf('\n\n')) >= 0; buf = buf.slice(i + 2)) {
      const line = buf.slice(0, i).split('\n').find((l) => l.startsWith('data: '));
      if (!line) continue;
      const e = JSON.parse(line.slice(6));
      if (e.type === 'message_start') usage = e.message.usage;
      if (e.type === 'content_block_delta' && ttft === null) ttft = performance.now() - t0;
    }
  }
  return { ttft, usage };
}

async function countTokens(url, body) {
  const { stream, max_tokens, ...rest } = body;
  const res = await fetch(`${url}/v1/messages/count_tokens`, { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify(rest) });
  return (await res.json()).input_tokens;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
// CPU seconds the server has used (user + system, /proc): what a turn costs regardless of load.
const cpuSeconds = (pid) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;  // utime, stime in clock ticks (USER_HZ 100)
};
const load = () => os.loadavg().map((x) => x.toFixed(2)).join(' ');

const recorded = await recordClaudeCode();
const server = await startServer({ bin, cache: process.env.DSV4_CACHE, extra: ['--test-hooks'] });
try {
  const base = await countTokens(server.url, turn1(recorded, 'x', 0));
  const perLine = ((await countTokens(server.url, turn1(recorded, 'x', 100))) - base) / 100;
  const lines = Math.max(0, Math.round((target - base) / perLine));  // the tool result that reaches --tokens
  // count_tokens parses, renders and tokenizes the request, as a turn does before prefill.
  const counted = [];
  let total = 0;
  for (let i = 0; i < 3; ++i) {
    const t0 = performance.now();
    total = await countTokens(server.url, turn1(recorded, `count-${i}`, lines));
    counted.push(performance.now() - t0);
  }
  console.log(`Claude Code request: ${JSON.stringify(recorded).length} bytes JSON, ${recorded.tools.length} tools, ` +
    `${base} tokens; with a ${lines}-line tool result: ${total} tokens (count_tokens: ${median(counted).toFixed(0)} ms). ` +
    `${os.cpus().length} CPUs, load ${load()}`);
  const t1 = [], t2 = [], c1 = [], c2 = [];
  const turn = async (body, completion, times, cpus) => {
    const cpu0 = cpuSeconds(server.pid);
    const r = await timed(server.url, body, completion);
    times.push(r.ttft / 1000);
    cpus.push(cpuSeconds(server.pid) - cpu0);
    const u = r.usage;
    return `TTFT ${times.at(-1).toFixed(2)} s, server CPU ${cpus.at(-1).toFixed(1)} s (cached ${u.cache_read_input_tokens} of ` +
      `${u.input_tokens + u.cache_read_input_tokens})`;
  };
  for (let r = 0; r < runs; ++r) {
    const b1 = turn1(recorded, `${process.pid}-${r}-${Date.now()}`, lines);
    const a = await turn(b1, 'Reading util.c next.', t1, c1);
    const b = await turn(turn2(b1, 'Reading util.c next.'), 'Done.', t2, c2);
    console.log(`run ${r + 1}: turn 1 ${a}; turn 2 ${b}`);
  }
  console.log(`median of ${runs}: turn 1 TTFT ${median(t1).toFixed(2)} s (CPU ${median(c1).toFixed(1)} s), ` +
    `turn 2 TTFT ${median(t2).toFixed(2)} s (CPU ${median(c2).toFixed(1)} s); load ${load()}`);
} finally {
  await server.stop();
}
