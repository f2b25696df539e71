/**
 * End to end: the real service process with a KV file, real HTTP requests,
 * a real webhook receiver, and its log read from stdout. Windows are a few
 * seconds long (WINDOW_MS) so the test sees several of them.
 */
import assert from "node:assert/strict";
import { formatMinute, windowStart } from "../lib/minute.ts";
import { tempKvPath } from "./helpers/kv.ts";
import { makeTestCertificates, skipWithoutOpenssl } from "./helpers/tls.ts";
import { nextWindow, withinOneWindow } from "./helpers/windows.ts";
import { startKvConnect } from "./helpers/kv_connect.ts";
import { LOOPBACK_ALLOW, startReceiver } from "./helpers/receiver.ts";
import {
  type LogLine,
  runServiceToExit,
  type Service,
  startService,
} from "./helpers/service.ts";

const WINDOW_MS = 2000;

function serviceEnv(kvPath: string): Record<string, string> {
  return {
    KV_PATH: kvPath,
    WINDOW_MS: String(WINDOW_MS),
    REPORT_GRACE_MS: "300",
    WEBHOOK_TIMEOUT_MS: "2000",
    ...LOOPBACK_ALLOW,
  };
}

async function get(service: Service, query: string, method = "GET") {
  const response = await fetch(`${service.url}/api/verve/accept?${query}`, {
    method,
  });
  return { status: response.status, body: await response.text() };
}

function reportOf(minute: number) {
  const iso = formatMinute(minute);
  return (line: LogLine) =>
    line.logger === "verve.report" && line.properties.minute === iso;
}

Deno.test("the service counts unique ids per window and reports each window once to the log and to every webhook URL", async () => {
  await using file = await tempKvPath();
  await countsAndReports(serviceEnv(file.path));
});

Deno.test("on a remote Deno KV over KV Connect, its token in KV_ACCESS_TOKEN as on Deno Deploy, the service counts and reports the same", async () => {
  await using remote = await startKvConnect();
  await countsAndReports({
    ...serviceEnv(remote.url),
    KV_ACCESS_TOKEN: remote.token,
  });
  assert.ok(remote.stats.atomicWrites > 0);
  assert.deepEqual(remote.stats.refused, []);
  // The id log on connections of its own (KV_CONNECTIONS), the rest on one.
  assert.ok(remote.stats.perConnection.connections.size > 1);
  assert.ok(remote.stats.metadataExchanges >= 64);
});

/**
 * Valid and invalid requests in one window of a service started with `env`:
 * the answers, the report in the log and to each webhook URL, the next,
 * empty window reported as zero, and a clean stop.
 */
async function countsAndReports(env: Record<string, string>) {
  await using receiver = startReceiver();
  await using service = await startService(env);

  const hook = (path: string) => encodeURIComponent(`${receiver.url}${path}`);
  const expected: [query: string, valid: boolean][] = [
    ["id=1", true],
    ["id=2", true],
    ["id=7", true],
    ["id=007", true], // the same id as 7
    ["id=-3", true],
    ["id=2", true],
    [`id=4&url=${hook("/a")}`, true],
    [`id=1&url=${hook("/a")}`, true],
    [`id=9223372036854775807&url=${hook("/b")}`, true],
    ["id=abc", false],
    ["id=1.5", false],
    ["id=9223372036854775808", false],
    ["id=1&id=2", false],
    ["url=http%3A%2F%2Fexample.com%2F", false],
    ["id=5&url=ftp%3A%2F%2Fexample.com%2F", false],
    ["", false],
  ];
  let answers: { status: number; body: string }[] = [];
  const window = await withinOneWindow(WINDOW_MS, async () => {
    answers = await Promise.all(expected.map(([q]) => get(service, q)));
  });
  expected.forEach(([query, valid], i) => {
    assert.deepEqual(
      answers[i],
      valid ? { status: 200, body: "ok" } : { status: 400, body: "failed" },
      query,
    );
  });

  // 1, 2, 7, -3, 4, 9223372036854775807: six distinct ids.
  const report = await service.waitForLog(reportOf(window));
  assert.equal(report.level, "INFO");
  assert.equal(report.properties.unique_ids, 6);
  assert.equal(report.properties.window_ms, WINDOW_MS);

  await receiver.waitFor(2);
  assert.deepEqual(receiver.received.map((r) => r.path).sort(), ["/a", "/b"]);
  for (const request of receiver.received) {
    assert.equal(request.method, "POST");
    assert.deepEqual(JSON.parse(request.body), report.properties);
  }

  // The next window had no traffic: it is reported as zero, and no window is
  // reported twice.
  const empty = await service.waitForLog(reportOf(window + WINDOW_MS));
  assert.equal(empty.properties.unique_ids, 0);
  const reported = service.lines
    .filter((l) => l.logger === "verve.report")
    .map((l) => l.properties.minute);
  assert.equal(new Set(reported).size, reported.length);
  assert.equal(receiver.received.length, 2);

  assert.equal(await service.stop("SIGTERM"), 0);
  assert.ok(
    service.lines.some((l) => l.message.startsWith("Received SIGTERM")),
  );
}

