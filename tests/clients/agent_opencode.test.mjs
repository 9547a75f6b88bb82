// opencode (`opencode-ai`, pinned in package.json) completes a real tool round trip against
// `dsv4 serve` through /v1/chat/completions: `opencode run` with an OpenAI-compatible provider
// on the synthetic model with scripted completions (--test-completions) calls its read tool on a
// file in a temporary directory, sends the result back and prints the scripted answer.
// opencode also asks for a conversation title, concurrently: the scripted entries say which
// prompt each is for. Loopback only: update checks, the models.dev catalog fetch, sharing,
// default plugins and LSP downloads are switched off through opencode's environment variables,
// outbound proxies point at a closed loopback port, and HOME / XDG directories are fresh.
//
// Its prompt (system text and 10 tool schemas) is about 7.3K tokens: the server runs with the
// synthetic model's default context (65536 tokens), as a user would start it.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { offlineProxies, runAgent } from './agent_util.mjs';
import { startServer } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
// The platform package's binary (what the package's postinstall would copy into opencode-ai/bin).
const binary = [path.join(here, `node_modules/opencode-${process.platform}-${process.arch}/bin/opencode`),
  path.join(here, 'node_modules/opencode-ai/bin/opencode.exe')].find((p) => existsSync(p));

test('opencode run: read tool round trip over chat completions with prefix reuse', { timeout: 300_000 }, async () => {
  assert.ok(binary, 'the opencode binary is missing: run npm ci in tests/clients');
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'dsv4-opencode-'));
  const work = path.join(tmp, 'work'), home = path.join(tmp, 'home');
  for (const d of [work, home]) mkdirSync(d);
  const note = path.join(work, 'note.txt');
  writeFileSync(note, 'secret: 42\n');
  const call = '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="read">\n' +
    `<｜DSML｜parameter name="filePath" string="true">${note}</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>`;
  const script = path.join(tmp, 'completions.json');
  writeFileSync(script, JSON.stringify([{ match: 'title generator', completion: 'Secret note' },
    { match: 'You are opencode', completion: call }, { match: 'You are opencode', completion: 'The note says the secret is 42.' }]));

  const server = await startServer({ bin: process.env.DSV4_BIN, cache: process.env.DSV4_CACHE,
    extra: ['--test-hooks', '--test-completions', script] });
  try {
    const config = { $schema: 'https://opencode.ai/config.json', autoupdate: false, share: 'disabled', model: 'dsv4/dsv4-synthetic',
      provider: { dsv4: { npm: '@ai-sdk/openai-compatible', name: 'dsv4', options: { baseURL: `${server.url}/v1`, apiKey: 'none' },
        models: { 'dsv4-synthetic': { name: 'dsv4 synthetic', limit: { context: 65536, output: 1024 } } } } } };
    const env = { PATH: process.env.PATH, HOME: home, XDG_CONFIG_HOME: path.join(home, '.config'),
      XDG_DATA_HOME: path.join(home, '.local/share'), XDG_CACHE_HOME: path.join(home, '.cache'),
      XDG_STATE_HOME: path.join(home, '.local/state'), OPENCODE_CONFIG_CONTENT: JSON.stringify(config),
      OPENCODE_DISABLE_AUTOUPDATE: '1', OPENCODE_DISABLE_MODELS_FETCH: '1', OPENCODE_DISABLE_SHARE: '1',
      OPENCODE_DISABLE_DEFAULT_PLUGINS: '1', OPENCODE_DISABLE_LSP_DOWNLOAD: '1', OPENCODE_DISABLE_CLAUDE_CODE: '1',
      ...offlineProxies };
    const r = await runAgent(binary, ['run', 'Read note.txt and tell me the secret.', '-m', 'dsv4/dsv4-synthetic'], { cwd: work, env });
    assert.equal(r.code, 0, `opencode exited with ${r.code} (${r.signal}):\n${r.stdout}\n${r.stderr}\n${server.log()}`);
    assert.equal(r.stdout.trim(), 'The note says the secret is 42.', r.stderr);
    assert.match(r.stderr, /Read note\.txt/);

    // Title + two turns; the second turn continued from the first one's prefix.
    const h = await (await fetch(`${server.url}/health`)).json();
    assert.equal(h.max_context, 65536, 'the synthetic model\'s default context');
    assert.equal(h.totals.completed, 3, JSON.stringify(h));
    assert.ok(h.prefix_cache.hits >= 1 && h.totals.prompt_tokens_cached > 7_000, JSON.stringify(h));
  } finally {
    assert.equal(await server.stop(), 0);
    rmSync(tmp, { recursive: true, force: true });
  }
});
