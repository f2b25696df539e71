/**
 * What wrk reports, as `bench/ids.lua` prints it from `done()` (one JSON
 * object), and reading it from a finished run: for every bench that drives
 * the service with wrk.
 *
 * @module
 */

/** What wrk reports through `done()` in `bench/ids.lua`. */
export interface WrkResult {
  requests: number;
  duration_us: number;
  socket_errors: number;
  status_errors: number;
  p50_us: number;
  p99_us: number;
  max_us: number;
}

/**
 * The result a finished wrk run printed, from its output.
 *
 * @throws {Error} with what wrk printed, when it failed or printed none.
 */
export function parseWrkOutput(output: Deno.CommandOutput): WrkResult {
  const text = new TextDecoder().decode(output.stdout);
  const line = text.split("\n").find((l) => l.startsWith("{"));
  if (!output.success || !line) {
    throw new Error(
      `wrk failed: ${text}${new TextDecoder().decode(output.stderr)}`,
    );
  }
  return JSON.parse(line);
}
