/**
 * What wrk reports, as `bench/ids.lua` prints it from `done()`: one JSON
 * object, read by every bench that drives the service with wrk.
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
