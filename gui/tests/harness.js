// Test harness: real gateway and engine processes on a temporary data directory, on an ephemeral port.

import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const guiDir = path.resolve(here, '..');
const targetDir = process.env.CARGO_TARGET_DIR ?? path.resolve(guiDir, '..', 'target');
/** Where the binaries are: `FLOWORK_BIN_DIR`, or the workspace's debug build. */
export const binDir = process.env.FLOWORK_BIN_DIR ?? path.join(targetDir, 'debug');
export const artifactsDir = path.join(guiDir, 'test-artifacts');
mkdirSync(artifactsDir, { recursive: true });

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A temporary data directory with the CLI bound to it. */
export class Workspace {
  constructor() {
    this.dir = mkdtempSync(path.join(tmpdir(), 'flowork-gui-'));
    this.dataDir = path.join(this.dir, 'data');
    this.processes = [];
  }

  /** Runs `flowork-gateway ARGS --data-dir DIR`; returns its stdout. */
  cli(...args) {
    return execFileSync(path.join(binDir, 'flowork-gateway'), [...args, '--data-dir', this.dataDir], {
      encoding: 'utf8',
      env: { ...process.env, FLOWORK_LOG_FORMAT: 'json' },
    }).trim();
  }

  /** Registers an engine owned by `owner`; returns the path of its token file. */
  addEngine(name, owner) {
    const tokenFile = path.join(this.dir, `${name}.token`);
    this.cli('engine', 'add', name, '--owner', owner, '--token-file', tokenFile);
    return tokenFile;
  }

  mintToken(user, ttl = '15m') {
    return this.cli('token', 'mint', '--user', user, '--ttl', ttl);
  }

  allow(engine, user) {
    this.cli('engine', 'allow', engine, user);
  }

  spawn(binary, args, name) {
    const logPath = path.join(this.dir, `${name}.log`);
    const child = spawn(path.join(binDir, binary), args, {
      env: { ...process.env, FLOWORK_LOG_FORMAT: 'json' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const proc = { child, logPath, log: '', exited: false };
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      proc.log += chunk;
    });
    child.on('exit', () => {
      proc.exited = true;
    });
    this.processes.push(proc);
    return proc;
  }

  /** Starts `flowork-gateway serve` with the built GUI (on `listen`, an ephemeral port by default) and waits until
   *  it is ready; returns the process, with its base URL in `base`. */
  async startGateway(extra = [], listen = '127.0.0.1:0') {
    const tls = extra.includes('--tls-cert');
    const proc = this.spawn(
      'flowork-gateway',
      ['serve', '--listen', listen, '--data-dir', this.dataDir, '--gui-dir', path.join(guiDir, 'dist'), ...extra],
      'gateway',
    );
    const deadline = Date.now() + 30_000;
    let base = null;
    while (!base) {
      const line = proc.log.split('\n').find((l) => l.includes('"listening"'));
      if (line) base = `${tls ? 'https' : 'http'}://${JSON.parse(line).addr}`;
      if (proc.exited) throw new Error(`the gateway exited: ${proc.log}`);
      if (Date.now() > deadline) throw new Error(`the gateway did not start: ${proc.log}`);
      await sleep(20);
    }
    for (;;) {
      try {
        if (tls ? (await insecureCall(base, null, 'GET', '/readyz')).status === 200 : (await fetch(`${base}/readyz`)).ok) break;
      } catch {
        // not yet
      }
      if (Date.now() > deadline) throw new Error(`the gateway never became ready: ${proc.log}`);
      await sleep(20);
    }
    proc.base = base;
    return proc;
  }

  /** A self-signed certificate for 127.0.0.1 (openssl); returns the `serve` flags that use it. */
  tlsFlags() {
    const cert = path.join(this.dir, 'tls-cert.pem');
    const key = path.join(this.dir, 'tls-key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
      '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-addext', 'basicConstraints=critical,CA:FALSE',
      '-keyout', key, '-out', cert], { stdio: 'ignore' });
    return ['--tls-cert', cert, '--tls-key', key];
  }

  /** Starts an engine process for `name` against `base`. */
  startEngine(base, name, tokenFile, workers = 2) {
    return this.spawn(
      'flowork-engine',
      ['--gateway', base, '--engine-id', name, '--token-file', tokenFile, '--workers', String(workers)],
      `engine-${name}`,
    );
  }

