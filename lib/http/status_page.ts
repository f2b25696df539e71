/**
 * The status page served at `GET /`: one self-contained HTML document (no
 * build step, no external resources) that reads `/api/verve/stats` every few
 * seconds and shows unique ids per minute as an inline SVG bar chart with
 * UTC time labels, the live count of the current minute, and the state of
 * every report sink.
 *
 * @module
 */

/** The page's HTML. */
export const STATUS_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>verve: unique ids per minute</title>
<style>
  :root { color-scheme: light dark; --accent: #2f6fde; --muted: #6b7280; }
  body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 72rem; padding: 1rem; }
  h1 { font-size: 1.3rem; margin: 0 0 .25rem; }
  .sub { color: var(--muted); margin: 0 0 1rem; min-height: 1.4em; }
  .live { display: flex; gap: 2rem; flex-wrap: wrap; margin-bottom: 1rem; }
  .live div { min-width: 10rem; }
  .live strong { display: block; font-size: 2rem; font-variant-numeric: tabular-nums; }
  figure { margin: 0 0 1.5rem; }
  .chart { width: 100%; height: 18rem; display: block; }
  .chart text { font-size: 11px; fill: currentColor; }
  .chart .bar { fill: var(--accent); }
  .chart .missing { fill: var(--muted); opacity: .35; }
  .chart .axis { stroke: currentColor; opacity: .5; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid #8884; }
  td.num { font-variant-numeric: tabular-nums; }
  .error { color: #b42318; min-height: 1.4em; }
  @media (max-width: 40rem) { .chart { height: 12rem; } .live strong { font-size: 1.5rem; } }
</style>
</head>
<body>
<main>
  <h1>Unique ids per minute</h1>
  <p class="sub" id="updated" aria-live="polite">Loading…</p>
  <p class="error" id="error" role="alert"></p>
  <section class="live" aria-label="Current minute">
    <div>Current minute (so far)<strong id="live-count">–</strong><span id="live-minute"></span></div>
    <div>Last reported minute<strong id="last-count">–</strong><span id="last-minute"></span></div>
  </section>
  <figure>
    <svg id="chart" class="chart" role="img" aria-labelledby="chart-title" viewBox="0 0 960 300" preserveAspectRatio="none">
      <title id="chart-title">Unique ids per minute, last hour, UTC</title>
    </svg>
    <figcaption>Unique ids per closed minute (UTC). Grey: not reported.</figcaption>
  </figure>
  <h2>Report sinks</h2>
  <table>
    <thead><tr><th scope="col">Sink</th><th scope="col">Last success (UTC)</th><th scope="col">Pending</th><th scope="col">Dropped</th></tr></thead>
    <tbody id="sinks"></tbody>
  </table>
</main>
<script>
const NS = "http://www.w3.org/2000/svg";
const REFRESH_MS = 5000;
let seconds = false; // windows shorter than a minute are labelled to the second
const time = (iso) => iso ? iso.slice(11, seconds ? 19 : 16) : "–";
const svg = (name, attributes, text) => {
  const node = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
};

// The value axis: a round step (1, 2 or 5 times a power of ten, at least 1)
// that gives at most 5 intervals, and the first tick at or above the largest
// count as its top.
function niceTicks(max) {
  const raw = Math.max(1, max) / 5;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = Math.max(1, [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw));
  const top = Math.max(step, Math.ceil(max / step) * step);
  return { top, ticks: Array.from({ length: top / step + 1 }, (_, i) => i * step) };
}

function drawChart(minutes) {
  const chart = document.getElementById("chart");
  for (const node of [...chart.children]) if (node.tagName !== "title") node.remove();
  const width = 960, height = 300, left = 56, bottom = 36, top = 12, right = 8;
  const { top: max, ticks } = niceTicks(Math.max(0, ...minutes.map((m) => m.unique_ids ?? 0)));
  const plotW = width - left - right, plotH = height - top - bottom;
  const step = plotW / Math.max(1, minutes.length);
  chart.append(svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: top + plotH }));
  chart.append(svg("line", { class: "axis", x1: left, y1: top + plotH, x2: width - right, y2: top + plotH }));
  for (const tick of ticks) {
    const y = top + plotH * (1 - tick / max);
    chart.append(svg("text", { class: "y-label", x: left - 6, y: y + 4, "text-anchor": "end" }, String(tick)));
  }
  chart.append(svg("text", { x: 12, y: top + plotH / 2, transform: "rotate(-90 12 " + (top + plotH / 2) + ")", "text-anchor": "middle" }, "unique ids"));
  minutes.forEach((m, i) => {
    const count = m.unique_ids;
    const h = count === null ? plotH * 0.02 : plotH * (count / max);
    const bar = svg("rect", {
      class: count === null ? "missing" : "bar",
      x: left + i * step + step * 0.1,
      y: top + plotH - h,
      width: Math.max(1, step * 0.8),
      height: h,
      "data-minute": m.minute,
      "data-count": count === null ? "" : count,
    });
    bar.append(svg("title", {}, time(m.minute) + " UTC: " + (count === null ? "not reported" : count + " unique ids")));
    chart.append(bar);
    // At most 8 labels, counted back from the newest window so that none
    // crowds it; the newest ends at the plot's edge instead of running off.
    const every = Math.max(1, Math.ceil(minutes.length / 8));
    const last = i === minutes.length - 1;
    if ((minutes.length - 1 - i) % every === 0) {
      chart.append(svg("text", {
        class: "x-label",
        x: last ? left + (i + 1) * step : left + i * step + step / 2,
        y: height - 14,
        "text-anchor": last ? "end" : "middle",
      }, time(m.minute)));
    }
  });
  chart.append(svg("text", { x: left + plotW / 2, y: height - 1, "text-anchor": "middle" }, "minute (UTC)"));
}

