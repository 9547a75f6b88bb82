// Claude Code (`@anthropic-ai/claude-code`, pinned in package.json) completes a real tool round
// trip against `dsv4 serve` in print mode: the synthetic model, with scripted completions
// (--test-completions), asks for the Read tool on a file in a temporary directory; Claude Code
// reads it, sends the result back, and prints the scripted final answer. Loopback only:
// telemetry, error reporting, auto-update and other non-essential traffic are switched off
// through Claude Code's documented environment variables, outbound proxies point at a closed
// loopback port, and HOME is a fresh directory.
//
// Its prompt (system text and 12 tool schemas) is about 11.7K tokens: the server runs with the
// synthetic model's default context (65536 tokens), as a user would start it.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { offlineProxies, runAgent } from './agent_util.mjs';
import { startServer } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const wrapper = path.join(here, 'node_modules/@anthropic-ai/claude-code/cli-wrapper.cjs');

test('claude -p: Read tool round trip with prefix reuse', { timeout: 300_000 }, async () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'dsv4-claude-'));
  const work = path.join(tmp, 'work'), home = path.join(tmp, 'home');
  mkdirSync(work);
  mkdirSync(home);
  const note = path.join(work, 'note.txt');
  writeFileSync(note, 'secret: 42\n');
  // Claude Code asks for adaptive thinking: the completions start inside <think>.
  const call = '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="Read">\n' +
    `<｜DSML｜parameter name="file_path" string="true">${note}</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>`;
  const script = path.join(tmp, 'completions.json');
  writeFileSync(script, JSON.stringify(['I will read the note.</think>' + call, 'Read it.</think>The note says the secret is 42.']));

  const server = await startServer({ bin: process.env.DSV4_BIN, cache: process.env.DSV4_CACHE,
    extra: ['--test-hooks', '--test-completions', script] });
  try {
    const env = { PATH: process.env.PATH, HOME: home, ANTHROPIC_BASE_URL: server.url, ANTHROPIC_API_KEY: 'sk-dsv4-test',
      DISABLE_TELEMETRY: '1', DISABLE_ERROR_REPORTING: '1', DISABLE_AUTOUPDATER: '1',
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1', CLAUDE_CODE_AUTO_COMPACT_WINDOW: '65536',
      ...offlineProxies };
    const r = await runAgent(process.execPath, [wrapper, '-p', 'Read note.txt and tell me the secret.', '--model', 'dsv4-synthetic'],
      { cwd: work, env });
    assert.equal(r.code, 0, `claude exited with ${r.code} (${r.signal}):\n${r.stdout}\n${r.stderr}\n${server.log()}`);
    assert.equal(r.stdout.trim(), 'The note says the secret is 42.');

    // Two requests: the second (with the tool result) continued from the first one's prefix.
    const h = await (await fetch(`${server.url}/health`)).json();
    assert.equal(h.max_context, 65536, 'the synthetic model\'s default context');
    assert.equal(h.totals.completed, 2, JSON.stringify(h));
    assert.ok(h.prefix_cache.hits >= 1 && h.totals.prompt_tokens_cached > 10_000, JSON.stringify(h));
  } finally {
    assert.equal(await server.stop(), 0);
    rmSync(tmp, { recursive: true, force: true });
  }
});
