/**
 * A KV Connect endpoint for tests: the protocol Deno's own client speaks to a
 * remote Deno KV (`Deno.openKv("http://…")`), served with `Deno.serve` on
 * 127.0.0.1 and backed by a local Deno KV. No remote KV server runs here;
 * this one implements what the protocol specification of `denoland/denokv`
 * (`proto/kv-connect.md`, `proto/schema/datapath.proto`) asks of a server:
 *
 * - the metadata exchange: protocol versions 1–3, the access token checked
 *   (`401` otherwise), a data path token and database id the data path must
 *   carry;
 * - `snapshot_read`: key ranges with limits, forwards and in reverse;
 * - `atomic_write`: checks by versionstamp, set, delete, sum/min/max of
 *   little-endian 64-bit values, expiry;
 * - the server limits, answered `400` as a real server does: 10 ranges and
 *   1000 entries per read, 10 checks and 1000 mutations per write, 800 KiB
 *   of keys and values per write.
 *
 * Keys travel encoded; they are kept as one `Uint8Array` part of a backing
 * key, which sorts as the encoded bytes do. Versionstamps are the backing
 * database's. Tests can add latency, answer a share of requests `503`,
 * accept requests and never answer them, and stop and start the endpoint.
 *
 * @module
 */
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { serveRestartable } from "./restartable_server.ts";

/** The limits a KV Connect server enforces (`denoland/denokv`, `limits.rs`). */
export const KV_CONNECT_LIMITS = {
  readRanges: 10,
  readEntries: 1000,
  checks: 10,
  mutations: 1000,
  mutationBytes: 819_200,
  keyBytes: 100 * 1024,
} as const;

/** How the endpoint misbehaves, changeable while it runs. */
export interface KvConnectFaults {
  /** Added before every data path answer, in ms. */
  latencyMs: number;
  /** The share of data path requests answered `503`, 0 to 1. */
  errorRate: number;
  /** Take requests and never answer them (until this is false again). */
  hang: boolean;
}

/** What the endpoint saw, for assertions. */
export interface KvConnectStats {
  metadataExchanges: number;
  snapshotReads: number;
  atomicWrites: number;
  /**
   * Round trips one after the other: data path requests that arrived while
   * none was being served. Requests sent together count once.
   */
  rounds: number;
  /** The most data path requests served at once. */
  mostAtOnce: number;
  /** Data path requests being served now. */
  serving: number;
  /**
   * The most data path requests served at once on one connection, and the
   * connections they came on.
   */
  perConnection: { most: number; connections: Set<number> };
  /** Data path requests refused for a limit, with the reason. */
  refused: string[];
  /** The largest atomic write seen, by each measure. */
  largest: { checks: number; mutations: number; mutationBytes: number };
  /** The largest read seen. */
  largestRead: { ranges: number; limit: number };
}

/** A running endpoint. */
export interface KvConnectServer extends AsyncDisposable {
  /** The URL to give `Deno.openKv` (`KV_PATH`). */
  url: string;
  /** The access token (`DENO_KV_ACCESS_TOKEN`). */
  token: string;
  faults: KvConnectFaults;
  stats: KvConnectStats;
  /** Stops listening: connections are refused until {@link start}. */
  stop(): Promise<void>;
  /** Listens again on the same port. */
  start(): void;
}

/** One way a remote database fails, as a test brings it on and ends it. */
export interface RemoteFault {
  name: string;
  begin(): unknown;
  end(): unknown;
}

/**
 * The three ways a remote database fails: answering `503` to everything,
 * taking requests and never answering, and being gone (connections
 * refused).
 */
export function remoteFaults(server: KvConnectServer): RemoteFault[] {
  return [
    {
      name: "5xx",
      begin: () => server.faults.errorRate = 1,
      end: () => server.faults.errorRate = 0,
    },
    {
      name: "no answer",
      begin: () => server.faults.hang = true,
      end: () => server.faults.hang = false,
    },
    { name: "gone", begin: () => server.stop(), end: () => server.start() },
  ];
}

const SUPPORTED_VERSIONS = [1, 2, 3];

/** `MutationType` of the data path schema. */
const M_SET = 1, M_DELETE = 2, M_SUM = 3, M_MAX = 4, M_MIN = 5;
/** `ValueEncoding`. */
const VE_V8 = 1, VE_LE64 = 2, VE_BYTES = 3;
/** `AtomicWriteStatus`. */
const AW_SUCCESS = 1, AW_CHECK_FAILURE = 2;
/** `SnapshotReadStatus`. */
const SR_SUCCESS = 1;

interface ReadRange {
  start: Uint8Array;
  end: Uint8Array;
  limit: number;
  reverse: boolean;
}

interface Check {
  key: Uint8Array;
  versionstamp: Uint8Array;
}