  /** Stops every process and removes the directory. */
  async close() {
    for (const proc of this.processes) {
      if (!proc.exited) proc.child.kill('SIGKILL');
    }
    await sleep(50);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Waits until `check()` returns a truthy value, or fails with `what`. */
export async function eventually(what, check, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** POST /jobs as `token`. */
export async function postJob(base, token, body, key) {
  const response = await fetch(`${base}/jobs`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', 'Idempotency-Key': key },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

/** The built GUI must exist: the test command builds it first. */
export function assertBuilt() {
  readFileSync(path.join(guiDir, 'dist', 'index.html'));
}

/** Calls the gateway's API as `token`; returns `{status, body}` (body null when empty). */
export async function callApi(base, token, method, pathAndQuery, body) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  // POST /jobs wants an idempotency key; a fresh one per call.
  if (method === 'POST' && pathAndQuery === '/jobs') headers['Idempotency-Key'] = crypto.randomUUID();
  const response = await fetch(`${base}${pathAndQuery}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

/** Creates `count` jobs like `job` through `POST /jobs/batch` (1,000 per call); returns their ids in order. */
export async function createJobs(base, token, count, job, tag = 'batch') {
  const ids = [];
  for (let start = 0; start < count; start += 1000) {
    const jobs = [];
    for (let i = start; i < Math.min(count, start + 1000); i += 1) jobs.push({ ...job, idempotency_key: `${tag}-${i}` });
    const answer = await callApi(base, token, 'POST', '/jobs/batch', { jobs });
    if (answer.status !== 200) throw new Error(`POST /jobs/batch: ${answer.status} ${JSON.stringify(answer.body)}`);
    for (const item of answer.body.results) {
      if (!item.job) throw new Error(`a batch item was refused: ${JSON.stringify(item)}`);
      ids.push(item.job.id);
    }
  }
  return ids;
}

/** The `_headers` file as [pattern, headers] blocks (Cloudflare Pages' format: a path line, then indented headers). */
function readHeaders(dir) {
  const blocks = [];
  for (const line of readFileSync(path.join(dir, '_headers'), 'utf8').split('\n')) {
    if (!line.trim() || line.trim().startsWith('#')) continue;
    if (!/^\s/.test(line)) blocks.push([line.trim(), {}]);
    else {
      const at = line.indexOf(':');
      blocks.at(-1)[1][line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
  }
  return blocks;
}

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml', '.json': 'application/json' };

/**
 * Serves the built GUI on its own 127.0.0.1 port, as Cloudflare Pages would (the `_headers` applied), with a
 * `config.json` naming `gateway`; returns `{base, gateway, close()}` (set `gateway` to point it elsewhere).
 */
export async function serveGui(gateway) {
  const site = { gateway };
  const dist = path.join(guiDir, 'dist');
  const blocks = readHeaders(dist);
  const server = createServer((request, response) => {
    const route = new URL(request.url, 'http://x').pathname;
    const file = route === '/' ? '/index.html' : route;
    const headers = {};
    for (const [pattern, values] of blocks) {
      if (pattern === '/*' || pattern === route || (pattern.endsWith('*') && route.startsWith(pattern.slice(0, -1)))) Object.assign(headers, values);
    }
    let body;
    if (file === '/config.json') body = JSON.stringify({ gateway: site.gateway, chainId: 1 });
    else {
      try {
        body = readFileSync(path.join(dist, path.normalize(file).replace(/^(\.\.[/\\])+/, '')));
      } catch {
        response.writeHead(404, headers).end();
        return;
      }
    }
    response.writeHead(200, { ...headers, 'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream' }).end(body);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  site.base = `http://127.0.0.1:${server.address().port}`;
  site.close = () => new Promise((resolve) => server.close(resolve));
  return site;
}

/** Calls a gateway that serves a self-signed certificate, trusting it (node's fetch cannot be told to). */
export function insecureCall(base, token, method, route, body) {
  return new Promise((resolve, reject) => {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const call = httpsRequest(`${base}${route}`, { method, headers, rejectUnauthorized: false }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => {
        text += chunk;
      });
      response.on('end', () => resolve({ status: response.statusCode, body: text ? JSON.parse(text) : null }));
    });
    call.on('error', reject);
    call.end(body === undefined ? undefined : JSON.stringify(body));
  });
}
