/**
 * Webhooks go only where the address policy allows: checked after DNS
 * resolution, connected to the checked address, never redirected.
 */
import assert from "node:assert/strict";
import type { lookup } from "node:dns";
import {
  blockedReason,
  createAddressPolicy,
} from "../../../lib/report/sinks/address_policy.ts";
import { createHandler } from "../../../lib/http/handler.ts";
import type { MinuteReport } from "../../../lib/report/sink.ts";
import {
  createWebhookSink,
  type WebhookUrls,
} from "../../../lib/report/sinks/webhook.ts";
import { createKvStore } from "../../../lib/store/kv/store_kv.ts";
import { createWebhookPost } from "../../../lib/report/sinks/webhook_post.ts";
import { captureLogs } from "../../helpers/logs.ts";
import { startReceiver } from "../../helpers/receiver.ts";

/** The URLs role of a store that owes the report to `urls`, always. */
function urlsOf(urls: string[]): WebhookUrls {
  return {
    listOwedUrls: () => Promise.resolve(urls),
    markUrlDone: () => Promise.resolve(),
  };
}

const M0 = Date.UTC(2026, 0, 1, 12, 0);
const REPORT: MinuteReport = {
  minute: "2026-01-01T12:00:00.000Z",
  unique_ids: 1,
  window_ms: 60_000,
  reported_at: "2026-01-01T12:01:02.000Z",
};

Deno.test("blockedReason() refuses internal address ranges, IPv4-mapped forms too", () => {
  const cases: [string, string | undefined][] = [
    ["127.0.0.1", "loopback"],
    ["127.255.0.9", "loopback"],
    ["10.1.2.3", "private"],
    ["172.16.0.1", "private"],
    ["172.31.255.255", "private"],
    ["172.32.0.1", undefined],
    ["192.168.1.1", "private"],
    ["100.64.0.1", "carrier-grade NAT"],
    ["100.128.0.1", undefined],
    ["169.254.169.254", "link-local"],
    ["0.0.0.0", "unspecified"],
    ["255.255.255.255", "broadcast"],
    ["224.0.0.251", "multicast"],
    ["8.8.8.8", undefined],
    ["93.184.216.34", undefined],
    ["::1", "loopback"],
    ["::", "unspecified"],
    ["fe80::1", "link-local"],
    ["fc00::1", "unique-local"],
    ["fd12:3456::1", "unique-local"],
    ["fec0::1", "site-local"],
    ["ff02::1", "multicast"],
    ["::ffff:127.0.0.1", "loopback"],
    ["::ffff:a9fe:a9fe", "link-local"],
    ["::ffff:8.8.8.8", undefined],
    ["64:ff9b::a9fe:a9fe", "link-local"], // NAT64 of 169.254.169.254
    ["64:ff9b::808:808", undefined],
    ["::127.0.0.1", "loopback"],
    ["::ffff:0:127.0.0.1", "loopback"],
    ["2002:7f00:1::", "loopback"], // 6to4 of 127.0.0.1
    ["2002:808:808::", undefined],
    ["198.18.0.1", "reserved"],
    ["192.0.0.170", "reserved"],
    ["2606:4700:4700::1111", undefined],
    ["not-an-ip", "not an IP address"],
    // Local-use NAT64 (RFC 8215): its layouts put the IPv4 address in
    // several places (RFC 6052), so the whole /48 is refused.
    ["64:ff9b:1:0:a:0:100:0", "local-use NAT64"], // 10.0.0.1, /64 layout
    ["64:ff9b:1:a9fe:a9:fe00:808:808", "local-use NAT64"], // /48 layout
    ["64:ff9b:1::808:808", "local-use NAT64"],
    // Teredo: the server and the (inverted) client address both count.
    ["2001:0:a9fe:a9fe::", "link-local"], // server 169.254.169.254
    ["2001:0:808:808:0:0:f5ff:fffe", "private"], // client 10.0.0.1
    ["2001:0:808:808:0:0:f7f7:f7f7", undefined], // client 8.8.8.8
    ["::ffff:0:a9fe:a9fe", "link-local"], // IPv4-translated
    ["::a9fe:a9fe", "link-local"], // IPv4-compatible 169.254.169.254
    ["::a00:1", "private"], // IPv4-compatible 10.0.0.1
    ["::808:808", undefined], // IPv4-compatible 8.8.8.8
    ["fe80::1%eth-0", "not an IP address"], // a zone ipaddr.js refuses
    // Not globally reachable in IANA's special-purpose registries.
    ["192.0.2.1", "reserved"],
    ["198.51.100.7", "reserved"],
    ["203.0.113.9", "reserved"],
    ["192.88.99.1", "reserved"],
    ["240.0.0.1", "reserved"],
    ["2001:db8::1", "reserved"],
    ["3fff::1", "reserved"],
    ["100::1", "discard-only"],
    ["2001:2::1", "for benchmarking"],
    ["2001:10::1", "ORCHID"],
    ["2001:20::1", "ORCHIDv2"],
    ["5f00::1", "an SRv6 segment"],
    ["192.175.48.1", "AS112"],
  ];
  for (const [address, reason] of cases) {
    assert.equal(blockedReason(address), reason, address);
  }
});

