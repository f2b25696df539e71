/**
 * Faults against the real service process: killed under load, and fed
 * thousands of malformed requests.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { createHandler } from "../lib/http/handler.ts";
import { createKvStore } from "../lib/store/kv/store_kv.ts";
import { readIdLog, tempKvPath } from "./helpers/kv.ts";
import { captureLogs } from "./helpers/logs.ts";
import { LOOPBACK_ALLOW, startReceiver } from "./helpers/receiver.ts";
import { remoteFaults, startKvConnect } from "./helpers/kv_connect.ts";
import {
  type LogLine,
  runServiceToExit,
  startService,
} from "./helpers/service.ts";
import { nextWindow, roomInWindow } from "./helpers/windows.ts";

/** Windows long enough that a test stays in one or two of them. */
const WINDOW_MS = 600_000;

/** Every id in the KV file's logs, as id → window; each id once. */
async function storedIds(path: string): Promise<Map<string, number>> {
  const kv = await Deno.openKv(path);
  const ids = new Map<string, number>();
  for (const { id, minute } of await readIdLog(kv)) {
    assert.ok(!ids.has(id), `id ${id} is in the log twice`);
    ids.set(id, minute);
  }
  kv.close();
  return ids;
}

async function countIn(path: string, minute: number): Promise<number> {
  const store = createKvStore(await Deno.openKv(path), {
    retentionMs: WINDOW_MS * 2,
  });
  const count = await store.countIds(minute);
  await store.close();
  return count;
}

Deno.test("after kill -9 under load every acknowledged id is stored, counted once, also after a restart", async () => {
  await using file = await tempKvPath();
  const env = { KV_PATH: file.path, WINDOW_MS: String(WINDOW_MS) };
  const acknowledged: string[] = [];
  {
    await using service = await startService(env);
    let next = 0;
    let killed = false;
    const worker = async () => {
      while (!killed) {
        const id = String(1000 + next++);
        try {
          const response = await fetch(
            `${service.url}/api/verve/accept?id=${id}`,
          );
          if (await response.text() === "ok") acknowledged.push(id);
        } catch {
          // The process is gone; the answer never came.
        }
      }
    };
    const workers = Array.from({ length: 16 }, worker);
    while (acknowledged.length < 2000) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.notEqual(await service.stop("SIGKILL"), 0);
    killed = true;
    await Promise.all(workers);
  }
  const stored = await storedIds(file.path);
  for (const id of acknowledged) assert.ok(stored.has(id), `id ${id} was lost`);
  const counts = new Map<number, number>();
  for (const minute of new Set(stored.values())) {
    const inMinute = [...stored.values()].filter((m) => m === minute).length;
    assert.equal(await countIn(file.path, minute), inMinute);
    counts.set(minute, inMinute);
  }

  // A restart on the same store: repeats are answered, not counted again.
  await using restarted = await startService(env);
  for (const id of acknowledged.slice(0, 200)) {
    const response = await fetch(`${restarted.url}/api/verve/accept?id=${id}`);
    assert.equal(await response.text(), "ok");
  }
  assert.equal(await restarted.stop("SIGTERM"), 0);
  for (const [minute, count] of counts) {
    assert.equal(await countIn(file.path, minute), count);
  }
});

