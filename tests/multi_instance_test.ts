/**
 * Several service processes sharing one store: exact counts and one report
 * per window, whatever instance each request reaches.
 */
import assert from "node:assert/strict";
import { checkFleet } from "./helpers/fleet.ts";
import { tempKvPath } from "./helpers/kv.ts";
import { skipWithoutRedis, startRedis } from "./helpers/redis.ts";
import { freePort } from "./helpers/requirements.ts";
import { startService } from "./helpers/service.ts";
import { withinOneWindow } from "./helpers/windows.ts";

const noRedis = skipWithoutRedis();

Deno.test("three processes sharing one KV file count exactly and report each window once", async () => {
  await using file = await tempKvPath();
  await checkFleet({ KV_PATH: file.path });
});

/**
 * The process ids holding each established connection to 127.0.0.1:`port`,
 * read from `/proc` (Linux): which process the kernel gave each connection
 * to.
 */
async function connectionOwners(port: number): Promise<number[]> {
  const table = await Deno.readTextFile("/proc/net/tcp");
  const inodes = new Set<string>();
  for (const line of table.split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    const [local, state, inode] = [fields[1], fields[3], fields[9]];
    // 01 is ESTABLISHED; the local address ends in the port, in hex.
    if (
      state === "01" &&
      // 127.0.0.1 as /proc writes it, little-endian hex, then the port.
      local === `0100007F:${port.toString(16).toUpperCase().padStart(4, "0")}`
    ) {
      inodes.add(inode!);
    }
  }
  const owners: number[] = [];
  for await (const process of Deno.readDir("/proc")) {
    const pid = Number(process.name);
    if (!Number.isInteger(pid)) continue;
    try {
      for await (const fd of Deno.readDir(`/proc/${pid}/fd`)) {
        const target = await Deno.readLink(`/proc/${pid}/fd/${fd.name}`);
        const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
        if (inode && inodes.has(inode)) owners.push(pid);
      }
    } catch {
      // A process that ended or is not ours to read.
    }
  }
  return owners;
}

Deno.test({
  name:
    "with REUSE_PORT several processes listen on one port and share its connections",
  ignore: Deno.build.os !== "linux",
}, async () => {
  await using file = await tempKvPath();
  const port = freePort();
  const env = { KV_PATH: file.path, PORT: String(port), REUSE_PORT: "true" };
  await using first = await startService(env);
  // Without REUSE_PORT this one could not listen: the port is taken.
  await using second = await startService(env);
  // Connections held open, each its own: the kernel spreads them over both.
  const clients = Array.from({ length: 24 }, () => Deno.createHttpClient({}));
  for (const [i, client] of clients.entries()) {
    const response = await fetch(`${first.url}/api/verve/accept?id=${i}`, {
      client,
    });
    assert.equal(await response.text(), "ok");
  }
  const owners = await connectionOwners(port);
  assert.equal(owners.length, clients.length);
  assert.deepEqual(
    new Set(owners),
    new Set([first.pid, second.pid]),
    "both processes took connections",
  );
  for (const client of clients) client.close();
  assert.equal(await first.stop("SIGTERM"), 0);
  // The port stays served by the other process.
  const response = await fetch(`${second.url}/api/verve/accept?id=99`);
  assert.equal(await response.text(), "ok");
  assert.equal(await second.stop("SIGTERM"), 0);
});

Deno.test({
  name:
    "three processes sharing one Redis count exactly and report each window once",
  ignore: noRedis,
  async fn() {
    await using redis = await startRedis();
    await checkFleet({ STORE: "redis", REDIS_URL: redis.url });
  },
});

Deno.test({
  name: "with Redis down the service answers 503, then recovers by itself",
  ignore: noRedis,
  async fn() {
    await using redis = await startRedis();
    await using service = await startService({
      STORE: "redis",
      REDIS_URL: redis.url,
      REDIS_TIMEOUT_MS: "300",
      WINDOW_MS: "2000",
      REPORT_GRACE_MS: "300",
    });
    const get = async (id: string) => {
      const response = await fetch(`${service.url}/api/verve/accept?id=${id}`);
      return `${response.status} ${await response.text()}`;
    };
    const ready = async () => {
      const response = await fetch(`${service.url}/readyz`);
      return `${response.status} ${await response.text()}`;
    };
    assert.equal(await get("1"), "200 ok");
    assert.equal(await ready(), "200 ready");
    await redis.stop();
    for (const id of ["2", "3"]) assert.equal(await get(id), "503 failed");
    assert.equal(await ready(), "503 not ready");
    await redis.start();
    let answer = "";
    for (let i = 0; i < 100 && answer !== "200 ok"; i++) {
      answer = await get("4");
      if (answer !== "200 ok") {
        assert.equal(answer, "503 failed");
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    assert.equal(answer, "200 ok");
    assert.equal(await ready(), "200 ready");
    // Reports go on: a window recorded after the outage is reported.
    const window = await withinOneWindow(2000, async () => {
      for (const id of ["5", "6", "5"]) assert.equal(await get(id), "200 ok");
    });
    const report = await service.waitForLog((line) =>
      line.logger === "verve.report" &&
      line.properties.minute === new Date(window).toISOString()
    );
    assert.equal(report.properties.unique_ids, 2);
    assert.equal(await service.stop("SIGTERM"), 0);
  },
});
