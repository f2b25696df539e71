import assert from "node:assert/strict";
import {
  MAX_QUERY_LENGTH,
  MAX_QUERY_PARAMS,
  MAX_URL_LENGTH,
  parseAcceptQuery,
  parseId,
  parseWebhookUrl,
} from "../../lib/http/accept_query.ts";

/** An `http://example.com/aaa…` URL of exactly `length` characters. */
function urlOfLength(length: number): string {
  const prefix = "http://example.com/";
  return prefix + "a".repeat(length - prefix.length);
}

Deno.test("parseId() returns the canonical form of valid ids", async (t) => {
  const cases: [string, string][] = [
    ["0", "0"],
    ["-0", "0"],
    ["00", "0"],
    ["-000", "0"],
    ["7", "7"],
    ["-7", "-7"],
    ["007", "7"],
    ["-007", "-7"],
    ["10", "10"],
    ["-100", "-100"],
    ["1234567890", "1234567890"],
    ["9223372036854775807", "9223372036854775807"],
    ["-9223372036854775808", "-9223372036854775808"],
    ["9223372036854775806", "9223372036854775806"],
    ["-9223372036854775807", "-9223372036854775807"],
    ["1000000000000000000", "1000000000000000000"],
    ["0".repeat(100) + "42", "42"],
    ["-" + "0".repeat(100) + "42", "-42"],
    ["0".repeat(100), "0"],
    ["-" + "0".repeat(100), "0"],
    ["0".repeat(50) + "9223372036854775807", "9223372036854775807"],
    ["-" + "0".repeat(50) + "9223372036854775808", "-9223372036854775808"],
  ];
  for (const [raw, expected] of cases) {
    await t.step(`${JSON.stringify(raw.slice(0, 40))} → ${expected}`, () => {
      assert.equal(parseId(raw), expected);
    });
  }
});

Deno.test("parseId() rejects everything that is not a 64-bit decimal integer", async (t) => {
  const cases = [
    "",
    "-",
    "--1",
    "-+1",
    "+1",
    "+",
    "1-",
    "1.5",
    "1.",
    ".1",
    "1,000",
    "1_000",
    "abc",
    "7a",
    " 1",
    "1 ",
    "\t1",
    "1\n",
    "- 1",
    "9223372036854775808",
    "-9223372036854775809",
    "09223372036854775808",
    "-09223372036854775809",
    "10000000000000000000",
    "99999999999999999999",
    "-99999999999999999999",
    "0".repeat(50) + "9223372036854775808",
    "1e3",
    "1E3",
    "0x10",
    "0b1",
    "0o7",
    "Infinity",
    "NaN",
    "١٢",
    "１２",
    "1\u0000",
    "\u00001",
  ];
  for (const raw of cases) {
    await t.step(JSON.stringify(raw), () => {
      assert.equal(parseId(raw), undefined);
    });
  }
});

Deno.test("parseWebhookUrl() returns the normalised href of http and https URLs", async (t) => {
  const cases: [string, string][] = [
    ["http://example.com/a", "http://example.com/a"],
    ["https://example.com/hook", "https://example.com/hook"],
    ["HTTP://Example.COM/a", "http://example.com/a"],
    ["HTTPS://EXAMPLE.com/A", "https://example.com/A"],
    ["http://example.com", "http://example.com/"],
    ["http://example.com:80/x", "http://example.com/x"],
    ["https://example.com:443/x", "https://example.com/x"],
    ["https://example.com:8443/x", "https://example.com:8443/x"],
    ["http://127.0.0.1:8080/hook", "http://127.0.0.1:8080/hook"],
    ["http://[::1]:8080/hook", "http://[::1]:8080/hook"],
    ["http://example.com/a/../b/./c", "http://example.com/b/c"],
    ["https://example.com/h?x=1&y=2#f", "https://example.com/h?x=1&y=2#f"],
    ["http://example.com/\u00e9", "http://example.com/%C3%A9"],
    ["http://bücher.example/", "http://xn--bcher-kva.example/"],
    ["http://user:pw@example.com/", "http://user:pw@example.com/"],
  ];
  for (const [raw, expected] of cases) {
    await t.step(`${raw} → ${expected}`, () => {
      assert.equal(parseWebhookUrl(raw), expected);
    });
  }
});

