/**
 * The benchmark's baseline: a bare `Deno.serve` that parses the URL and
 * answers `ok` on the accept path, with no store behind it. The bench loads
 * it and the service alternately, so their ratio shows what the service
 * costs over Deno's HTTP stack on the same machine in the same run.
 *
 * @module
 */
import { ACCEPT_PATH } from "../lib/http/handler.ts";

const headers = { "content-type": "text/plain;charset=utf-8" };

Deno.serve({
  hostname: "127.0.0.1",
  port: Number(Deno.env.get("PORT") ?? "0"),
  onListen({ port }) {
    console.log(JSON.stringify({ listening: port }));
  },
}, (request) => {
  const url = new URL(request.url);
  if (url.pathname !== ACCEPT_PATH) {
    return new Response("not found", { status: 404 });
  }
  return new Response("ok", { headers });
});
