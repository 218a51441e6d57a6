// The tests' harness: the real flowork-gateway on an ephemeral port with a fresh data directory (as tests/src/lib.rs
// does: wait for the "listening" log line, then for /readyz), worker processes, and a recording proxy.

import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { fetchTrusting } from "../dist/fetcher.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "..", "..", "..");
/** Where the binaries are: `FLOWORK_BIN_DIR`, else `$CARGO_TARGET_DIR/debug`, else the workspace's debug build. */
export const binDir =
  process.env.FLOWORK_BIN_DIR ?? path.join(process.env.CARGO_TARGET_DIR ?? path.join(repo, "target"), "debug");
export const fixtureWorker = path.join(here, "fixtures", "worker.js");

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns a truthy value; fails after `timeoutMs` (a liveness bound, not a speed test). */
export async function eventually(what, check, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what} after ${timeoutMs} ms`);
    await sleep(25);
  }
}

/** A child process with its output collected. */
class Child {
  constructor(child) {
    this.child = child;
    this.stdout = "";
    this.stderr = "";
    this.exit = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
    child.stdout?.setEncoding("utf8").on("data", (chunk) => (this.stdout += chunk));
    child.stderr?.setEncoding("utf8").on("data", (chunk) => (this.stderr += chunk));
  }

  get exited() {
    return this.child.exitCode !== null || this.child.signalCode !== null;
  }

  kill(signal) {
    if (!this.exited) this.child.kill(signal);
  }
}

/** A temporary data directory, the CLI bound to it, and every process started for one test (killed at close). */
export class Workspace {
  constructor() {
    this.dir = mkdtempSync(path.join(tmpdir(), "flowork-sdk-ts-"));
    this.dataDir = path.join(this.dir, "data");
    this.children = [];
  }

  /** `flowork-gateway ARGS --data-dir DIR`; its stdout. */
  cli(...args) {
    return execFileSync(path.join(binDir, "flowork-gateway"), [...args, "--data-dir", this.dataDir], {
      encoding: "utf8",
      env: { ...process.env, FLOWORK_LOG_FORMAT: "json" },
    }).trim();
  }

  /** Registers an engine owned by `owner`; its token. */
  addEngine(name, owner) {
    return JSON.parse(this.cli("engine", "add", name, "--owner", owner, "--json")).token;
  }

  /** A user access token. */
  mint(user) {
    return JSON.parse(this.cli("token", "mint", "--user", user, "--ttl", "15m", "--json")).access_token;
  }

  spawn(command, args, env = {}) {
    const child = new Child(
      spawn(command, args, { env: { ...process.env, FLOWORK_LOG_FORMAT: "json", ...env }, stdio: ["ignore", "pipe", "pipe"] }),
    );
    this.children.push(child);
    return child;
  }

  /**
   * Starts `flowork-gateway serve` with HTTPS, on a certificate signed by a CA made for the test (the `test-ca`
   * helper of tests/src/bin); `{ base, caFile }`.
   */
  async startTlsGateway(extra = []) {
    const dir = path.join(this.dir, "tls");
    execFileSync(path.join(binDir, "test-ca"), [dir]);
    const caFile = path.join(dir, "ca.pem");
    const tls = ["--tls-cert", path.join(dir, "tls-cert.pem"), "--tls-key", path.join(dir, "tls-key.pem")];
    return { base: await this.startGateway([...tls, ...extra], caFile), caFile };
  }

  /**
   * Starts `flowork-gateway serve` on 127.0.0.1:0 and waits until `/readyz` answers; its base URL (https:// when
   * `caFile`, the CA of its certificate, is given).
   */
  async startGateway(extra = [], caFile = undefined) {
    const gateway = this.spawn(path.join(binDir, "flowork-gateway"), [
      "serve",
      "--listen",
      "127.0.0.1:0",
      "--data-dir",
      this.dataDir,
      ...extra,
    ]);
    const log = () => gateway.stdout + gateway.stderr;
    const addr = await eventually("the gateway's listening line", () => {
      if (gateway.exited) throw new Error(`the gateway exited: ${log()}`);
      for (const line of log().split("\n")) {
        try {
          const entry = JSON.parse(line);
          if (entry.message === "listening" || entry.fields?.message === "listening") return entry.addr ?? entry.fields?.addr;
        } catch {
          // not a JSON line
        }
      }
      return undefined;
    });
    const base = `${caFile === undefined ? "http" : "https"}://${addr}`;
    const send = fetchTrusting(caFile);
    await eventually("/readyz", async () => {
      try {
        return (await send(`${base}/readyz`, {})).ok;
      } catch {
        return false;
      }
    });
    this.gateway = gateway;
    return base;
  }

  /** Runs test/fixtures/worker.js (the SDK's Worker in its own process) against `gateway`. */
  startWorker(gateway, engineId, token, env = {}) {
    return this.spawn(process.execPath, [fixtureWorker], {
      FLOWORK_GATEWAY: gateway,
      FLOWORK_ENGINE_ID: engineId,
      FLOWORK_ENGINE_TOKEN: token,
      ...env,
    });
  }

  async close() {
    for (const child of this.children) child.kill("SIGKILL");
    await Promise.all(this.children.map((c) => c.exit));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * An HTTP proxy in front of the gateway that records every exchange and lets a test refuse requests:
 * `refuse(request)` returns `{status, headers, body}` to answer instead of the gateway, or nothing to forward.
 */
export async function startProxy(target, refuse = () => undefined) {
  const exchanges = [];
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = Buffer.concat(chunks).toString("utf8");
    const request = { method: req.method, url: req.url, headers: req.headers, body };
    const refusal = refuse(request);
    if (refusal) {
      exchanges.push({ request, status: refusal.status, refused: true });
      res.writeHead(refusal.status, { "content-type": "application/json", ...refusal.headers });
      res.end(JSON.stringify(refusal.body ?? { error: "unavailable", message: "refused by the test proxy" }));
      return;
    }
    const headers = { ...req.headers };
    delete headers.host;
    delete headers["content-length"];
    try {
      const response = await fetch(target + req.url, {
        method: req.method,
        headers,
        body: body === "" ? undefined : body,
      });
      const text = await response.text();
      exchanges.push({ request, status: response.status, body: text });
      res.writeHead(response.status, { "content-type": response.headers.get("content-type") ?? "application/json" });
      res.end(text);
    } catch (error) {
      res.writeHead(502);
      res.end(String(error));
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    base: `http://127.0.0.1:${port}`,
    exchanges,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
