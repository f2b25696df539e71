/**
 * `deno task chaos`: runs every chaos scenario against real service
 * processes on loopback, prints one table (scenario, requests, ok, not ok,
 * acked distinct, reported, reports, POSTs, verdict) and exits 1 when any
 * invariant broke.
 *
 * Usage: `deno task chaos [--only N,…] [--out results.json]`, where N is a
 * scenario's number.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { markdownTable } from "../../bench/markdown_table.ts";
import { type ChaosRow, SCENARIOS } from "./scenarios.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { only: { type: "string" }, out: { type: "string" } },
});
const only = values.only?.split(",").map((n) => n.trim());
const selected = SCENARIOS.filter((scenario) =>
  !only || only.includes(scenario.name.split(".")[0]!)
);
if (selected.length === 0) {
  console.error(`Cannot parse --only: no scenario numbered ${values.only}`);
  Deno.exit(2);
}

const rows: ChaosRow[] = [];
for (const scenario of selected) {
  console.error(`running ${scenario.name}`);
  rows.push(await scenario.run());
}
console.log(markdownTable(
  [
    "scenario",
    "requests",
    "ok",
    "not ok",
    "acked distinct",
    "reported",
    "reports",
    "POSTs",
    "verdict",
  ],
  rows.map((row) => [
    row.scenario,
    String(row.requests),
    String(row.ok),
    String(row.notOk),
    String(row.ackedDistinct),
    String(row.reported),
    String(row.reports),
    row.posts,
    row.verdict,
  ]),
));
if (values.out) {
  await Deno.writeTextFile(values.out, JSON.stringify(rows, null, 2) + "\n");
}
if (rows.some((row) => row.verdict !== "ok")) Deno.exit(1);
