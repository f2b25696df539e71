/**
 * Shifted clocks for service processes, with libfaketime (Debian's
 * `faketime`): its library, preloaded into a process, moves what the
 * process reads of the wall clock by a fixed offset.
 *
 * @module
 */

/** Where Debian installs libfaketime's library. */
const LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/** Whether libfaketime is installed. */
export const FAKETIME_AVAILABLE = await Deno.stat(LIBFAKETIME).then(
  () => true,
  () => false,
);

/**
 * The environment that starts a process with its clock `offsetMs` off
 * (> 0: ahead); none for 0.
 */
export function shiftedClock(offsetMs: number): Record<string, string> {
  if (offsetMs === 0) return {};
  const seconds = offsetMs / 1000;
  return {
    LD_PRELOAD: LIBFAKETIME,
    FAKETIME: `${seconds > 0 ? "+" : ""}${seconds}s`,
    // Timers and performance.now() keep the real monotonic clock.
    FAKETIME_DONT_FAKE_MONOTONIC: "1",
  };
}