Deno.test("parseWebhookUrl() rejects other schemes, relative URLs and bad characters", async (t) => {
  const cases = [
    "",
    "ftp://example.com/x",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "data:text/plain,hi",
    "mailto:a@example.com",
    "ws://example.com/",
    "/x",
    "x",
    "//example.com/x",
    "example.com/x",
    "http://",
    "https://",
    "http:",
    "http://exa mple.com/",
    "http://example.com/a b",
    " http://example.com/",
    "http://example.com/ ",
    "http://example.com/\ta",
    "http://example.com/\na",
    "http://example.com/\ra",
    "http://example.com/\u0000",
    "http://example.com/\u001f",
    "http://example.com/\u007f",
    "http://exa\u00a0mple.com/",
    "http://[::1/",
    "http://example.com:99999/",
  ];
  for (const raw of cases) {
    await t.step(JSON.stringify(raw), () => {
      assert.equal(parseWebhookUrl(raw), undefined);
    });
  }
});

Deno.test("parseWebhookUrl() accepts at most MAX_URL_LENGTH characters", async (t) => {
  assert.equal(MAX_URL_LENGTH, 2048);

  await t.step("exactly 2048 characters is accepted unchanged", () => {
    const url = urlOfLength(2048);
    assert.equal(url.length, 2048);
    assert.equal(parseWebhookUrl(url), url);
  });

  await t.step("2047 characters is accepted unchanged", () => {
    const url = urlOfLength(2047);
    assert.equal(parseWebhookUrl(url), url);
  });

  await t.step("2049 characters is rejected", () => {
    const url = urlOfLength(2049);
    assert.equal(url.length, 2049);
    assert.equal(parseWebhookUrl(url), undefined);
  });

  await t.step(
    "2048 characters whose normalised href is longer is rejected",
    () => {
      // "é" becomes "%C3%A9", so the href grows past the limit.
      const url = urlOfLength(2047) + "\u00e9";
      assert.equal(url.length, 2048);
      assert.equal(parseWebhookUrl(url), undefined);
    },
  );
});

Deno.test("parseAcceptQuery() parses id and the optional url", async (t) => {
  const cases: [string, { id: string; url?: string }][] = [
    ["id=7", { id: "7" }],
    ["id=007", { id: "7" }],
    ["id=-0", { id: "0" }],
    ["id=-42", { id: "-42" }],
    ["id=%2D42", { id: "-42" }],
    ["id=%37", { id: "7" }],
    ["%69d=5", { id: "5" }],
    ["%69%64=5", { id: "5" }],
    ["id=5&other=1", { id: "5" }],
    ["other=1&id=5", { id: "5" }],
    ["id=5&x=%ZZ", { id: "5" }],
    ["id=5&ID=6", { id: "5" }],
    ["id=5&&", { id: "5" }],
    ["&&id=5", { id: "5" }],
    ["&id=5&", { id: "5" }],
    ["id=5&=&x", { id: "5" }],
    [
      "id=7&url=https%3A%2F%2Fexample.com%2Fhook",
      { id: "7", url: "https://example.com/hook" },
    ],
    [
      "url=https%3A%2F%2Fexample.com%2Fhook&id=7",
      { id: "7", url: "https://example.com/hook" },
    ],
    [
      "id=7&url=https://example.com/hook",
      { id: "7", url: "https://example.com/hook" },
    ],
    [
      "id=7&url=HTTP%3A%2F%2FExample.COM%2Fa",
      { id: "7", url: "http://example.com/a" },
    ],
    [
      "id=7&url=https%3A%2F%2Fexample.com%2Fh%3Fa%3D1%26b%3D2",
      { id: "7", url: "https://example.com/h?a=1&b=2" },
    ],
    [
      "id=7&url=https%3A%2F%2Fexample.com%2Fa%2Bb",
      { id: "7", url: "https://example.com/a+b" },
    ],
  ];
  for (const [query, expected] of cases) {
    await t.step(JSON.stringify(query), () => {
      assert.deepEqual(parseAcceptQuery(query), expected);
    });
  }

  await t.step("a query without url has no url key", () => {
    const result = parseAcceptQuery("id=7");
    assert.ok(result !== undefined);
    assert.deepEqual(Object.keys(result), ["id"]);
  });
});

