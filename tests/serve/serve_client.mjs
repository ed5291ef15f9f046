// calm-serve driven by the official OpenAI client library for Node: completions and streaming,
// 16 concurrent clients that each get exactly what the same request gets alone (and what
// calm-generate prints), clients that drop mid-stream, refused requests (size, type, limits, key,
// queue), many requests in a row with bounded resident memory, and SIGTERM with a request in
// flight. Usage:
//   node serve_client.mjs OPENAI_PACKAGE_DIR CALM_SERVE CALM_GENERATE MODEL_DIR
// CALM_SERVE_TEST_REQUESTS: the requests in a row (default 1000; fewer under the sanitizers).
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const [pkgDir, serveExe, generateExe, modelDir] = process.argv.slice(2);
if (!modelDir) throw new Error('usage: serve_client.mjs OPENAI_PACKAGE_DIR CALM_SERVE CALM_GENERATE MODEL_DIR');
const { default: OpenAI } = await import(pathToFileURL(`${pkgDir}/index.mjs`).href);
const inARow = Number(process.env.CALM_SERVE_TEST_REQUESTS ?? 1000);
const key = `calm-test-${process.pid}`;
const model = 'shakespeare-8l';
const t0 = Date.now();
const step = (what) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)} s] ${what}`);

// --- the server ----------------------------------------------------------------------------
async function startServer(limits) {
  const proc = spawn(serveExe, ['--model', modelDir, '--port', '0', '--api-key', key, ...limits],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  const log = { stderr: '' };
  proc.stderr.on('data', (d) => { log.stderr += d; });
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const port = await new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) resolve(Number(m[1]));
    });
    exited.then((e) => reject(new Error(`calm-serve exited (${JSON.stringify(e)}) before listening:\n${log.stderr}`)));
    setTimeout(() => reject(new Error(`calm-serve did not listen within 60 s:\n${log.stderr}`)), 60000).unref();
  });
  return { proc, exited, port, log };
}
const server = await startServer(['--max-body-bytes', '65536', '--max-prompt-tokens', '64',
  '--max-tokens-limit', '200', '--max-sequences', '16', '--max-queue', '8', '--grace-period', '20']);
const { proc, exited, port } = server;
const base = `http://127.0.0.1:${port}`;
const client = new OpenAI({ apiKey: key, baseURL: `${base}/v1`, maxRetries: 0, timeout: 60000 });
step(`calm-serve listening on port ${port}`);