Deno.test("createAddressPolicy() allows listed hosts and ranges, and can accept only those", () => {
  const policy = createAddressPolicy({
    allow: ["127.0.0.1/32", "Hooks.Internal", "10.8.0.0/16"],
  });
  assert.equal(policy.checkAddress("a.example", "127.0.0.1"), undefined);
  assert.equal(
    policy.checkAddress("a.example", "127.0.0.2"),
    "127.0.0.2 is loopback",
  );
  assert.equal(policy.checkAddress("hooks.internal", "10.0.0.1"), undefined);
  assert.equal(policy.checkAddress("a.example", "10.8.3.4"), undefined);
  assert.equal(
    policy.checkAddress("a.example", "10.9.3.4"),
    "10.9.3.4 is private",
  );
  assert.equal(policy.checkHost("localhost"), "localhost is loopback");
  assert.equal(policy.checkHost("[::1]"), "::1 is loopback");
  assert.equal(policy.checkHost("example.com"), undefined);
  assert.equal(policy.checkUrl("https://example.com/x"), undefined);
  assert.equal(
    policy.checkUrl("ftp://example.com/"),
    "ftp: is not http or https",
  );
  assert.equal(
    policy.checkUrl("http://example.com:0/"),
    "port 0 cannot be reached",
  );
  assert.equal(policy.checkUrl("http://[fe80::1]/"), "fe80::1 is link-local");

  const only = createAddressPolicy({
    allow: ["hooks.example.com"],
    allowlistOnly: true,
  });
  assert.equal(only.checkHost("hooks.example.com"), undefined);
  assert.equal(
    only.checkHost("example.com"),
    "example.com is not in the allowlist",
  );
  assert.equal(
    only.checkAddress("example.com", "93.184.216.34"),
    "93.184.216.34 is not in the allowlist",
  );

  for (const bad of ["http://x", "10.0.0.0/40", "a b"]) {
    assert.throws(() => createAddressPolicy({ allow: [bad] }), TypeError, bad);
  }
});

/** Resolves every name to 127.0.0.1, as a DNS answer pointing inside would. */
const toLoopback = ((
  _name: string,
  _options: unknown,
  callback: (e: null, a: { address: string; family: number }[]) => void,
) =>
  callback(null, [{
    address: "127.0.0.1",
    family: 4,
  }])) as unknown as typeof lookup;