interface Mutation {
  key: Uint8Array;
  value?: { data: Uint8Array; encoding: number };
  type: number;
  expireAtMs: number;
}

/** A request the endpoint refuses with `400` and this message. */
class BadRequest extends Error {}

/**
 * Starts the endpoint on 127.0.0.1 and a free port, backed by the KV at
 * `path` (default: a database in memory).
 */
export async function startKvConnect(
  options: { path?: string; token?: string } = {},
): Promise<KvConnectServer> {
  const backing = await Deno.openKv(options.path ?? ":memory:");
  const token = options.token ?? `test-${crypto.randomUUID()}`;
  const dataToken = crypto.randomUUID();
  const databaseId = crypto.randomUUID();
  const faults: KvConnectFaults = { latencyMs: 0, errorRate: 0, hang: false };
  const stats: KvConnectStats = {
    metadataExchanges: 0,
    snapshotReads: 0,
    atomicWrites: 0,
    rounds: 0,
    serving: 0,
    mostAtOnce: 0,
    perConnection: { most: 0, connections: new Set() },
    refused: [],
    largest: { checks: 0, mutations: 0, mutationBytes: 0 },
    largestRead: { ranges: 0, limit: 0 },
  };

  const text = (status: number, body: string) =>
    new Response(body, { status, headers: { "content-type": "text/plain" } });
  const protobuf = (body: Uint8Array) =>
    new Response(body as Uint8Array<ArrayBuffer>, {
      headers: { "content-type": "application/x-protobuf" },
    });

  function metadata(request: Request, body: string): Response {
    if (request.headers.get("authorization") !== `Bearer ${token}`) {
      return text(401, "Invalid access token");
    }
    let versions = [1];
    if (body.trim() !== "") {
      try {
        const parsed = JSON.parse(body);
        if (!Array.isArray(parsed.supportedVersions)) throw new Error();
        versions = parsed.supportedVersions;
      } catch {
        return text(400, "Invalid metadata exchange request body");
      }
    }
    const common = versions.filter((v) => SUPPORTED_VERSIONS.includes(v));
    if (common.length === 0) return text(400, "No supported protocol version");
    stats.metadataExchanges++;
    const version = Math.max(...common);
    return Response.json({
      version,
      ...(version === 1 ? { uuid: databaseId } : { databaseId }),
      endpoints: [{
        url: `http://127.0.0.1:${server.port}/data`,
        consistency: "strong",
      }],
      token: dataToken,
      expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    });
  }

  async function dataPath(request: Request, path: string): Promise<Response> {
    if (request.headers.get("authorization") !== `Bearer ${dataToken}`) {
      return text(401, "Invalid data path token");
    }
    const id = request.headers.get("x-denokv-database-id") ??
      request.headers.get("x-transaction-domain-id");
    if (id !== databaseId) return text(400, "Unknown database id");
    const body = new Uint8Array(await request.arrayBuffer());
    if (path === "/data/snapshot_read") {
      stats.snapshotReads++;
      return protobuf(await snapshotRead(decodeSnapshotRead(body)));
    }
    if (path === "/data/atomic_write") {
      stats.atomicWrites++;
      return protobuf(await atomicWrite(decodeAtomicWrite(body)));
    }
    return text(404, "Not found");
  }

  async function snapshotRead(ranges: ReadRange[]): Promise<Uint8Array> {
    stats.largestRead.ranges = Math.max(
      stats.largestRead.ranges,
      ranges.length,
    );
    if (ranges.length > KV_CONNECT_LIMITS.readRanges) {
      throw new BadRequest("Too many ranges requested");
    }
    const w = new BinaryWriter();
    for (const range of ranges) {
      stats.largestRead.limit = Math.max(stats.largestRead.limit, range.limit);
      if (range.limit > KV_CONNECT_LIMITS.readEntries) {
        throw new BadRequest("Too many entries requested in one range");
      }
      w.tag(1, WireType.LengthDelimited).fork();
      if (range.limit > 0) {
        const entries = backing.list(
          { start: [range.start], end: [range.end] },
          { limit: range.limit, reverse: range.reverse },
        );
        for await (const entry of entries) {
          const key = entry.key[0] as Uint8Array;
          const { data, encoding } = encodeValue(entry.value);
          w.tag(1, WireType.LengthDelimited).fork()
            .tag(1, WireType.LengthDelimited).bytes(key)
            .tag(2, WireType.LengthDelimited).bytes(data)
            .tag(3, WireType.Varint).int32(encoding)
            .tag(4, WireType.LengthDelimited).bytes(
              hexToBytes(entry.versionstamp),
            )
            .join();
        }
      }
      w.join();
    }
    w.tag(4, WireType.Varint).bool(true);
    w.tag(8, WireType.Varint).int32(SR_SUCCESS);
    return w.finish();
  }

  async function atomicWrite(
    write: { checks: Check[]; mutations: Mutation[]; enqueues: number },
  ): Promise<Uint8Array> {
    const { checks, mutations } = write;
    const mutationBytes = mutations.reduce(
      (sum, m) => sum + m.key.byteLength + (m.value?.data.byteLength ?? 0),
      0,
    );
    const largest = stats.largest;
    largest.checks = Math.max(largest.checks, checks.length);
    largest.mutations = Math.max(largest.mutations, mutations.length);
    largest.mutationBytes = Math.max(largest.mutationBytes, mutationBytes);
    if (write.enqueues > 0) throw new BadRequest("Enqueues are not supported");
    if (checks.length > KV_CONNECT_LIMITS.checks) {
      throw new BadRequest("Too many checks");
    }
    if (mutations.length > KV_CONNECT_LIMITS.mutations) {
      throw new BadRequest("Too many mutations");
    }
    if (mutationBytes > KV_CONNECT_LIMITS.mutationBytes) {
      throw new BadRequest("Total mutation size too large");
    }
    const op = backing.atomic();
    for (const check of checks) {
      op.check({
        key: [check.key],
        versionstamp: check.versionstamp.byteLength === 0
          ? null
          : bytesToHex(check.versionstamp),
      });
    }
    for (const mutation of mutations) {
      if (mutation.key.byteLength > KV_CONNECT_LIMITS.keyBytes) {
        throw new BadRequest("Key too large");
      }
      const key = [mutation.key];
      if (mutation.type === M_DELETE) {
        op.delete(key);
        continue;
      }
      if (!mutation.value) throw new BadRequest("Mutation without a value");
      const value = decodeValue(mutation.value);
      if (mutation.type === M_SET) {
        const expireIn = mutation.expireAtMs > 0
          ? Math.max(1, mutation.expireAtMs - Date.now())
          : undefined;
        op.set(key, value, expireIn === undefined ? undefined : { expireIn });
      } else if (
        mutation.type === M_SUM || mutation.type === M_MIN ||
        mutation.type === M_MAX
      ) {
        if (!(value instanceof Deno.KvU64)) {
          throw new BadRequest("Sum, min and max need a 64-bit value");
        }
        if (mutation.type === M_SUM) op.sum(key, value.value);
        else if (mutation.type === M_MIN) op.min(key, value.value);
        else op.max(key, value.value);
      } else {
        throw new BadRequest(`Unknown mutation type ${mutation.type}`);
      }
    }
    const result = await op.commit();
    const w = new BinaryWriter();
    if (result.ok) {
      w.tag(1, WireType.Varint).int32(AW_SUCCESS);
      w.tag(2, WireType.LengthDelimited).bytes(
        hexToBytes(result.versionstamp),
      );
      return w.finish();
    }
    w.tag(1, WireType.Varint).int32(AW_CHECK_FAILURE);
    const current = await backing.getMany(checks.map((c) => [c.key]));
    w.tag(4, WireType.LengthDelimited).fork();
    checks.forEach((check, i) => {
      const expected = check.versionstamp.byteLength === 0
        ? null
        : bytesToHex(check.versionstamp);
      if (current[i]!.versionstamp !== expected) w.uint32(i);
    });
    w.join();
    return w.finish();
  }

  async function handle(
    request: Request,
    info: Deno.ServeHandlerInfo<Deno.NetAddr>,
  ): Promise<Response> {
    const path = new URL(request.url).pathname;
    if (request.method !== "POST") return text(405, "Method not allowed");
    if (path === "/") return metadata(request, await request.text());
    if (stats.serving++ === 0) stats.rounds++;
    stats.mostAtOnce = Math.max(stats.mostAtOnce, stats.serving);
    // A connection is its client's port.
    const connection = info.remoteAddr.port;
    const onConnection = (servingOn.get(connection) ?? 0) + 1;
    servingOn.set(connection, onConnection);
    stats.perConnection.connections.add(connection);
    stats.perConnection.most = Math.max(stats.perConnection.most, onConnection);
    try {
      return await serveData(request, path);
    } finally {
      stats.serving--;
      servingOn.set(connection, servingOn.get(connection)! - 1);
    }
  }

  /** Data path requests being served now per connection. */
  const servingOn = new Map<number, number>();

  async function serveData(request: Request, path: string): Promise<Response> {
    if (faults.hang) {
      await server.held();
      return text(503, "Shutting down");
    }
    if (faults.latencyMs > 0) {
      await new Promise((resolve) => setTimeout(resolve, faults.latencyMs));
    }
    if (Math.random() < faults.errorRate) {
      return text(503, "Service unavailable (injected)");
    }
    try {
      return await dataPath(request, path);
    } catch (error) {
      if (error instanceof BadRequest) {
        stats.refused.push(error.message);
        return text(400, error.message);
      }
      return text(500, (error as Error).message);
    }
  }

  const server = serveRestartable(handle);
  return {
    url: `http://127.0.0.1:${server.port}/`,
    token,
    faults,
    stats,
    stop: () => server.stop(),
    start: () => server.start(),
    async [Symbol.asyncDispose]() {
      await server.stop();
      backing.close();
    },
  };
}