const metrics = async () => {
  const text = await (await fetch(`${base}/metrics`, { headers: { Authorization: `Bearer ${key}` } })).text();
  const out = {};
  for (const line of text.split('\n')) if (line && !line.startsWith('#')) out[line.split(' ')[0]] = Number(line.split(' ')[1]);
  return out;
};
const vmRssKiB = () => Number(readFileSync(`/proc/${proc.pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]);

// One completion, streamed or not, reduced to what must not depend on other clients.
async function complete(params) {
  if (!params.stream) {
    const r = await client.completions.create({ model, ...params });
    const c = r.choices[0];
    assert.equal(r.object, 'text_completion');
    assert.equal(r.usage.completion_tokens, r.calm.tokens.length);
    return { text: c.text, finish: c.finish_reason, tokens: r.calm.tokens, exits: r.calm.exit_layers, mode: r.calm.mode };
  }
  const stream = await client.completions.create({ model, ...params, stream: true });
  let text = '';
  let last;
  for await (const chunk of stream) {
    text += chunk.choices[0].text;
    last = chunk;
  }
  assert.ok(last?.choices[0].finish_reason, 'the last chunk has a finish_reason');
  return { text, finish: last.choices[0].finish_reason, tokens: last.calm.tokens, exits: last.calm.exit_layers, mode: last.calm.mode };
}

// --- completions, streaming, and calm-generate's output -------------------------------------
const models = await client.models.list();
assert.deepEqual(models.data.map((m) => m.id), [model]);
const certified = await complete({ prompt: 'ROMEO:' });
assert.equal(certified.mode, 'certified', 'the certificate next to the model covers greedy, 32 tokens');
assert.equal(certified.tokens.length, 32);
assert.deepEqual(await complete({ prompt: 'ROMEO:', stream: true }), certified, 'streamed = not streamed');
const generate = (args) => JSON.parse(execFileSync(generateExe, ['--model', modelDir, '--json', ...args],
  { stdio: ['ignore', 'pipe', 'ignore'] }).toString());
const expectGenerate = (args, got, what) => {
  const g = generate(args);
  assert.equal(got.text, g.text, `${what}: calm-serve's text is calm-generate's`);
  assert.deepEqual(got.exits, g.tokens.map((t) => t.exit_layer), `${what}: exit layers as calm-generate's`);
};
expectGenerate(['--prompt', 'ROMEO:'], certified, 'certified');
const full = await complete({ prompt: 'ROMEO:', max_tokens: 24, calm_mode: 'full' });
assert.ok(full.exits.every((l) => l === 8), 'the full model runs every layer');
expectGenerate(['--prompt', 'ROMEO:', '--measure', 'full', '--max-new-tokens', '24'], full, 'full model');
const sampled = await complete({ prompt: 'JULIET:', max_tokens: 20, temperature: 0.8, seed: 7 });
assert.equal(sampled.mode, 'full', 'sampling is not what the certificate covers: the full model runs');
expectGenerate(['--prompt', 'JULIET:', '--measure', 'full', '--max-new-tokens', '20', '--temperature', '0.8', '--seed', '7'],
  sampled, 'sampled');
const stopped = await complete({ prompt: 'ROMEO:', stop: ['lord'] });
assert.equal(stopped.finish, 'stop');
assert.equal(stopped.text, certified.text.slice(0, certified.text.indexOf('lord')), 'the text ends before the stop string');
step('completions, streaming and stop strings as calm-generate decodes them');

// --- 16 concurrent clients each get what the same request gets alone --------------------------
const prompts = ['ROMEO:', 'JULIET:\nO', 'First Citizen:\nBefore we proceed', 'KING HENRY:', 'MENENIUS:\nWhy',
  'GLOUCESTER:', 'Second Servant:', 'DUKE:\nNow'];
const requests = Array.from({ length: 16 }, (_, i) => {
  const r = { prompt: prompts[i % prompts.length], stream: i % 2 === 1 };
  if (i % 4 === 1) Object.assign(r, { calm_mode: 'full', max_tokens: 24 + i });
  if (i % 4 === 2) Object.assign(r, { temperature: 0.9, seed: 100 + i, max_tokens: 30, top_p: 0.95 });
  if (i % 8 === 3) Object.assign(r, { stop: ['\n\n', 'the'], max_tokens: 40 });
  if (i % 8 === 7) Object.assign(r, { calm_mode: 'early-exit', calm_threshold: 0.8, temperature: 0.7, seed: i, max_tokens: 40 });
  return r;
});
const alone = [];
for (const r of requests) alone.push(await complete(r));
const before = await metrics();
const together = await Promise.all(requests.map((r) => complete(r)));
const after = await metrics();
for (let i = 0; i < requests.length; ++i)
  assert.deepEqual(together[i], alone[i], `client ${i} (${JSON.stringify(requests[i])}): concurrent = alone`);
const rows = (after.calm_batch_rows_total - before.calm_batch_rows_total) / (after.calm_batch_steps_total - before.calm_batch_steps_total);
assert.ok(rows > 2, `the concurrent requests were decoded together (mean rows per step ${rows})`);
assert.ok(alone.some((a) => a.exits.some((l) => l < 8)), 'some rows exited early');
step(`16 concurrent clients = alone (mean ${rows.toFixed(1)} rows per step)`);

// --- clients that drop mid-stream -------------------------------------------------------------
{
  const m0 = await metrics();
  const streams = await Promise.all([0, 1, 2].map(() =>
    client.completions.create({ model, prompt: 'ROMEO:', max_tokens: 200, calm_mode: 'full', stream: true })));
  await Promise.all(streams.map(async (s) => { for await (const chunk of s) break; }));  // break aborts
  let m;
  for (let tries = 0; tries < 100; ++tries) {
    m = await metrics();
    if (m.calm_batch_sequences === 0 && m.calm_requests_cancelled_total >= m0.calm_requests_cancelled_total + 3) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(m.calm_batch_sequences, 0, 'the dropped clients\' sequences are freed');
  assert.equal(m.calm_requests_cancelled_total - m0.calm_requests_cancelled_total, 3, 'three cancelled');
  assert.ok(m.calm_generated_tokens_total - m0.calm_generated_tokens_total < 3 * 200, 'freed before the end');
  step(`3 clients dropped mid-stream: freed after ${m.calm_generated_tokens_total - m0.calm_generated_tokens_total} of 600 tokens`);
}

// --- refused requests -------------------------------------------------------------------------
const refused = async (params, status, field, code) => {
  const e = await client.completions.create({ model, ...params }).then(() => null, (err) => err);
  assert.ok(e, `${JSON.stringify(params).slice(0, 80)}: refused`);
  assert.equal(e.status, status, `${JSON.stringify(params).slice(0, 80)}: status (${e.message})`);
  if (field !== undefined) assert.equal(e.param, field, `param of ${e.message}`);
  if (code !== undefined) assert.equal(e.code, code, `code of ${e.message}`);
};
await refused({ prompt: 'x', max_tokens: 'many' }, 400, 'max_tokens', 'invalid_type');
await refused({ prompt: 'x', max_tokens: 201 }, 400, 'max_tokens', 'max_tokens_limit');
await refused({ prompt: 'to be or not '.repeat(20) }, 400, 'prompt', 'max_prompt_tokens');
await refused({ prompt: 7 }, 400, 'prompt', 'invalid_type');
await refused({ prompt: 'x', temperature: -1 }, 400, 'temperature');
await refused({ prompt: 'x', stop: ['a', 'b', 'c', 'd', 'e'] }, 400, 'stop');
await refused({ prompt: 'x', calm_unknown: 1 }, 400, 'calm_unknown', 'unknown_field');
await refused({ prompt: 'x', calm_measure: 'softmax' }, 400, 'calm_measure', 'measure_unavailable');
await refused({ prompt: 'x', max_tokens: 10, calm_mode: 'certified' }, 400, 'calm_mode', 'not_certified');
await refused({ prompt: 'x', model: 'gpt-4' }, 404, 'model', 'model_not_found');
await refused({ prompt: 'x'.repeat(70000) }, 413, null, 'max_body_bytes');
const raw = async (body, auth = `Bearer ${key}`) => {
  const r = await fetch(`${base}/v1/completions`, { method: 'POST', body, headers: { 'Content-Type': 'application/json', Authorization: auth } });
  return { status: r.status, body: await r.json() };
};
let r = await raw('{"model": "shakespeare-8l", "prompt": ');
assert.equal(r.status, 400);
assert.equal(r.body.error.code, 'invalid_json');
r = await raw('[1, 2]');
assert.equal(r.status, 400);
assert.equal(r.body.error.code, 'invalid_type');
r = await raw(JSON.stringify({ model, prompt: 'x' }), 'Bearer wrong');
assert.equal(r.status, 401);
assert.equal(r.body.error.type, 'authentication_error');
const e401 = await new OpenAI({ apiKey: 'wrong', baseURL: `${base}/v1`, maxRetries: 0 }).models.list().then(() => null, (e) => e);
assert.equal(e401?.status, 401, 'the client library sees the wrong key as 401');
{  // more streams than rows and queue: 429 for the rest, the others run. A server of one row
   // and a queue of one, so that a row's 200 tokens outlast the requests' arrival.
  const small = await startServer(['--max-sequences', '1', '--max-queue', '1']);
  const one = new OpenAI({ apiKey: key, baseURL: `http://127.0.0.1:${small.port}/v1`, maxRetries: 0 });
  const open = [];
  const results = await Promise.all(Array.from({ length: 12 }, () =>
    one.completions.create({ model, prompt: 'ROMEO:', max_tokens: 200, calm_mode: 'full', stream: true }).then(
      async (s) => {
        const it = s[Symbol.asyncIterator]();
        open.push(it);
        await it.next();
        return 200;
      }, (e) => e.status)));
  await Promise.all(open.map((it) => it.return()));  // the clients leave: their rows are freed
  assert.ok(results.filter((s) => s === 429).length >= 1, `some are refused with 429: ${results}`);
  assert.ok(results.filter((s) => s === 200).length >= 2, `the row and the queue run: ${results}`);
  small.proc.kill('SIGTERM');
  assert.deepEqual(await small.exited, { code: 0, signal: null }, small.log.stderr);
}
step('refused: types, limits, size, malformed JSON, key, queue');

// --- many requests in a row, bounded resident memory -----------------------------------------
for (let i = 0; i < 50; ++i) await client.completions.create({ model, prompt: prompts[i % 8], max_tokens: 4 });
const rss0 = vmRssKiB();
for (let i = 0; i < inARow; ++i)
  await client.completions.create({ model, prompt: `${prompts[i % 8]} ${i}`, max_tokens: 4, stream: i % 2 === 0 });
const rss1 = vmRssKiB();
step(`${inARow} requests in a row: VmRSS ${rss0} KiB -> ${rss1} KiB`);
assert.ok(rss1 - rss0 < 16 * 1024, `resident memory grew by ${rss1 - rss0} KiB over ${inARow} requests`);

// --- SIGTERM: the request in flight finishes, then the server exits 0 -------------------------
{
  const s = await client.completions.create({ model, prompt: 'ROMEO:', max_tokens: 120, calm_mode: 'full', stream: true });
  let text = '';
  let last;
  let signalled = false;
  for await (const chunk of s) {
    if (!signalled) proc.kill('SIGTERM'), signalled = true;
    text += chunk.choices[0].text;
    last = chunk;
  }
  assert.equal(last.choices[0].finish_reason, 'length', 'the request in flight finished');
  assert.equal(last.calm.tokens.length, 120);
  const e = await exited;
  assert.deepEqual(e, { code: 0, signal: null }, `calm-serve exits 0 after SIGTERM:\n${server.log.stderr}`);
  step('SIGTERM: the request in flight finished, exit 0');
}
console.log('serve_client: all passed');
