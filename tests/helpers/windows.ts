/**
 * Timing requests against real windows in end-to-end tests.
 *
 * @module
 */
import { windowStart } from "../../lib/minute.ts";

/**
 * Runs `phase` just after the start of the next window, and again in the
 * window after when it happened to cross a boundary.
 *
 * @returns The start of the window the phase ran in.
 */
export async function withinOneWindow(
  windowMs: number,
  phase: () => Promise<void>,
): Promise<number> {
  for (let attempt = 0; attempt < 3; attempt++) {
    const start = await nextWindow(windowMs, 50);
    await phase();
    if (windowStart(Date.now(), windowMs) === start) return start;
  }
  throw new Error("could not fit the requests into one window");
}

/**
 * Sleeps until `offsetMs` after the start of the next window.
 *
 * @returns That window's start.
 */
export async function nextWindow(
  windowMs: number,
  offsetMs: number,
): Promise<number> {
  const now = Date.now();
  const start = windowStart(now, windowMs) + windowMs;
  await new Promise((resolve) => setTimeout(resolve, start + offsetMs - now));
  return start;
}

/**
 * Sleeps into the next window when the current one has less than `needMs`
 * left, so that a test of about that long runs within one window.
 */
export async function roomInWindow(
  windowMs: number,
  needMs: number,
): Promise<void> {
  const now = Date.now();
  const left = windowStart(now, windowMs) + windowMs - now;
  if (left < needMs) {
    await new Promise((resolve) => setTimeout(resolve, left + 50));
  }
}
