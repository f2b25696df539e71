/**
 * The status page in a real browser: headless Chromium from Debian's
 * `chromium` package, driven by playwright-core, against the real service.
 * Skips with a message where Chromium is missing, except under `CI=true`.
 */
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { tempKvPath } from "../helpers/kv.ts";
import { skipUnless } from "../helpers/requirements.ts";
import { type LogLine, startService } from "../helpers/service.ts";
import { withinOneWindow } from "../helpers/windows.ts";

const CHROMIUM = "/usr/bin/chromium";
const SCREENSHOT_DIR = new URL("../../test-output/", import.meta.url).pathname;
const WINDOW_MS = 1000;

const ignore = skipUnless(
  await Deno.stat(CHROMIUM).then(() => true, () => false),
  "chromium",
  "chromium",
);

Deno.test({
  name:
    "the status page shows the counts and sink states the stats API returns",
  ignore,
  // playwright keeps pipes and timers of its own browser process.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using file = await tempKvPath();
    await using service = await startService({
      KV_PATH: file.path,
      WINDOW_MS: String(WINDOW_MS),
      REPORT_GRACE_MS: "100",
    });
    const send = async (ids: string[]) => {
      for (const id of ids) {
        const response = await fetch(
          `${service.url}/api/verve/accept?id=${id}`,
        );
        assert.equal(await response.text(), "ok");
      }
    };
    const reported = (minute: number) => (line: LogLine) =>
      line.logger === "verve.report" &&
      line.properties.minute === new Date(minute).toISOString();
    const first = await withinOneWindow(
      WINDOW_MS,
      () => send(["1", "2", "3", "2", "4", "5"]),
    );
    const second = await withinOneWindow(
      WINDOW_MS,
      () => send(["7", "8", "7", "9"]),
    );
    await service.waitForLog(reported(second));

    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
      ],
    });
    try {
      const page = await browser.newPage({
        viewport: { width: 1200, height: 900 },
      });
      await page.goto(`${service.url}/`);
      await page.waitForSelector("#chart rect.bar", { state: "attached" });
      const stats =
        await (await fetch(`${service.url}/api/verve/stats?minutes=60`)).json();
      const bars: Record<string, string> = Object.fromEntries(
        await page.$$eval(
          "#chart rect",
          (rects) =>
            rects.map((
              r,
            ) => [r.getAttribute("data-minute"), r.getAttribute("data-count")]),
        ),
      );
      // Both windows are on the chart with the counts the API gives.
      for (const [minute, count] of [[first, 5], [second, 3]] as const) {
        const iso = new Date(minute).toISOString();
        assert.equal(bars[iso], String(count), iso);
        const fromApi = stats.minutes.find((m: { minute: string }) =>
          m.minute === iso
        );
        assert.equal(fromApi?.unique_ids, count);
      }
      // The axes are labelled, in UTC.
      const labels = await page.$$eval(
        "#chart text",
        (t) => t.map((e) => e.textContent),
      );
      assert.ok(
        labels.includes("minute (UTC)") && labels.includes("unique ids"),
      );
      // The value axis has round ticks: counts 5 and 3 give 0 to 5.
      assert.deepEqual(
        await page.$$eval(
          "#chart .y-label",
          (t) => t.map((e) => e.textContent),
        ),
        ["0", "1", "2", "3", "4", "5"],
      );
      assert.deepEqual(
        await page.evaluate(
          "[0, 1, 7, 70135, 35068].map((max) => niceTicks(max).ticks)",
        ),
        [
          [0, 1],
          [0, 1],
          [0, 2, 4, 6, 8],
          [0, 20000, 40000, 60000, 80000],
          [0, 10000, 20000, 30000, 40000],
        ],
      );
      // The time labels stay inside the chart and clear of each other, on
      // a wide screen and (below) on a phone.
      const labelsFit = () =>
        page.evaluate<string[]>(`(() => {
          const chart = document.getElementById("chart").getBoundingClientRect();
          const boxes = [...document.querySelectorAll("#chart .x-label")]
            .map((label) => label.getBoundingClientRect())
            .sort((a, b) => a.left - b.left);
          const faults = [];
          if (boxes.length < 2) faults.push(boxes.length + " labels");
          boxes.forEach((box, i) => {
            if (box.left < chart.left - 0.5 || box.right > chart.right + 0.5) {
              faults.push("label " + i + " runs off the chart");
            }
            if (i > 0 && box.left < boxes[i - 1].right) {
              faults.push("labels " + (i - 1) + " and " + i + " overlap");
            }
          });
          return faults;
        })()`);
      assert.deepEqual(await labelsFit(), []);
      // The sinks table matches the API's summary.
      const rows = await page.$$eval(
        "#sinks tr",
        (trs) => trs.map((tr) => [...tr.children].map((c) => c.textContent)),
      );
      assert.deepEqual(rows.map((r) => r[0]), stats.sinks);
      const log = rows.find((r) => r[0] === "log")!;
      assert.notEqual(log[1], "never");
      assert.equal(log[2], String(stats.sink_summary.log.pending));
      assert.match(await page.textContent("#live-count") ?? "", /^\d+$/);
      await Deno.mkdir(SCREENSHOT_DIR, { recursive: true });
      const screenshot = `${SCREENSHOT_DIR}status-page.png`;
      await page.screenshot({ path: screenshot, fullPage: true });
      assert.ok((await Deno.stat(screenshot)).size > 1000);

      // On a phone nothing overflows sideways.
      await page.setViewportSize({ width: 390, height: 844 });
      assert.deepEqual(await labelsFit(), []);
      const overflow = await page.evaluate<number>(
        "document.documentElement.scrollWidth - window.innerWidth",
      );
      assert.ok(overflow <= 0, `overflows by ${overflow}px`);

      // When the API fails, the page says so and keeps the last data.
      assert.equal(await service.stop("SIGTERM"), 0);
      let message = "";
      for (
        let i = 0;
        i < 100 && !message.includes("Cannot load the stats");
        i++
      ) {
        await new Promise((resolve) => setTimeout(resolve, 200));
        message = await page.textContent("#error") ?? "";
      }
      assert.match(message, /Cannot load the stats/);
      assert.ok(await page.$("#chart rect.bar"));
    } finally {
      await browser.close();
    }
  },
});