/** Malformed accept queries: never valid, whatever is combined with them. */
function badQueries(random: () => number): string[] {
  const pick = <T>(items: T[]) => items[Math.floor(random() * items.length)]!;
  const digits = (n: number) =>
    String(1 + Math.floor(random() * 9)) +
    Array.from({ length: n - 1 }, () => Math.floor(random() * 10)).join("");
  const badIds = [
    "",
    "abc",
    "1.5",
    "1e3",
    "%2B1",
    "--1",
    "0x10",
    "9223372036854775808",
    "-9223372036854775809",
    "%00",
    "1%00",
    "%zz",
    "%",
    "1%",
    "%E0%A4%A",
    "%D9%A1%D9%A2",
    "1%202",
    "%C3%A9",
    "%FF%FE",
    "-",
    "%201",
    "1%20",
  ];
  const junk = [
    "",
    "&x=%zz",
    "&=",
    "&&",
    "&x",
    "&%00=%00",
    "&y=" + "%41".repeat(50),
  ];
  const queries: string[] = [];
  for (let i = 0; i < 10_000; i++) {
    const kind = Math.floor(random() * 8);
    const id = kind === 0
      ? digits(20 + Math.floor(random() * 30)) // out of range
      : kind === 1
      ? `-${digits(20 + Math.floor(random() * 30))}`
      : pick(badIds);
    const rest = pick(junk);
    switch (Math.floor(random() * 6)) {
      case 0:
        queries.push(`id=${id}${rest}`);
        break;
      case 1: // repeated id, both valid on their own
        queries.push(`id=${digits(3)}&id=${digits(3)}${rest}`);
        break;
      case 2: // a valid id with a bad url
        queries.push(
          `id=${digits(4)}&url=${
            pick([
              "",
              "ftp%3A%2F%2Fexample.com",
              "javascript%3Aalert(1)",
              "http%3A%2F%2F" + "a".repeat(2100),
              "http%3A%2F%2Fexa%00mple.com",
              "%zz",
              "not%20a%20url",
            ])
          }`,
        );
        break;
      case 3: // too many parameters
        queries.push(
          `id=${digits(4)}&` +
            Array.from({ length: 9 }, (_, j) => `p${j}=${j}`).join("&"),
        );
        break;
      case 4: // no id at all
        queries.push(`url=http%3A%2F%2Fexample.com${rest}`);
        break;
      default:
        queries.push(`${rest.slice(1)}&id=${id}`);
    }
  }
  return queries;
}