Deno.test("webhook sink refuses URLs whose host is or resolves to a refused address", async (t) => {
  await using logs = await captureLogs();
  await using receiver = startReceiver();
  await using store = createKvStore(await Deno.openKv(":memory:"), {
    retentionMs: 600_000,
  });
  const port = new URL(receiver.url).port;
  const deliverTo = async (
    url: string,
    post = createWebhookPost(createAddressPolicy()),
  ) => {
    await store.recordUrl(M0, url);
    logs.records.length = 0;
    await createWebhookSink({
      store: urlsOf([url]),
      logger: logs.logger("webhook"),
      post,
      retryBaseMs: 1,
    }).send(REPORT, M0);
    return logs.of("webhook").map((
      r,
    ) => [r.level, r.properties.reason ?? r.properties.status]);
  };

  await t.step("an address literal", async () => {
    assert.deepEqual(await deliverTo(`${receiver.url}/a`), [[
      "error",
      "127.0.0.1 is loopback",
    ]]);
    assert.deepEqual(await deliverTo(`http://[::ffff:127.0.0.1]:${port}/a`), [[
      "error",
      "::ffff:7f00:1 is loopback",
    ]]);
  });
  await t.step("localhost", async () => {
    assert.deepEqual(await deliverTo(`http://localhost:${port}/a`), [[
      "error",
      "localhost is loopback",
    ]]);
  });
  await t.step("a name that resolves to loopback", async () => {
    const post = createWebhookPost(createAddressPolicy(), {
      resolve: toLoopback,
    });
    assert.deepEqual(
      await deliverTo(`http://hooks.example.test:${port}/a`, post),
      [["error", "127.0.0.1 is loopback"]],
    );
  });
  await t.step("a name that resolves to no address at all", async () => {
    const toNothing = ((
      _name: string,
      _options: unknown,
      callback: (e: null, a: unknown[]) => void,
    ) => callback(null, [])) as unknown as typeof lookup;
    const post = createWebhookPost(createAddressPolicy(), {
      resolve: toNothing,
    });
    assert.deepEqual(
      await deliverTo(`http://empty.example.test:${port}/a`, post),
      [["error", "empty.example.test resolves to no address"]],
    );
  });
  assert.equal(receiver.received.length, 0);

  await t.step(
    "allowed, it connects to the checked address, with the name as Host",
    async () => {
      const post = createWebhookPost(
        createAddressPolicy({ allow: ["127.0.0.1/32"] }),
        { resolve: toLoopback },
      );
      assert.deepEqual(
        await deliverTo(`http://hooks.example.test:${port}/b`, post),
        [["info", 204]],
      );
      assert.equal(receiver.received.length, 1);
      assert.equal(receiver.received[0]!.host, `hooks.example.test:${port}`);
      assert.deepEqual(JSON.parse(receiver.received[0]!.body), REPORT);
    },
  );
});

Deno.test("webhook sink does not follow redirects", async () => {
  await using logs = await captureLogs();
  await using receiver = startReceiver((request) =>
    request.path === "/start"
      ? new Response(null, { status: 302, headers: { location: "/elsewhere" } })
      : 204
  );
  await createWebhookSink({
    store: urlsOf([`${receiver.url}/start`]),
    logger: logs.logger("webhook"),
    post: createWebhookPost(createAddressPolicy({ allow: ["127.0.0.1/32"] })),
    retryBaseMs: 1,
  }).send(REPORT, M0);
  assert.deepEqual(receiver.received.map((r) => r.path), ["/start"]);
  assert.deepEqual(
    logs.of("webhook").map((r) => [r.level, r.properties.status]),
    [["warning", 302], ["error", undefined]],
  );
});

Deno.test("handler refuses undeliverable webhook URLs at request time when asked", async () => {
  await using logs = await captureLogs();
  await using store = createKvStore(await Deno.openKv(":memory:"), {
    retentionMs: 600_000,
  });
  const policy = createAddressPolicy();
  const handle = createHandler({
    store,
    logger: logs.logger("http"),
    refuseUrl: (url) => policy.checkUrl(url),
  });
  const call = async (url: string) => {
    const response = await handle(
      new Request(
        `http://service.test/api/verve/accept?id=1&url=${
          encodeURIComponent(url)
        }`,
      ),
    );
    return `${response.status} ${await response.text()}`;
  };
  assert.equal(await call("http://127.0.0.1/hook"), "400 failed");
  assert.equal(
    await call("http://169.254.169.254/latest/meta-data"),
    "400 failed",
  );
  assert.equal(await call("http://localhost:8080/"), "400 failed");
  assert.equal(await call("http://hooks.example.com:0/"), "400 failed");
  assert.equal(await call("https://hooks.example.com/verve"), "200 ok");
  assert.deepEqual(
    await store.listOwedUrls(Date.now() - (Date.now() % 60_000)),
    [
      "https://hooks.example.com/verve",
    ],
  );
});
