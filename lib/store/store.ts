/**
 * The store interface: everything the handler and the reporter need from the
 * shared database, independent of the backend that provides it.
 *
 * @module
 */

import type { MinuteReport } from "../minute.ts";

/** The outcome of recording a webhook URL for a window. */
export type UrlOutcome = "recorded" | "known" | "full";

/** The outcome of claiming a window's report. */
export type ClaimOutcome =
  | { claimed: true }
  | { claimed: false; reason: "reported" | "claimed" };

/** The ids role: recording ids per window, and their exact count. */
export interface IdStore {
  /**
   * Records `id` as seen in the window starting at `minute`. Resolves only
   * once the id is durably recorded.
   *
   * @returns `true` when this call recorded the id, `false` when it was
   *   already recorded.
   * @throws {StoreUnavailableError} when the id could not be recorded.
   * @throws {WindowClosedError} when the window was already reported.
   */
  recordId(minute: number, id: string): Promise<boolean>;
  /**
   * Records `id` as {@link IdStore.recordId} does, and tells `waiter` what
   * became of it instead of returning a promise: exactly once, possibly
   * before this returns. One waiter may serve any number of ids, so a
   * caller that settles ids by count makes no promise or closure per id.
   */
  queueId(minute: number, id: string, waiter: IdWaiter): void;
  /**
   * Answers `id` for the window at once, without a promise, where memory
   * alone can: `repeat` for an id this instance knows (as
   * {@link IdStore.knows}), `new` for one a store that acknowledges before
   * the commit (buffered) took into its queue; `undefined` when the caller
   * must await `recordId` (a new id, on a durable store).
   */
  takeId(minute: number, id: string): "new" | "repeat" | undefined;
  /**
   * Whether this instance already knows `id` is recorded in the window
   * starting at `minute`, from memory alone: no store round trip. `false`
   * means only "not known here"; `recordId` has the answer.
   */
  knows(minute: number, id: string): boolean;
  /** The exact number of distinct ids recorded in the window. */
  countIds(minute: number): Promise<number>;
  /**
   * How many ids this instance has taken and not yet committed or failed:
   * what a shutdown that cannot finish abandons.
   */
  queuedIds(): number;
}

/** What {@link IdStore.queueId} tells of each id given to it, once. */
export interface IdWaiter {
  /**
   * The id is durably recorded: `recorded` is `true` when this call
   * recorded it, `false` when it was already recorded.
   */
  resolve(recorded: boolean): void;
  /**
   * The id, given as `id`, could not be recorded: `error` is one that
   * {@link IdStore.recordId} throws.
   */
  reject(error: Error, id: string): void;
}

/**
 * What `queue` tells the waiter it is given, as a promise: `recordId` over
 * `queueId`.
 */
export function untilRecorded(
  queue: (waiter: IdWaiter) => void,
): Promise<boolean> {
  return new Promise((resolve, reject) => queue({ resolve, reject }));
}

/** The webhook URLs role: the URLs given per window, and those still owed. */
export interface UrlStore {
  /**
   * Records a webhook URL for the window, unless the window already holds
   * its maximum of distinct URLs.
   */
  recordUrl(minute: number, url: string): Promise<UrlOutcome>;
  /**
   * The webhook URLs of the window that its report is not yet done with:
   * recorded, and not marked with {@link Store.markUrlDone}.
   */
  listOwedUrls(minute: number): Promise<string[]>;
  /**
   * Marks the window's report done with a webhook URL: delivered, or refused
   * for good. Later deliveries of the report skip it.
   */
  markUrlDone(minute: number, url: string): Promise<void>;
}

/**
 * The reports role: the claim that makes each window's report happen once,
 * the outbox its report waits in per sink, and what became of it.
 */
export interface ReportStore {
  /**
   * Claims the window's report for `owner`. Exactly one claim per window
   * succeeds across every instance sharing the store; once it has, no more
   * ids can be recorded in that window. A claim left in the `claimed` state
   * for longer than `leaseMs` (its owner died) may be taken over.
   */
  claimReport(
    minute: number,
    owner: string,
    now: number,
    leaseMs: number,
  ): Promise<ClaimOutcome>;
  /**
   * Marks a claimed window as reported with its final count, drops the
   * window's ids or counter, and puts the report in the outbox for each of
   * `outbox.sinks`, in one step.
   */
  completeReport(
    minute: number,
    owner: string,
    uniqueIds: number,
    outbox?: NewOutboxEntries,
  ): Promise<void>;
  /**
   * Windows that have recorded ids but no finished report, oldest first.
   * Includes the window that is still open.
   */
  unreportedWindows(): Promise<number[]>;
  /**
   * What is known of each window: its count once reported, and the recorded
   * outcome per sink. Windows without anything yet are left out.
   */
  windowStats(minutes: number[]): Promise<WindowStats[]>;
  /** Every report waiting for a sink, oldest window first. */
  listOutbox(): Promise<OutboxEntry[]>;
  /**
   * Rewrites `entry` with `change`, if nobody changed it since it was read:
   * a lease for one delivery attempt moves its `notBefore`, a failed attempt
   * also counts one more. On success `entry.version` is the new version.
   *
   * @returns `false` when another instance took or finished it first.
   */
  updateOutbox(entry: OutboxEntry, change: OutboxChange): Promise<boolean>;
  /**
   * Removes an entry, recording what became of it for its window and sink:
   * `delivered` (the sink acknowledged it) or `dropped`. Does nothing when
   * the entry changed since `entry` was read (another instance holds it).
   */
  removeOutbox(
    entry: OutboxEntry,
    outcome: DeliveryOutcome,
    at: number,
  ): Promise<void>;
}

