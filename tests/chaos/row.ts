/**
 * A chaos scenario and its outcome, one row of the chaos table.
 *
 * @module
 */

/** One scenario's outcome: one row of the chaos table. */
export interface ChaosRow {
  scenario: string;
  requests: number;
  ok: number;
  notOk: number;
  ackedDistinct: number;
  reported: number;
  reports: number;
  /** POSTs per webhook URL, e.g. `1,1,1`. */
  posts: string;
  /** `ok`, `skipped: <why>`, or the invariants that broke. */
  verdict: string;
}

/** A scenario to run. */
export interface Scenario {
  name: string;
  run(): Promise<ChaosRow>;
}

/** The row of a scenario that cannot run here. */
export function skipped(scenario: string, why: string): ChaosRow {
  return {
    scenario,
    requests: 0,
    ok: 0,
    notOk: 0,
    ackedDistinct: 0,
    reported: 0,
    reports: 0,
    posts: "",
    verdict: `skipped: ${why}`,
  };
}
