/**
 * `deno task docs`: writes `docs/configuration.md` from the settings schema
 * in `lib/config.ts`, the one place each setting and its documentation are
 * declared.
 *
 * @module
 */
import { configurationDoc } from "../lib/config_docs.ts";

const target = new URL("../docs/configuration.md", import.meta.url);
await Deno.writeTextFile(target, configurationDoc());
console.log(`wrote ${target.pathname}`);