Deno.test("answers other methods, paths and HEAD as specified", async () => {
  await using file = await tempKvPath();
  await using service = await startService(serviceEnv(file.path));
  const head = await fetch(`${service.url}/api/verve/accept?id=1`, {
    method: "HEAD",
  });
  assert.equal(head.status, 200);
  assert.equal(await head.text(), "");
  const post = await fetch(`${service.url}/api/verve/accept?id=1`, {
    method: "POST",
  });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get("allow"), "GET, HEAD");
  await post.body?.cancel();
  const missing = await fetch(`${service.url}/nope`);
  assert.equal(missing.status, 404);
  await missing.body?.cancel();
  assert.equal(await service.stop("SIGTERM"), 0);
});

Deno.test("a restarted service reports windows it missed, and none twice", async () => {
  await using file = await tempKvPath();
  const env = serviceEnv(file.path);
  let window: number;
  {
    await using first = await startService(env);
    window = await withinOneWindow(WINDOW_MS, async () => {
      for (const id of ["10", "11", "12", "10"]) {
        assert.equal((await get(first, `id=${id}`)).body, "ok");
      }
    });
    // Killed before its window is due: nothing was reported.
    assert.notEqual(await first.stop("SIGKILL"), 0);
    assert.ok(!first.lines.some(reportOf(window)));
  }
  // Restarted after the window closed: the catch-up reports it.
  await nextWindow(WINDOW_MS, WINDOW_MS / 2);
  await using second = await startService(env);
  const report = await second.waitForLog(reportOf(window));
  assert.equal(report.properties.unique_ids, 3);
  assert.equal(await second.stop("SIGTERM"), 0);

  // A third start on the same store does not report it again.
  await using third = await startService(env);
  const current = windowStart(Date.now(), WINDOW_MS);
  await third.waitForLog(reportOf(current));
  assert.ok(!third.lines.some(reportOf(window)));
  assert.equal(await third.stop("SIGTERM"), 0);
});

Deno.test("a bad setting stops the service with exit code 2 and names the variable", async () => {
  const { code, stderr } = await runServiceToExit({ WINDOW_MS: "soon" });
  assert.equal(code, 2);
  assert.match(stderr, /WINDOW_MS/);
  assert.match(stderr, /"soon"/);
});

Deno.test("in buffered mode ids acknowledged just before SIGTERM are all counted", async () => {
  await using file = await tempKvPath();
  const env = { ...serviceEnv(file.path), ACK_MODE: "buffered" };
  const ids = Array.from({ length: 400 }, (_, i) => String(1000 + (i % 300)));
  let window: number;
  {
    await using first = await startService(env);
    window = await withinOneWindow(WINDOW_MS, async () => {
      // 20 connections at once; the signal follows the last answer at once.
      for (let i = 0; i < ids.length; i += 20) {
        const answers = await Promise.all(
          ids.slice(i, i + 20).map((id) => get(first, `id=${id}`)),
        );
        for (const answer of answers) assert.equal(answer.body, "ok");
      }
    });
    assert.equal(await first.stop("SIGTERM"), 0);
  }
  await using second = await startService(env);
  const report = await second.waitForLog(reportOf(window));
  assert.equal(report.properties.unique_ids, 300);
  assert.equal(await second.stop("SIGTERM"), 0);
});

