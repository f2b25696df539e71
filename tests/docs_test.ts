/**
 * The documentation derived from the code stays current.
 */
import assert from "node:assert/strict";
import { configurationDoc } from "../lib/config.ts";

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
