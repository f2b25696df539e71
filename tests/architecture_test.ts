/**
 * The layout of `lib/` as the README and each folder's `mod.ts` state it:
 * which folder may import which, read from the import statements.
 */
import assert from "node:assert/strict";
import { dirname, join, relative } from "node:path";

const LIB = new URL("../lib/", import.meta.url).pathname;

/**
 * What each concern may import, besides itself and the top-level modules;
 * the top-level modules (settings, windows, time limits, backoff,
 * allowlists) import only one another.
 */
const MAY_IMPORT: Record<string, string[]> = {
  http: ["store", "telemetry"],
  report: ["store", "telemetry"],
  store: [],
  telemetry: [],
  top: [],
};

/** The concern of a path under `lib/`: its first folder, or "top". */
function concern(path: string): string {
  const [first, ...rest] = relative(LIB, path).split("/");
  return rest.length === 0 ? "top" : first!;
}

async function* modules(dir: string): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) yield* modules(path);
    else if (entry.name.endsWith(".ts")) yield path;
  }
}

Deno.test("lib/ imports point one way: http and report to store and telemetry, never back, and the top-level modules to none of them", async () => {
  const edges: string[] = [];
  for await (const path of modules(LIB)) {
    const text = await Deno.readTextFile(path);
    for (const [, spec] of text.matchAll(/from\s+"(\.[^"]+)"/g)) {
      const target = join(dirname(path), spec!);
      const [from, to] = [concern(path), concern(target)];
      if (from === to || to === "top") continue;
      if (!MAY_IMPORT[from]?.includes(to)) {
        edges.push(`${relative(LIB, path)} imports ${relative(LIB, target)}`);
      }
    }
  }
  assert.deepEqual(edges, []);
  // Every concern has a module doc that says what it may import.
  for (const folder of Object.keys(MAY_IMPORT).filter((f) => f !== "top")) {
    const doc = await Deno.readTextFile(join(LIB, folder, "mod.ts"));
    assert.match(doc, /@module/, folder);
    assert.match(doc, /import/, folder);
  }
});

Deno.test("tests/ mirrors lib/: every folder of tests but helpers and chaos is a folder of lib", async () => {
  const TESTS = new URL("./", import.meta.url).pathname;
  const strays: string[] = [];
  async function walk(dir: string): Promise<void> {
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.isDirectory) continue;
      const path = join(dir, entry.name);
      const folder = relative(TESTS, path);
      if (folder === "helpers" || folder === "chaos") continue;
      try {
        if (!(await Deno.stat(join(LIB, folder))).isDirectory) {
          strays.push(folder);
        }
      } catch {
        strays.push(folder);
      }
      await walk(path);
    }
  }
  await walk(TESTS);
  assert.deepEqual(strays, []);
});