/**
 * Shared per-window state, every role of it: what the handler and the
 * reporter need from the database, whatever the backend.
 */
export interface Store extends IdStore, UrlStore, ReportStore, AsyncDisposable {
  /**
   * Checks that the backend answers.
   *
   * @throws {StoreUnavailableError} when it does not.
   */
  ping(): Promise<void>;
  /**
   * Finishes pending writes, then releases the backend. Later calls wait
   * for the first one; `await using` calls it too.
   */
  close(): Promise<void>;
}

/**
 * The methods a wrapper of the ids role takes over: the role, and `close`,
 * which must finish the role's pending work first.
 */
export const ID_ROLE = [
  "recordId",
  "queueId",
  "takeId",
  "knows",
  "countIds",
  "queuedIds",
  "close",
] as const satisfies readonly (keyof Store)[];

/** What a wrapper of the ids role implements. */
export type IdRole = Pick<Store, typeof ID_ROLE[number]>;

/** Every method of {@link Store}; the type below fails when one is missing. */
const STORE_METHODS = [
  ...ID_ROLE,
  "recordUrl",
  "listOwedUrls",
  "markUrlDone",
  "claimReport",
  "completeReport",
  "unreportedWindows",
  "windowStats",
  "listOutbox",
  "updateOutbox",
  "removeOutbox",
  "ping",
] as const satisfies readonly (keyof Store)[];

/** `true` only when {@link STORE_METHODS} names every method of `Store`. */
const ALL_METHODS_LISTED: Exclude<
  keyof Store,
  typeof STORE_METHODS[number] | typeof Symbol.asyncDispose
> extends never ? true : false = true;

/**
 * `store` with its ids role taken over by `ids` (as the buffered store
 * does); every other role stays `store`'s own, with nothing to pass on.
 * Each method is bound once, so calls cost what direct calls do.
 */
export function withIdRole(store: Store, ids: IdRole): Store {
  void ALL_METHODS_LISTED;
  const taken = new Set<string>(ID_ROLE);
  const methods: Record<string, unknown> = {};
  for (const name of STORE_METHODS) {
    const source = (taken.has(name) ? ids : store) as Record<
      string,
      (...args: unknown[]) => unknown
    >;
    methods[name] = source[name]!.bind(source);
  }
  const wrapped = methods as unknown as Store;
  wrapped[Symbol.asyncDispose] = () => wrapped.close();
  return wrapped;
}

/** A report to put in the outbox, once per sink. */
export interface NewOutboxEntries {
  report: MinuteReport;
  /** The names of the sinks that are to deliver it. */
  sinks: string[];
  /** The current time in epoch ms. */
  now: number;
}

/** One report waiting for one sink. */
export interface OutboxEntry {
  minute: number;
  sink: string;
  report: MinuteReport;
  /** Failed delivery attempts so far. */
  attempts: number;
  /** When the report entered the outbox, in epoch ms. */
  createdAt: number;
  /** No attempt before this time, in epoch ms. */
  notBefore: number;
  /** The backend's version of the entry, for `updateOutbox`. */
  version: string;
}

/** A change to an outbox entry: its attempts so far, its next try. */
export type OutboxChange = Partial<Pick<OutboxEntry, "attempts" | "notBefore">>;

/** What became of a report for one sink. */
export type DeliveryOutcome = "delivered" | "dropped";

/** The recorded outcome of a report for one sink. */
export interface DeliveryRecord {
  state: DeliveryOutcome;
  /** When, in epoch ms. */
  at: number;
  /** Failed attempts before it. */
  attempts: number;
}

/** What the store knows of one window. */
export interface WindowStats {
  minute: number;
  /** The reported count; `undefined` while the window is not reported. */
  uniqueIds: number | undefined;
  /** Outcomes by sink name. */
  deliveries: Record<string, DeliveryRecord>;
}

/**
 * Watches a backend's commits of ids, e.g. for metrics: how many ids, how
 * long in seconds, and whether it succeeded.
 */
export type CommitObserver = (
  ids: number,
  seconds: number,
  ok: boolean,
) => void;

/** The store could not be reached or did not commit; answer 503. */
export class StoreUnavailableError extends Error {
  /** @param message What failed. @param options The underlying error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StoreUnavailableError";
  }
}

/**
 * How many later windows an id whose window is already reported may move
 * on to, each found reported too, before it fails.
 */
export const MAX_WINDOW_MOVES = 3;

/** The window was already reported, so nothing more can be recorded in it. */
export class WindowClosedError extends Error {
  /** @param minute The window start. */
  constructor(readonly minute: number) {
    super(`Window ${new Date(minute).toISOString()} is already reported`);
    this.name = "WindowClosedError";
  }
}
