// The Client and the Worker against a gateway serving HTTPS with a certificate from a private CA made for the test:
// trusted with `caFile`, refused without it.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Client, FloworkError, Worker } from "../dist/index.js";
import { Workspace } from "./harness.js";

describe("TLS", () => {
  let ws;
  let gateway;

  before(async () => {
    ws = new Workspace();
    gateway = await ws.startTlsGateway();
  });
  after(() => ws.close());

  test("the Client and a Worker trust a self-signed gateway with caFile", async () => {
    assert.match(gateway.base, /^https:\/\//);
    const engineToken = ws.addEngine("tls", "alice");
    const client = new Client({ baseUrl: gateway.base, token: ws.mint("alice"), caFile: gateway.caFile });
    const worker = new Worker({
      gateway: gateway.base,
      engineId: "tls",
      token: engineToken,
      caFile: gateway.caFile,
      waitMs: 500,
      handleSignals: false,
      log: () => {},
    });
    worker.handle("upper", async (payload) => ({ text: payload.text.toUpperCase() }));
    const running = worker.run();
    try {
      const job = await client.enqueue("tls", "upper", { text: "over tls" });
      const done = await client.wait(job.id, { timeoutMs: 30_000 });
      assert.equal(done.status, "succeeded");
      assert.deepEqual(done.result, { text: "OVER TLS" });
    } finally {
      await worker.stop();
      await running;
    }

    // Without the CA, the certificate is refused: the call fails instead of going out unverified.
    const untrusting = new Client({ baseUrl: gateway.base, token: ws.mint("alice") });
    await assert.rejects(untrusting.list(), (error) => {
      assert.ok(error instanceof FloworkError);
      assert.equal(error.code, "unreachable");
      assert.match(error.message, /certificate/i);
      return true;
    });
  });
});
