// Load test of calm-serve: C clients (1, 4, 8 by default) each send streamed completions back to
// back for a few seconds; reports the aggregate generated tokens per second and the median and
// 90th-percentile time to first token, for the full model and for the certified early exit.
//   node bench/serve_load.mjs CALM_SERVE MODEL_DIR [SECONDS=5] [CLIENTS=1,4,8] [-- calm-serve flags]
// Node's own fetch only: nothing to install.
import { spawn } from 'node:child_process';
import { basename } from 'node:path';
import { takeEvents } from './sse_events.mjs';

const args = process.argv.slice(2);
const dash = args.indexOf('--');
const [exe, modelDir, seconds = '5', clientList = '1,4,8'] = dash < 0 ? args : args.slice(0, dash);
const extra = dash < 0 ? [] : args.slice(dash + 1);
if (!modelDir) throw new Error('usage: serve_load.mjs CALM_SERVE MODEL_DIR [SECONDS] [CLIENTS] [-- flags]');
const model = basename(modelDir.replace(/\/$/, ''));

const proc = spawn(exe, ['--model', modelDir, '--port', '0', ...extra], { stdio: ['ignore', 'pipe', 'inherit'] });
const port = await new Promise((resolve, reject) => {
  let out = '';
  proc.stdout.on('data', (d) => {
    out += d;
    const m = out.match(/listening on http:\/\/[^:]+:(\d+)/);
    if (m) resolve(Number(m[1]));
  });
  proc.on('exit', () => reject(new Error('calm-serve exited before listening')));
});
const url = `http://127.0.0.1:${port}/v1/completions`;
const prompts = ['ROMEO:', 'JULIET:\nO', 'First Citizen:\nBefore we proceed', 'KING HENRY:', 'MENENIUS:\nWhy',
  'GLOUCESTER:', 'Second Servant:', 'DUKE:\nNow'];

// One streamed completion: time to the first text, and the tokens and exit layers it reports.
async function one(body) {
  const start = performance.now();
  const res = await fetch(url, { method: 'POST', body: JSON.stringify({ ...body, stream: true }) });
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  let ttft;
  let buffer = '';
  let last;
  for await (const piece of res.body) {
    const { chunks, rest } = takeEvents(buffer + Buffer.from(piece).toString());
    buffer = rest;
    for (const chunk of chunks) {
      if (ttft === undefined) ttft = performance.now() - start;
      if (chunk.calm) last = chunk.calm;
    }
  }
  return { ttft, tokens: last.tokens.length, layers: last.exit_layers.reduce((a, b) => a + b, 0), L: last.layers };
}

const quantile = (xs, q) => xs.slice().sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))];
console.log(`calm-serve load test: ${model}, ${seconds} s per point, streamed requests back to back`);
console.log('mode       clients  tokens/s  requests  TTFT p50 ms  TTFT p90 ms  mean exit layer');
for (const [mode, body] of [['full', { calm_mode: 'full', max_tokens: 32 }], ['certified', {}]]) {
  for (const clients of clientList.split(',').map(Number)) {
    const until = performance.now() + Number(seconds) * 1000;
    const results = [];
    const start = performance.now();
    await Promise.all(Array.from({ length: clients }, async (_, c) => {
      for (let i = 0; performance.now() < until; ++i)
        results.push(await one({ model, prompt: prompts[(c + i) % prompts.length], ...body }));
    }));
    const wall = (performance.now() - start) / 1000;
    const tokens = results.reduce((a, r) => a + r.tokens, 0);
    const layers = results.reduce((a, r) => a + r.layers, 0);
    const ttfts = results.map((r) => r.ttft);
    console.log(`${mode.padEnd(10)} ${String(clients).padStart(7)}  ${(tokens / wall).toFixed(0).padStart(8)}  ` +
      `${String(results.length).padStart(8)}  ${quantile(ttfts, 0.5).toFixed(1).padStart(11)}  ` +
      `${quantile(ttfts, 0.9).toFixed(1).padStart(11)}  ${(layers / tokens).toFixed(2).padStart(8)} of ${results[0].L}`);
  }
}
proc.kill('SIGTERM');