Deno.test("parseAcceptQuery() rejects bad queries", async (t) => {
  const cases = [
    "",
    "&",
    "&&",
    "id=",
    "id",
    "id&x=1",
    "ID=5",
    "idx=5",
    "x=5",
    "url=https%3A%2F%2Fexample.com",
    "id=abc",
    "id=1.5",
    "id=+1",
    "id=%2B1",
    "id=%201",
    "id=9223372036854775808",
    "id=1&id=1",
    "id=1&id=2",
    "id=1&%69d=1",
    "id=1&id=",
    "id=1&url=https%3A%2F%2Fa.example&url=https%3A%2F%2Fa.example",
    "id=1&url=https%3A%2F%2Fa.example&url=https%3A%2F%2Fb.example",
    "id=%ZZ",
    "id=%",
    "id=%2",
    "id=%E0%A4%A",
    "id=%FF",
    "%ZZ=1&id=5",
    "id=5&url=%ZZ",
    "id=1&url=",
    "id=1&url",
    "id=1&url=ftp%3A%2F%2Fexample.com",
    "id=1&url=javascript%3Aalert(1)",
    "id=1&url=%2Fx",
    "id=1&url=not-a-url",
    "id=1&url=http%3A%2F%2F",
    "id=1&url=http://example.com/a+b",
    "id=1&url=http%3A%2F%2Fexample.com%2F%00",
    "id=1&url=" + encodeURIComponent(urlOfLength(2049)),
    "id=bad&url=https%3A%2F%2Fexample.com",
  ];
  for (const query of cases) {
    await t.step(JSON.stringify(query.slice(0, 60)), () => {
      assert.equal(parseAcceptQuery(query), undefined);
    });
  }
});

Deno.test("parseAcceptQuery() allows at most MAX_QUERY_PARAMS parameters", async (t) => {
  assert.equal(MAX_QUERY_PARAMS, 8);
  const others = (n: number) =>
    Array.from({ length: n }, (_, i) => `p${i}=1`).join("&");

  await t.step("8 parameters including id are accepted", () => {
    assert.deepEqual(parseAcceptQuery(`id=3&${others(7)}`), { id: "3" });
  });

  await t.step("8 parameters including id and url are accepted", () => {
    assert.deepEqual(
      parseAcceptQuery(`id=3&url=http%3A%2F%2Fa.example&${others(6)}`),
      { id: "3", url: "http://a.example/" },
    );
  });

  await t.step("9 parameters are rejected with id first", () => {
    assert.equal(parseAcceptQuery(`id=3&${others(8)}`), undefined);
  });

  await t.step("9 parameters are rejected with id last", () => {
    assert.equal(parseAcceptQuery(`${others(8)}&id=3`), undefined);
  });

  await t.step("empty segments do not count as parameters", () => {
    assert.deepEqual(
      parseAcceptQuery(`id=3&&${others(7)}&&&`),
      { id: "3" },
    );
  });
});

Deno.test("parseAcceptQuery() refuses a query longer than MAX_QUERY_LENGTH before decoding it", () => {
  const longUrl = "https%3A%2F%2Fexample.com%2F" + "%41".repeat(680);
  const query = `id=1&url=${longUrl}`;
  assert.ok(query.length <= MAX_QUERY_LENGTH);
  assert.equal(parseAcceptQuery(query)?.id, "1");
  assert.equal(
    parseAcceptQuery(`id=1&pad=${"x".repeat(MAX_QUERY_LENGTH)}`),
    undefined,
  );
  assert.equal(
    parseAcceptQuery(`${"&".repeat(MAX_QUERY_LENGTH)}id=1`),
    undefined,
  );
});
