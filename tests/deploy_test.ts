/**
 * What Deno Deploy asks of the entrypoint, checked on the real `main.ts`:
 * the platform finds cron jobs by evaluating the module's top level at
 * deployment time, and only those registered before the server starts.
 */
import assert from "node:assert/strict";
import { tempKvPath } from "./helpers/kv.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const RECORD = new URL("./helpers/record_startup.ts", import.meta.url).pathname;

Deno.test("main.ts registers its cron job before it starts serving, whatever the window", async () => {
  for (const windowMs of ["60000", "2000"]) {
    await using file = await tempKvPath();
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        "--preload",
        RECORD,
        MAIN,
      ],
      env: {
        KV_PATH: file.path,
        HOST: "127.0.0.1",
        PORT: "0",
        WINDOW_MS: windowMs,
      },
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderrText = new Response(child.stderr).text();
    // Listening means the server started: everything before it happened.
    let out = "";
    let killed = false;
    for await (
      const chunk of child.stdout.pipeThrough(new TextDecoderStream())
    ) {
      out += chunk;
      if (!killed && out.includes("Listening on")) {
        child.kill("SIGTERM");
        killed = true;
      }
    }
    await child.status;
    const stderr = await stderrText;
    const startup = stderr.split("\n").filter((line) =>
      line.startsWith("startup: ")
    );
    assert.deepEqual(startup, [
      "startup: cron report-unique-ids",
      "startup: serve",
    ], `WINDOW_MS=${windowMs}: ${stderr}`);
  }
});
