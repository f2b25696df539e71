import assert from "node:assert/strict";
import { getLogger } from "@logtape/logtape";
import { configureLogging } from "../../lib/telemetry/logging.ts";

/** Collects what the logger writes to its stream. */
function memoryStream() {
  const chunks: string[] = [];
  const decoder = new TextDecoder();
  const stream = new WritableStream<Uint8Array>({
    write(chunk) {
      chunks.push(decoder.decode(chunk));
    },
  });
  return { stream, lines: () => chunks.join("").split("\n").filter(Boolean) };
}

Deno.test("configureLogging() writes one JSON object per line, with plain values in the message", async () => {
  const out = memoryStream();
  const close = await configureLogging("info", { stream: out.stream });
  const logger = getLogger(["verve", "report"]);
  logger.debug("below the level");
  logger.info("Window {minute} had {unique_ids} unique ids", {
    minute: "2026-01-01T12:00:00.000Z",
    unique_ids: 3,
    big: 9223372036854775807n,
  });
  logger.warn("Seen {ids}", { ids: ["a", 1] });
  await close();
  const lines = out.lines().map((line) => JSON.parse(line));
  assert.equal(lines.length, 2);
  assert.deepEqual(
    { ...lines[0], "@timestamp": undefined },
    {
      "@timestamp": undefined,
      level: "INFO",
      message: "Window 2026-01-01T12:00:00.000Z had 3 unique ids",
      logger: "verve.report",
      properties: {
        minute: "2026-01-01T12:00:00.000Z",
        unique_ids: 3,
        big: "9223372036854775807",
      },
    },
  );
  assert.ok(!Number.isNaN(Date.parse(lines[0]["@timestamp"])));
  assert.equal(lines[1].level, "WARNING");
  assert.equal(lines[1].message, 'Seen ["a",1]');
});

Deno.test("configureLogging() leaves loggers outside the service alone", async () => {
  const out = memoryStream();
  const close = await configureLogging("trace", { stream: out.stream });
  getLogger(["other"]).error("not ours");
  getLogger(["verve", "x"]).trace("ours");
  await close();
  assert.deepEqual(out.lines().map((l) => JSON.parse(l).message), ["ours"]);
});