/** `SnapshotRead`: `repeated ReadRange ranges = 1`. */
function decodeSnapshotRead(body: Uint8Array): ReadRange[] {
  const ranges: ReadRange[] = [];
  forEachField(body, (field, reader) => {
    if (field !== 1) return false;
    const range: ReadRange = {
      start: new Uint8Array(),
      end: new Uint8Array(),
      limit: 0,
      reverse: false,
    };
    forEachField(reader.bytes(), (f, r) => {
      if (f === 1) range.start = r.bytes();
      else if (f === 2) range.end = r.bytes();
      else if (f === 3) range.limit = r.int32();
      else if (f === 4) range.reverse = r.bool();
      else return false;
      return true;
    });
    ranges.push(range);
    return true;
  });
  return ranges;
}

/** `AtomicWrite`: checks = 1, mutations = 2, enqueues = 3. */
function decodeAtomicWrite(body: Uint8Array) {
  const write = {
    checks: [] as Check[],
    mutations: [] as Mutation[],
    enqueues: 0,
  };
  forEachField(body, (field, reader) => {
    if (field === 1) {
      const check: Check = {
        key: new Uint8Array(),
        versionstamp: new Uint8Array(),
      };
      forEachField(reader.bytes(), (f, r) => {
        if (f === 1) check.key = r.bytes();
        else if (f === 2) check.versionstamp = r.bytes();
        else return false;
        return true;
      });
      write.checks.push(check);
    } else if (field === 2) {
      const mutation: Mutation = {
        key: new Uint8Array(),
        type: 0,
        expireAtMs: 0,
      };
      forEachField(reader.bytes(), (f, r) => {
        if (f === 1) mutation.key = r.bytes();
        else if (f === 2) {
          const value: { data: Uint8Array; encoding: number } = {
            data: new Uint8Array(),
            encoding: 0,
          };
          forEachField(r.bytes(), (vf, vr) => {
            if (vf === 1) value.data = vr.bytes();
            else if (vf === 2) value.encoding = vr.int32();
            else return false;
            return true;
          });
          mutation.value = value;
        } else if (f === 3) mutation.type = r.int32();
        else if (f === 4) mutation.expireAtMs = Number(r.int64());
        else return false;
        return true;
      });
      write.mutations.push(mutation);
    } else if (field === 3) {
      reader.bytes();
      write.enqueues++;
    } else return false;
    return true;
  });
  return write;
}