Deno.test("in buffered mode ids arriving within BUFFER_GATHER_MS of a commit gather into the next one", async () => {
  await using file = await tempKvPath();
  await using service = await startService({
    ...serviceEnv(file.path),
    ACK_MODE: "buffered",
    REPORT_GRACE_MS: "1000",
    BUFFER_FLUSH_MS: "800",
    BUFFER_GATHER_MS: "400",
  });
  const batches = async () => {
    const text = await (await fetch(`${service.url}/metrics`)).text();
    const value = (name: string) =>
      Number(text.match(new RegExp(`^${name} (\\d+)$`, "m"))?.[1] ?? 0);
    return {
      count: value("verve_store_batch_size_count"),
      sum: value("verve_store_batch_size_sum"),
    };
  };
  const window = await nextWindow(WINDOW_MS, 50);
  assert.equal((await get(service, "id=1")).body, "ok");
  while ((await batches()).count < 1) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  // Four groups 50 ms apart: without gathering, a commit each at least.
  for (let group = 0; group < 4; group++) {
    const answers = await Promise.all(
      Array.from(
        { length: 10 },
        (_, i) => get(service, `id=${100 + 10 * group + i}`),
      ),
    );
    for (const answer of answers) assert.equal(answer.body, "ok");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const report = await service.waitForLog(reportOf(window));
  assert.equal(report.properties.unique_ids, 41);
  const { count, sum } = await batches();
  assert.equal(sum, 41);
  // The first commit, then one of all (or one of the first id that came
  // after the gathering time, and one of the rest).
  assert.ok(count <= 3, `${count} commits`);
  assert.equal(await service.stop("SIGTERM"), 0);
});

Deno.test({
  name: "with TLS_CERT_FILE and TLS_KEY_FILE the service speaks HTTPS",
  ignore: skipWithoutOpenssl(),
}, async () => {
  await using file = await tempKvPath();
  const tls = await makeTestCertificates(file.dir);
  await using service = await startService({
    KV_PATH: file.path,
    TLS_CERT_FILE: tls.certFile,
    TLS_KEY_FILE: tls.keyFile,
  });
  assert.match(service.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  using client = Deno.createHttpClient({
    caCerts: [tls.caPem],
  });
  const response = await fetch(`${service.url}/api/verve/accept?id=1`, {
    client,
  });
  assert.equal(`${response.status} ${await response.text()}`, "200 ok");
  // Plain HTTP gets no answer from the TLS port.
  const plain = service.url.replace("https:", "http:");
  await assert.rejects(fetch(`${plain}/healthz`));
  assert.equal(await service.stop("SIGTERM"), 0);

  const missing = await runServiceToExit({
    KV_PATH: file.path,
    PORT: "0",
    TLS_CERT_FILE: `${file.dir}/nope.pem`,
    TLS_KEY_FILE: tls.keyFile,
  });
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /Cannot read TLS_CERT_FILE/);
});

Deno.test("GET /metrics counts requests, ids, commits and report deliveries", async () => {
  await using file = await tempKvPath();
  await using service = await startService(serviceEnv(file.path));
  const window = await withinOneWindow(WINDOW_MS, async () => {
    for (const query of ["id=1", "id=2", "id=1", "id=x"]) {
      await (await fetch(`${service.url}/api/verve/accept?${query}`)).body
        ?.cancel();
    }
  });
  await service.waitForLog(reportOf(window));
  const response = await fetch(`${service.url}/metrics`);
  assert.equal(
    response.headers.get("content-type"),
    "text/plain; version=0.0.4; charset=utf-8",
  );
  const text = await response.text();
  const value = (series: string) => {
    const line = text.split("\n").find((l) => l.startsWith(`${series} `));
    return line === undefined
      ? undefined
      : Number(line.slice(series.length + 1));
  };
  assert.equal(
    value('verve_http_requests_total{route="accept",status="200"}'),
    3,
  );
  assert.equal(
    value('verve_http_requests_total{route="accept",status="400"}'),
    1,
  );
  assert.equal(value('verve_ids_total{outcome="new"}'), 2);
  assert.equal(value('verve_ids_total{outcome="repeat"}'), 1);
  assert.ok(value("verve_store_batch_size_count")! >= 1);
  assert.ok(value('verve_reports_total{sink="log",outcome="delivered"}')! >= 1);
  for (const sink of ["log", "webhook"]) {
    assert.ok(value(`verve_outbox_depth{sink="${sink}"}`)! >= 0, sink);
  }
  assert.equal(await service.stop("SIGTERM"), 0);
});

Deno.test("with WEBHOOK_REJECT_UNDELIVERABLE, undeliverable webhook URLs get 400 at once", async () => {
  await using file = await tempKvPath();
  await using service = await startService({
    KV_PATH: file.path,
    WEBHOOK_REJECT_UNDELIVERABLE: "true",
  });
  const call = async (url: string) => {
    const response = await fetch(
      `${service.url}/api/verve/accept?id=7&url=${encodeURIComponent(url)}`,
    );
    return `${response.status} ${await response.text()}`;
  };
  assert.equal(await call("http://10.0.0.1/hook"), "400 failed");
  assert.equal(await call("http://169.254.169.254/latest/"), "400 failed");
  assert.equal(await call("https://hooks.example.com/verve"), "200 ok");
  assert.equal(await service.stop("SIGTERM"), 0);
});
