// Codex CLI (`@openai/codex`, pinned in package.json) completes a real tool round trip against
// `dsv4 serve` through /v1/responses: `codex exec` with a custom model provider (wire_api
// "responses") on the synthetic model with scripted completions (--test-completions) calls
// exec_command to `cat` a file in a temporary directory, sends the output back (store: false,
// the whole conversation as input items, reasoning included), and prints the scripted answer.
// Loopback only: a fresh CODEX_HOME whose config.toml turns off update checks, analytics,
// feedback and OpenTelemetry export; outbound proxies point at a closed loopback port.
//
// Codex's prompt (instructions and 8 tool schemas) is about 8.7K tokens: the server runs with
// the synthetic model's default context (65536 tokens), as a user would start it.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { offlineProxies, runAgent } from './agent_util.mjs';
import { startServer } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const launcher = path.join(here, 'node_modules/@openai/codex/bin/codex.js');

test('codex exec: exec_command round trip over /v1/responses with prefix reuse', { timeout: 300_000 }, async () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'dsv4-codex-'));
  const work = path.join(tmp, 'work'), home = path.join(tmp, 'home'), codexHome = path.join(tmp, 'codex');
  for (const d of [work, home, codexHome]) mkdirSync(d);
  writeFileSync(path.join(work, 'note.txt'), 'secret: 42\n');
  // Codex sends reasoning {summary: auto} (default effort): thinking is on.
  const call = '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="exec_command">\n' +
    '<｜DSML｜parameter name="cmd" string="true">cat note.txt</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>';
  const script = path.join(tmp, 'completions.json');
  writeFileSync(script, JSON.stringify(['I will read the note.</think>' + call, 'Read it.</think>The note says the secret is 42.']));

  const server = await startServer({ bin: process.env.DSV4_BIN, cache: process.env.DSV4_CACHE,
    extra: ['--test-hooks', '--test-completions', script] });
  try {
    writeFileSync(path.join(codexHome, 'config.toml'), [
      'model = "dsv4-synthetic"', 'model_provider = "dsv4"', 'check_for_update_on_startup = false',
      // docs/server.md's window settings for the server's 64K context.
      'model_context_window = 65536', 'model_auto_compact_token_limit = 56000', '',
      '[model_providers.dsv4]', 'name = "dsv4"', `base_url = "${server.url}/v1"`, 'wire_api = "responses"', '',
      '[analytics]', 'enabled = false', '', '[feedback]', 'enabled = false', '', '[otel]', 'exporter = "none"', ''].join('\n'));
    const env = { PATH: process.env.PATH, HOME: home, CODEX_HOME: codexHome, ...offlineProxies };
    // The command is the test's own (cat in the temp dir): no sandbox needed, and containers
    // without user namespaces could not give one.
    const r = await runAgent(process.execPath, [launcher, 'exec', '--skip-git-repo-check', '--sandbox', 'danger-full-access',
      'Read note.txt and tell me the secret.'], { cwd: work, env });
    assert.equal(r.code, 0, `codex exited with ${r.code} (${r.signal}):\n${r.stdout}\n${r.stderr}\n${server.log()}`);
    assert.equal(r.stdout.trim(), 'The note says the secret is 42.', r.stderr);
    assert.match(r.stderr, /cat note\.txt/);

    const h = await (await fetch(`${server.url}/health`)).json();
    assert.equal(h.max_context, 65536, 'the synthetic model\'s default context');
    assert.equal(h.totals.completed, 2, JSON.stringify(h));
    assert.ok(h.prefix_cache.hits >= 1 && h.totals.prompt_tokens_cached > 8_000, JSON.stringify(h));
  } finally {
    assert.equal(await server.stop(), 0);
    rmSync(tmp, { recursive: true, force: true });
  }
});