/**
 * Calls `read` for every field of a message; a field `read` does not take
 * (returns false) is skipped.
 */
function forEachField(
  body: Uint8Array,
  read: (field: number, reader: BinaryReader) => boolean,
): void {
  const reader = new BinaryReader(body);
  try {
    while (reader.pos < reader.len) {
      const [field, wireType] = reader.tag();
      if (!read(field, reader)) reader.skip(wireType);
    }
  } catch (error) {
    if (error instanceof BadRequest) throw error;
    throw new BadRequest(
      `Invalid protobuf message: ${(error as Error).message}`,
    );
  }
}

/**
 * A wire value as the backing database keeps it. The bytes are copied out of
 * the request: a view would be stored with the whole request's buffer.
 */
function decodeValue(value: { data: Uint8Array; encoding: number }): unknown {
  switch (value.encoding) {
    case VE_BYTES:
      return value.data.slice();
    case VE_LE64: {
      if (value.data.byteLength !== 8) throw new BadRequest("Bad LE64 value");
      const view = new DataView(value.data.buffer, value.data.byteOffset, 8);
      return new Deno.KvU64(view.getBigUint64(0, true));
    }
    case VE_V8:
      return { v8: value.data.slice() };
    default:
      throw new BadRequest(`Unknown value encoding ${value.encoding}`);
  }
}

/** A backing database value back on the wire. */
function encodeValue(value: unknown): { data: Uint8Array; encoding: number } {
  if (value instanceof Uint8Array) return { data: value, encoding: VE_BYTES };
  if (value instanceof Deno.KvU64) {
    const data = new Uint8Array(8);
    new DataView(data.buffer).setBigUint64(0, value.value, true);
    return { data, encoding: VE_LE64 };
  }
  return { data: (value as { v8: Uint8Array }).v8, encoding: VE_V8 };
}

function hexToBytes(hex: string): Uint8Array {
  return Uint8Array.from(
    { length: hex.length / 2 },
    (_, i) => parseInt(hex.slice(2 * i, 2 * i + 2), 16),
  );
}

function bytesToHex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}
