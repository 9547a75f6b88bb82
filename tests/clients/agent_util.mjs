// Shared by the coding-agent end-to-end tests (agent_*.test.mjs).
import { spawn } from 'node:child_process';

// Runs an agent's CLI to completion (killed after 3 minutes); resolves with its exit and output.
export function runAgent(cmd, args, opts) {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), 180_000);
    p.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

// Outbound proxies at a closed loopback port: anything that tries to leave loopback fails fast.
const dead = 'http://127.0.0.1:9';
export const offlineProxies = { HTTPS_PROXY: dead, HTTP_PROXY: dead, ALL_PROXY: dead, NO_PROXY: '127.0.0.1,localhost' };
