/**
 * The documentation derived from the code stays current.
 */
import assert from "node:assert/strict";
import { configurationDoc, settingDocs } from "../lib/config_docs.ts";

Deno.test("docs/configuration.md is what `deno task docs` writes from the settings schema", async () => {
  const written = await Deno.readTextFile(
    new URL("../docs/configuration.md", import.meta.url),
  );
  assert.equal(written, configurationDoc(), "run `deno task docs`");
  // Every setting is documented, with a default and a meaning.
  for (const line of written.split("\n").filter((l) => l.startsWith("| `"))) {
    const [name, shown, meaning] = line.slice(2, -2).split(" | ");
    assert.ok(name && shown && meaning && meaning.length > 10, line);
  }
});

Deno.test("the README's table of the most used settings names real settings with their defaults", async () => {
  const readme = await Deno.readTextFile(
    new URL("../README.md", import.meta.url),
  );
  const section = readme.slice(readme.indexOf("## Settings"));
  const rows = section.slice(0, section.indexOf("\n## ")).split("\n")
    .filter((line) => line.startsWith("| `"))
    .map((line) => line.slice(2, -2).split(" | ").map((cell) => cell.trim()));
  assert.equal(rows.length, 10);
  const defaults = new Map(
    settingDocs().map((
      { name, shownDefault },
    ) => [`\`${name}\``, shownDefault]),
  );
  for (const [name, shown] of rows) {
    assert.equal(shown, defaults.get(name!), `${name} in README.md`);
  }
});

const ROOT = new URL("../", import.meta.url);

/** GitHub's anchor for a heading. */
function slug(heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\w\- ]/g, "").replaceAll(
    " ",
    "-",
  );
}

async function headings(path: URL): Promise<Set<string>> {
  const found = new Set<string>();
  let code = false;
  for (const line of (await Deno.readTextFile(path)).split("\n")) {
    if (line.startsWith("```")) code = !code;
    const heading = /^#{1,6} (.*)$/.exec(line);
    if (!code && heading) found.add(slug(heading[1]!));
  }
  return found;
}

Deno.test("every link between the README, BENCHMARKS.md and docs/ leads to a file and heading that exist", async () => {
  const files = ["README.md", "BENCHMARKS.md"];
  for await (const entry of Deno.readDir(new URL("docs/", ROOT))) {
    if (entry.name.endsWith(".md")) files.push(`docs/${entry.name}`);
  }
  const broken: string[] = [];
  for (const file of files) {
    const base = new URL(file, ROOT);
    const text = await Deno.readTextFile(base);
    for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/.test(target!)) continue;
      const [path, anchor] = target!.split("#");
      const url = new URL(path || file.split("/").pop()!, base);
      try {
        await Deno.stat(url);
      } catch {
        broken.push(`${file}: ${target} (no such file)`);
        continue;
      }
      if (anchor && url.pathname.endsWith(".md")) {
        if (!(await headings(url)).has(anchor)) {
          broken.push(`${file}: ${target} (no such heading)`);
        }
      }
    }
  }
  assert.deepEqual(broken, []);
});
