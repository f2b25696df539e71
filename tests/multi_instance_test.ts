/**
 * Several service processes sharing one store: exact counts and one report
 * per window, whatever instance each request reaches.
 */
import assert from "node:assert/strict";
import { checkFleet } from "./helpers/fleet.ts";
import { tempKvPath } from "./helpers/kv.ts";
import { startService } from "./helpers/service.ts";

Deno.test("three processes sharing one KV file count exactly and report each window once", async () => {
  await using file = await tempKvPath();
  await checkFleet({ KV_PATH: file.path });
});

Deno.test("with REUSE_PORT several processes listen on one port", async () => {
  await using file = await tempKvPath();
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = String(listener.addr.port);
  listener.close();
  const env = { KV_PATH: file.path, PORT: port, REUSE_PORT: "true" };
  await using first = await startService(env);
  await using second = await startService(env);
  assert.equal(first.url, second.url);
  for (let i = 0; i < 20; i++) {
    const response = await fetch(`${first.url}/api/verve/accept?id=${i}`);
    assert.equal(await response.text(), "ok");
  }
  assert.equal(await first.stop("SIGTERM"), 0);
  // The port stays served by the other process.
  const response = await fetch(`${second.url}/api/verve/accept?id=99`);
  assert.equal(await response.text(), "ok");
  assert.equal(await second.stop("SIGTERM"), 0);
});
