/**
 * What every backend stores for the outbox, built once: an entry as it
 * enters, as a change rewrites it, and the record of what became of it. The
 * backends only decide where these values live.
 *
 * @module
 */
import type {
  DeliveryOutcome,
  DeliveryRecord,
  NewOutboxEntries,
  OutboxChange,
  OutboxEntry,
} from "./store.ts";

/** An outbox entry as stored; its window and sink are in its key. */
export type StoredOutboxEntry = Pick<
  OutboxEntry,
  "report" | "attempts" | "createdAt" | "notBefore"
>;

/** The entry a new report puts in the outbox, for each of its sinks. */
export function newOutboxEntry(outbox: NewOutboxEntries): StoredOutboxEntry {
  return {
    report: outbox.report,
    attempts: 0,
    createdAt: outbox.now,
    notBefore: outbox.now,
  };
}

/** `entry` as stored, with `change` applied. */
export function storedOutboxEntry(
  entry: OutboxEntry,
  change: OutboxChange = {},
): StoredOutboxEntry {
  const { report, attempts, createdAt, notBefore } = { ...entry, ...change };
  return { report, attempts, createdAt, notBefore };
}

/** What became of `entry` for its sink, to keep with the window. */
export function deliveryRecord(
  entry: OutboxEntry,
  outcome: DeliveryOutcome,
  at: number,
): DeliveryRecord {
  return { state: outcome, at, attempts: entry.attempts };
}