function drawSinks(stats) {
  const body = document.getElementById("sinks");
  body.replaceChildren(...stats.sinks.map((name) => {
    const s = stats.sink_summary[name];
    const row = document.createElement("tr");
    row.dataset.sink = name;
    for (const [text, cls] of [[name, ""], [s.last_success ? s.last_success.slice(0, 19).replace("T", " ") : "never", ""], [String(s.pending), "num"], [String(s.dropped), "num"]]) {
      const cell = document.createElement(row.children.length === 0 ? "th" : "td");
      if (row.children.length === 0) cell.scope = "row";
      if (cls) cell.className = cls;
      cell.textContent = text;
      row.append(cell);
    }
    return row;
  }));
}

async function refresh() {
  try {
    const response = await fetch("/api/verve/stats?minutes=60", { cache: "no-store" });
    if (!response.ok) throw new Error("the stats API answered " + response.status);
    const stats = await response.json();
    seconds = stats.window_ms < 60000;
    document.getElementById("live-count").textContent = String(stats.current.unique_ids);
    document.getElementById("live-minute").textContent = time(stats.current.minute) + " UTC";
    const reported = stats.minutes.filter((m) => m.unique_ids !== null).at(-1);
    document.getElementById("last-count").textContent = reported ? String(reported.unique_ids) : "–";
    document.getElementById("last-minute").textContent = reported ? time(reported.minute) + " UTC" : "";
    drawChart(stats.minutes);
    drawSinks(stats);
    document.getElementById("error").textContent = "";
    document.getElementById("updated").textContent = "Updated " + stats.generated_at.slice(11, 19) + " UTC, every " + REFRESH_MS / 1000 + " s";
  } catch (error) {
    document.getElementById("error").textContent = "Cannot load the stats right now (" + error.message + "); showing the last data. Retrying in " + REFRESH_MS / 1000 + " s.";
  }
}
refresh();
setInterval(refresh, REFRESH_MS);
</script>
</body>
</html>
`;
