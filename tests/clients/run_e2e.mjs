// Starts `dsv4 serve` on the synthetic model (test hooks on, a free loopback port), waits for
// /health, runs the node:test files of this folder against it, then stops the server and fails
// if it did not exit cleanly. Used by CTest (server_e2e):
//   node run_e2e.mjs --bin build/bin/dsv4 [--cache DIR] [files...]
// DSV4_URL and DSV4_SERVER_PID tell the tests where the server is.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(name);
  if (i < 0) return def;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
};
const bin = path.resolve(opt('--bin', path.join(here, '../../build/bin/dsv4')));
const cache = opt('--cache', process.env.DSV4_CACHE);
if (!existsSync(bin)) {
  console.error(`run_e2e: ${bin} does not exist (build the dsv4 target first)`);
  process.exit(2);
}
// The API clients and the coding agents the tests drive (package.json pins them).
const packages = ['openai', '@anthropic-ai/sdk', 'ajv', '@anthropic-ai/claude-code', '@openai/codex', 'opencode-ai'];
if (packages.some((p) => !existsSync(path.join(here, 'node_modules', ...p.split('/'))))) {
  console.error(`run_e2e: npm packages are missing (${packages.join(', ')}): run 'npm ci' in ${here} (scripts/setup.sh does)`);
  process.exit(2);
}
const files = args.length ? args : readdirSync(here).filter((f) => f.endsWith('.test.mjs')).sort().map((f) => path.join(here, f));

// --ctx 4096 rather than the synthetic model's 65536: the tests of prompts over the context stay small and fast.
const server = await startServer({ bin, cache, extra: ['--test-hooks', '--parallel', '4', '--queue', '8', '--cache-mb', '64', '--ctx', '4096'] });
let code = 1;
try {
  code = await new Promise((resolve) => {
    const p = spawn(process.execPath, ['--test', '--test-concurrency=1', ...files], {
      stdio: 'inherit',
      env: { ...process.env, DSV4_URL: server.url, DSV4_SERVER_PID: String(server.pid), DSV4_BIN: bin, DSV4_CACHE: server.cache },
    });
    p.on('exit', (c) => resolve(c ?? 1));
  });
} finally {
  const exit = await server.stop();
  if (exit !== 0) {
    console.error(`run_e2e: the server exited with ${exit}`);
    code = code || 1;
  }
}
process.exit(code);
