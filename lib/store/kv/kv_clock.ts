/**
 * The clock probe of a Deno KV store: Deno KV has no clock of its own to
 * compare with, so every instance writes its clock reading
 * (`verve/clock/<instance>`) at each check and lists the others'.
 *
 * A reading that changed since this instance's previous check was written
 * between the two, so the peer's offset from this clock lies between its
 * reading minus this check's time and its reading minus the previous
 * check's. Each peer keeps the intersection of those intervals while they
 * agree (checks are jittered, so it narrows), and starts over when they do
 * not (a clock was set); its offset is then {@link offsetWithin} them. The fleet's
 * clock is then the median of every instance's clock ({@link fleetOffset}). A peer whose
 * reading stops changing is left out after a few checks: it stopped.
 *
 * @module
 */
import {
  type ClockBeacon,
  clockKey,
  clockPrefix,
  instanceOfClockKey,
} from "../keys.ts";
import {
  type ClockProbe,
  type ClockReading,
  fleetOffset,
  offsetWithin,
} from "../clock_probe.ts";

/** Options of {@link createKvClockProbe}. */
export interface KvClockProbeOptions {
  /** This instance's name in the readings. */
  instanceId: string;
  /**
   * The local clock, in epoch ms.
   *
   * @default {Date.now}
   */
  clock?: () => number;
  /**
   * How long a reading lives in the store once its instance stopped
   * writing it, in ms.
   *
   * @default {60000}
   */
  expireInMs?: number;
  /**
   * After how many checks without a change a peer's reading is left out.
   *
   * @default {5}
   */
  staleChecks?: number;
  /**
   * The most peers compared with: the rest of a larger fleet is not read.
   *
   * @default {1000}
   */
  maxPeers?: number;
}

/** What this instance knows of a peer's clock. */
interface Peer {
  versionstamp: string;
  /** This instance's checks since the peer's reading last changed. */
  unchanged: number;
  /** Where the peer's offset from this clock lies, in ms; none yet. */
  low?: number;
  high?: number;
}

/**
 * Creates the clock probe of a Deno KV store.
 *
 * @example
 * ```ts
 * const probe = createKvClockProbe(kv, { instanceId: crypto.randomUUID() });
 * const reading = await probe.read(); // undefined until a peer's reading changed
 * ```
 */
export function createKvClockProbe(
  kv: Deno.Kv,
  options: KvClockProbeOptions,
): ClockProbe {
  return new KvClockProbe(kv, options);
}

class KvClockProbe implements ClockProbe {
  readonly #kv: Deno.Kv;
  readonly #key: Deno.KvKey;
  readonly #instanceId: string;
  readonly #clock: () => number;
  readonly #expireInMs: number;
  readonly #staleChecks: number;
  readonly #maxPeers: number;
  readonly #peers = new Map<string, Peer>();
  /** This clock when the previous check began listing the readings. */
  #listedAt: number | undefined;

  constructor(kv: Deno.Kv, options: KvClockProbeOptions) {
    this.#kv = kv;
    this.#instanceId = options.instanceId;
    this.#key = clockKey(options.instanceId);
    this.#clock = options.clock ?? Date.now;
    this.#expireInMs = options.expireInMs ?? 60_000;
    this.#staleChecks = options.staleChecks ?? 5;
    this.#maxPeers = options.maxPeers ?? 1000;
  }

  async read(): Promise<ClockReading | undefined> {
    const beacon: ClockBeacon = { at: this.#clock() };
    await this.#kv.set(this.#key, beacon, { expireIn: this.#expireInMs });
    const listedAt = this.#clock();
    const entries = await Array.fromAsync(
      this.#kv.list<ClockBeacon>({ prefix: clockPrefix() }, {
        limit: this.#maxPeers + 1,
      }),
    );
    const readAt = this.#clock();
    const previous = this.#listedAt;
    this.#listedAt = listedAt;
    const listed = new Set<string>();
    for (const entry of entries) {
      const name = instanceOfClockKey(entry.key);
      if (name === this.#instanceId) continue;
      listed.add(name);
      this.#observe(name, entry, previous, readAt);
    }
    const offsets = [0];
    let errorMs = 0;
    let waiting = false;
    for (const [name, peer] of this.#peers) {
      if (!listed.has(name)) this.#peers.delete(name);
      // A reading that stopped changing: its instance stopped.
      else if (peer.unchanged > this.#staleChecks) continue;
      else if (peer.low === undefined) waiting = true;
      else {
        offsets.push(offsetWithin(peer.low, peer.high!));
        errorMs = Math.max(errorMs, (peer.high! - peer.low) / 2);
      }
    }
    // Peers seen, none of whose readings has a known age yet.
    if (offsets.length === 1 && waiting) return undefined;
    if (offsets.length === 1) {
      return { offsetMs: 0, errorMs: 0, reference: "this instance alone" };
    }
    return {
      offsetMs: 0 - fleetOffset(offsets),
      errorMs,
      reference: `${offsets.length} instances`,
    };
  }

  /** Narrows what is known of a peer's offset by its latest reading. */
  #observe(
    name: string,
    entry: Deno.KvEntry<ClockBeacon>,
    previous: number | undefined,
    readAt: number,
  ): void {
    const peer = this.#peers.get(name);
    if (peer === undefined || previous === undefined) {
      // A reading first seen may be of any age.
      this.#peers.set(name, { versionstamp: entry.versionstamp, unchanged: 0 });
      return;
    }
    if (peer.versionstamp === entry.versionstamp) {
      peer.unchanged++;
      return;
    }
    peer.versionstamp = entry.versionstamp;
    peer.unchanged = 0;
    const low = entry.value.at - readAt;
    const high = entry.value.at - previous;
    if (
      peer.low === undefined || low > peer.high! || high < peer.low
    ) {
      peer.low = low;
      peer.high = high;
    } else {
      peer.low = Math.max(peer.low, low);
      peer.high = Math.min(peer.high!, high);
    }
  }

  async close(): Promise<void> {
    await this.#kv.delete(this.#key);
  }
}
