// calm-serve and llama.cpp's llama-server side by side on the same checkpoint (bench/README.md,
// "calm-serve against llama-server"): for each round and each number of concurrent clients, one
// point of llama-server, then one of calm-serve (alternately, so machine noise hits both), each
// server started for its point with as many parallel rows as clients and one thread. Clients send
// streamed greedy completions back to back; reported: generated tokens/s (counted from the
// streamed chunks, one per token in both servers) and the median time to the first token.
//   node bench/peer/serve_side_by_side.mjs LLAMA_SERVER GGUF CALM_SERVE MODEL_DIR
//        [SECONDS=5] [CLIENTS=1,4,8] [ROUNDS=2] [MODE=full|certified]
// MODE: calm-serve decodes with the full model (the like-for-like comparison) or under its
// certificate (early exit). Node's own fetch only: nothing to install.
import { spawn } from 'node:child_process';
import http from 'node:http';
import { takeEvents } from '../sse_events.mjs';
import { basename } from 'node:path';

const [llamaExe, gguf, calmExe, modelDir, seconds = '5', clientList = '1,4,8', rounds = '2',
  mode = 'full'] = process.argv.slice(2);
if (!modelDir) throw new Error('usage: serve_side_by_side.mjs LLAMA_SERVER GGUF CALM_SERVE MODEL_DIR ' +
  '[SECONDS] [CLIENTS] [ROUNDS] [MODE]');
const model = basename(modelDir.replace(/\/$/, ''));
const prompts = ['ROMEO:', 'JULIET:\nO', 'First Citizen:\nBefore we proceed', 'KING HENRY:', 'MENENIUS:\nWhy',
  'GLOUCESTER:', 'Second Servant:', 'DUKE:\nNow'];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function start(kind, clients, port) {
  const args = kind === 'llama'
    ? ['-m', gguf, '--port', String(port), '--host', '127.0.0.1', '-t', '1', '-tb', '1',
      '-np', String(clients), '-c', String(256 * clients), '--no-webui']
    : ['--model', modelDir, '--port', String(port), '--threads', '1', '--max-sequences',
      String(clients)];
  const proc = spawn(kind === 'llama' ? llamaExe : calmExe, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr.on('data', (d) => { log += d; });
  for (let i = 0; i < 600; ++i) {  // up to 60 s
    if (proc.exitCode !== null) throw new Error(`${kind} exited: ${log}`);
    try {
      if ((await fetch(`http://127.0.0.1:${port}/health`)).ok) return proc;
    } catch { /* not listening yet */ }
    await sleep(100);
  }
  throw new Error(`${kind} did not become healthy: ${log}`);
}

// One streamed completion on a connection of its own (llama-server closes kept-alive connections
// after a streamed response without saying so): time to the first token, and the tokens.
function one(port, body) {
  return new Promise((resolve, reject) => {
    const startAt = performance.now();
    const payload = JSON.stringify({ ...body, stream: true });
    const req = http.request({ host: '127.0.0.1', port, path: '/v1/completions', method: 'POST', agent: false,
      headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) } }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`HTTP ${res.statusCode}`));
        return;
      }
      let ttft;
      let tokens = 0;
      let buffer = '';
      res.on('data', (piece) => {
        const { chunks, rest } = takeEvents(buffer + piece.toString());
        buffer = rest;
        for (const chunk of chunks) {
          if (!chunk.choices || chunk.choices.length === 0) continue;
          if (chunk.choices[0].finish_reason && chunk.choices[0].text === '') continue;  // closing chunk
          if (ttft === undefined) ttft = performance.now() - startAt;
          ++tokens;
        }
      });
      res.on('end', () => resolve({ ttft, tokens }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload);
  });
}

async function point(kind, clients, port) {
  const proc = await start(kind, clients, port);
  const body = kind === 'llama'
    ? { model, max_tokens: 32, temperature: 0 }
    : { model, ...(mode === 'full' ? { calm_mode: 'full', max_tokens: 32 } : {}) };
  for (let i = 0; i < clients; ++i) await one(port, { ...body, prompt: prompts[i % prompts.length] });  // warm-up
  const results = [];
  const until = performance.now() + Number(seconds) * 1000;
  const startAt = performance.now();
  await Promise.all(Array.from({ length: clients }, async (_, c) => {
    for (let i = 0; performance.now() < until; ++i) {
      try {
        results.push(await one(port, { ...body, prompt: prompts[(c + i) % prompts.length] }));
      } catch (e) {
        throw new Error(`${kind}, ${clients} clients, request ${i} of client ${c}: ${e.cause ?? e}`);
      }
    }
  }));
  const wall = (performance.now() - startAt) / 1000;
  proc.kill('SIGTERM');
  await new Promise((r) => (proc.exitCode !== null ? r() : proc.on('exit', r)));
  const ttfts = results.map((r) => r.ttft).sort((a, b) => a - b);
  return { rate: results.reduce((a, r) => a + r.tokens, 0) / wall, ttft: ttfts[Math.floor(ttfts.length / 2)],
    perRequest: results.reduce((a, r) => a + r.tokens, 0) / results.length };
}

console.log(`calm-serve (${mode}) against llama-server: ${model}, ${seconds} s per point, 1 thread each`);
console.log('round  clients  llama tok/s  calm tok/s  calm/llama  llama TTFT ms  calm TTFT ms  tokens/request llama calm');
let port = 18500;
for (let r = 1; r <= Number(rounds); ++r)
  for (const clients of clientList.split(',').map(Number)) {
    const llama = await point('llama', clients, port++);
    const calm = await point('calm', clients, port++);
    console.log(`${String(r).padStart(5)}  ${String(clients).padStart(7)}  ${llama.rate.toFixed(0).padStart(11)}  ` +
      `${calm.rate.toFixed(0).padStart(10)}  ${(calm.rate / llama.rate).toFixed(2).padStart(10)}  ` +
      `${llama.ttft.toFixed(1).padStart(13)}  ${calm.ttft.toFixed(1).padStart(12)}  ` +
      `${llama.perRequest.toFixed(1).padStart(19)} ${calm.perRequest.toFixed(1).padStart(4)}`);
  }