Deno.test("12 000 malformed requests each get their 4xx and change no count: all in-process, a sample over HTTP", async () => {
  let seed = 42;
  const random = () => (seed = (seed * 48271) % 2147483647) / 2147483647;
  const requests: { path: string; method: string; expect: string }[] = [
    ...badQueries(random).map((q) => ({
      path: `/api/verve/accept?${q}`,
      method: "GET",
      expect: "400 failed",
    })),
  ];
  for (let i = 0; i < 1000; i++) {
    const method = ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"][i % 5]!;
    requests.push({
      path: `/api/verve/accept?id=${i}`,
      method,
      expect: "405 method not allowed",
    });
    requests.push({
      path: [
        "/index.html",
        "/api",
        "/api/verve",
        "/api/verve/accept/",
        "/API/VERVE/ACCEPT",
        "/api/verve/accept%00",
        `/${"x".repeat(3000)}`,
      ][i % 7]! + `?id=${i}`,
      method: i % 2 ? "GET" : "POST",
      expect: "404 not found",
    });
  }
  assert.ok(requests.length >= 12_000);
  const valid = Array.from({ length: 50 }, (_, i) => String(i * 31));

  // Every request through the service's handler, in-process.
  {
    await using logs = await captureLogs();
    await using store = createKvStore(await Deno.openKv(":memory:"), {
      retentionMs: WINDOW_MS * 2,
    });
    const minute = Date.UTC(2026, 0, 1, 12, 0);
    const handle = createHandler({
      store,
      logger: logs.logger("http"),
      windowMs: WINDOW_MS,
      clock: () => minute + 1234,
    });
    const answer = async (path: string, method = "GET") => {
      const response = await handle(
        new Request(`http://service.test${path}`, { method }),
      );
      return `${response.status} ${await response.text()}`;
    };
    for (const id of valid) {
      assert.equal(await answer(`/api/verve/accept?id=${id}`), "200 ok");
    }
    for (const request of requests) {
      assert.equal(
        await answer(request.path, request.method),
        request.expect,
        `${request.method} ${request.path}`,
      );
    }
    assert.equal(await store.countIds(minute), valid.length);
  }

  // A sample over HTTP to the real service: the same answers, and it stays
  // up with nothing recorded, in one window.
  await roomInWindow(WINDOW_MS, 30_000);
  await using file = await tempKvPath();
  await using service = await startService({
    KV_PATH: file.path,
    WINDOW_MS: String(WINDOW_MS),
  });
  for (const id of valid) {
    const response = await fetch(`${service.url}/api/verve/accept?id=${id}`);
    assert.equal(await response.text(), "ok");
  }
  const before = await storedIds(file.path);
  const sample = requests.filter((_, i) => i % 20 === 0);
  let done = 0;
  const worker = async () => {
    while (done < sample.length) {
      const request = sample[done++]!;
      const response = await fetch(`${service.url}${request.path}`, {
        method: request.method,
      });
      const answer = `${response.status} ${await response.text()}`;
      assert.equal(answer, request.expect, `${request.method} ${request.path}`);
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  const health = await fetch(`${service.url}/healthz`);
  assert.equal(await health.text(), "ok");
  const after = await storedIds(file.path);
  assert.deepEqual([...after.keys()].sort(), [...before.keys()].sort());
  assert.equal(await countIn(file.path, [...after.values()][0]!), valid.length);
  assert.equal(await service.stop("SIGTERM"), 0);
});

Deno.test("while another process holds the KV file locked requests get 503, and the service recovers after", async () => {
  await using file = await tempKvPath();
  await using service = await startService({
    KV_PATH: file.path,
    WINDOW_MS: String(WINDOW_MS),
    KV_COMMIT_ATTEMPTS: "1",
  });
  const get = async (id: string) => {
    const response = await fetch(`${service.url}/api/verve/accept?id=${id}`);
    return `${response.status} ${await response.text()}`;
  };
  assert.equal(await get("1"), "200 ok");
  // Another process, a SQLite connection, takes the write lock and keeps it.
  const lock = new DatabaseSync(file.path);
  // The service may be writing (its catch-up reports the window before):
  // wait for that write instead of failing on it.
  lock.exec("PRAGMA busy_timeout = 5000");
  lock.exec("BEGIN EXCLUSIVE");
  try {
    assert.equal(await get("2"), "503 failed");
  } finally {
    lock.exec("COMMIT");
    lock.close();
  }
  assert.equal(await get("2"), "200 ok");
  assert.equal(await get("3"), "200 ok");
  assert.deepEqual([...(await storedIds(file.path)).keys()].sort(), [
    "1",
    "2",
    "3",
  ]);
  assert.equal(await service.stop("SIGTERM"), 0);
});

Deno.test("a webhook receiver that never answers holds up neither requests nor the next report", async () => {
  await using file = await tempKvPath();
  await using receiver = startReceiver(() => "hang");
  await using service = await startService({
    KV_PATH: file.path,
    WINDOW_MS: "1000",
    REPORT_GRACE_MS: "100",
    WEBHOOK_TIMEOUT_MS: "3000",
    WEBHOOK_ATTEMPTS: "1",
    ...LOOPBACK_ALLOW,
  });
  const hook = encodeURIComponent(`${receiver.url}/hang`);
  const first = await fetch(`${service.url}/api/verve/accept?id=1&url=${hook}`);
  assert.equal(await first.text(), "ok");
  const isReport = (line: LogLine) => line.logger === "verve.report";
  await receiver.waitFor(1); // the delivery is open and unanswered
  const reportsBefore = service.lines.filter(isReport).length;
  // While it hangs, requests are answered and the next window is reported.
  for (let i = 2; i < 50; i++) {
    const response = await fetch(`${service.url}/api/verve/accept?id=${i}`);
    assert.equal(await response.text(), "ok");
  }
  await service.waitForLog((line) =>
    isReport(line) && service.lines.filter(isReport).length > reportsBefore
  );
  assert.ok(
    !service.lines.some((l) => l.logger === "verve.webhook"),
    "the delivery ended before the next report",
  );
  // Then the delivery times out, and says so.
  const timedOut = await service.waitForLog((line) =>
    line.logger === "verve.webhook" && line.properties.error === "timed out"
  );
  assert.equal(timedOut.level, "WARNING");
  // Then the URL is left to the outbox for a later tick.
  await service.waitForLog((line) =>
    line.logger === "verve.webhook" &&
    line.message.endsWith("the outbox tries it again later")
  );
  assert.equal(await service.stop("SIGTERM"), 0);
});

Deno.test("an oversized request line is refused and the service stays up", async () => {
  await using file = await tempKvPath();
  await using service = await startService({ KV_PATH: file.path });
  const port = Number(new URL(service.url).port);
  for (const size of [10_000, 100_000, 1_000_000]) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const line =
      `GET /api/verve/accept?id=1&pad=${"x".repeat(size)} HTTP/1.1\r\n` +
      "Host: 127.0.0.1\r\nConnection: close\r\n\r\n";
    // The server may close before it has read everything.
    await conn.write(new TextEncoder().encode(line)).catch(() => 0);
    const answer = new Uint8Array(4096);
    const read = await conn.read(answer).catch(() => null);
    conn.close();
    const status = read
      ? new TextDecoder().decode(answer.subarray(0, read)).split(" ")[1]
      : "closed";
    assert.ok(
      status === "closed" || /^4\d\d$/.test(status!),
      `size ${size}: ${status}`,
    );
  }
  const health = await fetch(`${service.url}/healthz`);
  assert.equal(await health.text(), "ok");
  assert.equal(await service.stop("SIGTERM"), 0);
});

Deno.test("past KV_MAX_WINDOW_IDS new ids get 503, logged once, counted in /metrics, while known ids stay ok", async () => {
  // The ids must all land in one window.
  await roomInWindow(WINDOW_MS, 30_000);
  await using file = await tempKvPath();
  await using service = await startService({
    KV_PATH: file.path,
    WINDOW_MS: String(WINDOW_MS),
    KV_MAX_WINDOW_IDS: "1000",
  });
  const get = async (id: number) => {
    const response = await fetch(`${service.url}/api/verve/accept?id=${id}`);
    return `${response.status} ${await response.text()}`;
  };
  for (let from = 0; from < 1000; from += 100) {
    const answers = await Promise.all(
      Array.from({ length: 100 }, (_, i) => get(from + i)),
    );
    assert.ok(answers.every((answer) => answer === "200 ok"));
  }
  for (const id of [5000, 5001, 5002]) {
    assert.equal(await get(id), "503 failed");
  }
  assert.equal(await get(5), "200 ok");
  const full = service.lines.filter((line) =>
    line.level === "ERROR" && line.message.includes("KV_MAX_WINDOW_IDS")
  );
  assert.equal(full.length, 1);
  assert.equal(full[0]!.properties.max, 1000);
  const metrics = await (await fetch(`${service.url}/metrics`)).text();
  assert.match(metrics, /^verve_ids_refused_total 3$/m);
  assert.equal(await service.stop("SIGTERM"), 0);
  const kv = await Deno.openKv(file.path);
  assert.equal((await readIdLog(kv)).length, 1000);
  kv.close();
});

Deno.test("a webhook receiver down for several windows gets every window once it is back, each exactly once", async () => {
  await using file = await tempKvPath();
  let down = true;
  const delivered: string[] = [];
  await using receiver = startReceiver((request) => {
    if (down) return 503;
    delivered.push(JSON.parse(request.body).minute);
    return 204;
  });
  await using service = await startService({
    KV_PATH: file.path,
    WINDOW_MS: "1000",
    REPORT_GRACE_MS: "100",
    WEBHOOK_ATTEMPTS: "1",
    SINK_RETRY_BASE_MS: "200",
    SINK_RETRY_MAX_MS: "400",
    ...LOOPBACK_ALLOW,
  });
  const hook = encodeURIComponent(`${receiver.url}/hook`);
  // Windows certainly given the URL, and those a request may have reached
  // either side of a window boundary.
  const windows = new Set<string>();
  const touched = new Set<string>();
  const windowOf = () => new Date(Date.now() - Date.now() % 1000).toISOString();
  const until = Date.now() + 3500;
  for (let id = 0; Date.now() < until; id++) {
    const before = windowOf();
    const response = await fetch(
      `${service.url}/api/verve/accept?id=${id}&url=${hook}`,
    );
    assert.equal(await response.text(), "ok");
    const after = windowOf();
    if (before === after) windows.add(before);
    touched.add(before).add(after);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  // Down for two more windows after the traffic, so every window has failed
  // at least once; then back.
  await new Promise((resolve) => setTimeout(resolve, 2000));
  assert.ok(receiver.received.length >= windows.size);
  assert.equal(delivered.length, 0);
  // What waits for the webhook shows in the metrics, per sink.
  const metrics = await (await fetch(`${service.url}/metrics`)).text();
  const waiting = /^verve_outbox_depth\{sink="webhook"\} (\d+)$/m.exec(metrics);
  assert.ok(Number(waiting?.[1]) >= 1, metrics);
  down = false;
  const deadline = Date.now() + 15_000;
  while (![...windows].every((minute) => delivered.includes(minute))) {
    assert.ok(
      Date.now() < deadline,
      `delivered ${delivered} of ${[...windows]}; log: ${
        JSON.stringify(
          service.lines.filter((line) => line.level !== "INFO").map((line) =>
            line.message
          ),
        )
      }`,
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  // Later ticks deliver nothing twice, and nothing for a window without it.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  assert.equal(new Set(delivered).size, delivered.length, `${delivered}`);
  for (const minute of delivered) assert.ok(touched.has(minute), minute);
  assert.equal(await service.stop("SIGTERM"), 0);
});

Deno.test("a remote Deno KV that answers 5xx, never answers or is gone gets 503 within KV_TIMEOUT_MS, and the service recovers and reports the window", async () => {
  await using remote = await startKvConnect();
  await using service = await startService({
    KV_PATH: remote.url,
    DENO_KV_ACCESS_TOKEN: remote.token,
    WINDOW_MS: "10000",
    REPORT_GRACE_MS: "300",
    KV_TIMEOUT_MS: "500",
  });
  let next = 0;
  const get = async () => {
    const started = performance.now();
    const response = await fetch(
      `${service.url}/api/verve/accept?id=${++next}`,
      // Without the time limit a request would wait for as long as the
      // database does.
      { signal: AbortSignal.timeout(5000) },
    );
    return {
      answer: `${response.status} ${await response.text()}`,
      ms: performance.now() - started,
    };
  };
  const window = await nextWindow(10_000, 50);
  const acked = new Set<number>();
  const ok = async () => {
    // Calls left to the client by a fault may still be landing.
    for (let attempt = 0; attempt < 50; attempt++) {
      const { answer } = await get();
      if (answer === "200 ok") return acked.add(next);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.fail("the service did not recover");
  };
  await ok();
  for (const { name, begin, end } of remoteFaults(remote)) {
    await begin();
    const { answer, ms } = await get();
    assert.equal(answer, "503 failed", name);
    // The time limit, and some time to answer: never a hang.
    assert.ok(ms < 1500, `${name}: answered after ${ms} ms`);
    await end();
    await ok();
  }
  assert.ok(Date.now() < window + 10_000, "the faults outlasted the window");
  // The window is reported with every acknowledged id; ids answered 503
  // may count too (their commit may have landed after the time limit).
  const report = await service.waitForLog(
    (line) =>
      line.logger === "verve.report" &&
      line.properties.minute === new Date(window).toISOString(),
    30_000,
  );
  const count = report.properties.unique_ids as number;
  assert.ok(count >= acked.size && count <= next, `${count} of ${next}`);
  assert.equal(await service.stop("SIGTERM"), 0);
});

Deno.test("a remote Deno KV that cannot be reached at start stops the service with exit code 1 and says why", async () => {
  await using remote = await startKvConnect();
  await remote.stop();
  const { code, lines } = await runServiceToExit({
    KV_PATH: remote.url,
    DENO_KV_ACCESS_TOKEN: remote.token,
    PORT: "0",
  });
  assert.equal(code, 1);
  const [error] = lines.filter((line) => line.level === "ERROR");
  assert.match(
    error!.message,
    /^Cannot open Deno KV http:\/\/127\.0\.0\.1:\d+\/: .*Connection refused/,
  );
  // Nor does a wrong token get further.
  await using other = await startKvConnect();
  const refused = await runServiceToExit({
    KV_PATH: other.url,
    DENO_KV_ACCESS_TOKEN: "wrong",
    PORT: "0",
  });
  assert.equal(refused.code, 1);
  assert.ok(
    refused.lines.some((line) => /401/.test(line.message)),
    JSON.stringify(refused.lines),
  );
});
