/**
 * A real Redis Cluster for tests: three masters and three replicas from
 * Debian's `redis-server` on loopback, created with `redis-cli --cluster
 * create`, with a short `cluster-node-timeout` so that a killed master's
 * replica takes over within seconds. Ports are below 55535: each node's
 * cluster bus listens on its port + 10000.
 *
 * @module
 */
import { programRuns } from "./requirements.ts";

/** Whether `redis-cli` can be run here (it creates the cluster). */
export const REDIS_CLI_AVAILABLE = await programRuns("redis-cli", [
  "--version",
]);

/** One node of the cluster. */
export interface ClusterNode {
  port: number;
  /** Kills the node with SIGKILL. */
  kill(): Promise<void>;
}

/** A running cluster. */
export interface RedisCluster extends AsyncDisposable {
  /** Seed URLs of every node, comma-separated, as `REDIS_URL` takes them. */
  url: string;
  nodes: ClusterNode[];
  /** The ports of the current masters. */
  masters(): Promise<number[]>;
  /** The port of the master that holds `key`'s slot. */
  masterOf(key: string): Promise<number>;
  /**
   * Resolves once every slot is served again (`cluster_state:ok` on every
   * node) by three masters, and replication has settled.
   */
  healthy(timeoutMs?: number): Promise<void>;
}

/** The most ports tried before giving up on finding six free ones. */
const PORT_ATTEMPTS = 50;

/** `cluster-node-timeout`: how long a master may be silent before failover. */
export const NODE_TIMEOUT_MS = 1500;

/** Starts six nodes and makes them a cluster of three masters, one replica each. */
export async function startRedisCluster(): Promise<RedisCluster> {
  const dir = await Deno.makeTempDir({ prefix: "verve-cluster-" });
  const ports = freeClusterPorts(6);
  const children = new Map<number, Deno.ChildProcess>();
  for (const port of ports) {
    children.set(
      port,
      new Deno.Command("redis-server", {
        args: [
          "--port",
          String(port),
          "--bind",
          "127.0.0.1",
          "--cluster-enabled",
          "yes",
          "--cluster-config-file",
          `${dir}/nodes-${port}.conf`,
          "--cluster-node-timeout",
          String(NODE_TIMEOUT_MS),
          "--appendonly",
          "no",
          "--save",
          "",
          "--dir",
          dir,
        ],
        stdout: "null",
        stderr: "null",
      }).spawn(),
    );
  }
  const cli = (port: number, ...args: string[]) =>
    new Deno.Command("redis-cli", {
      args: ["-h", "127.0.0.1", "-p", String(port), ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();

  const cliText = async (port: number, ...args: string[]) =>
    new TextDecoder().decode((await cli(port, ...args)).stdout);

  const stopAll = async () => {
    for (const child of children.values()) {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already gone.
      }
      await child.status;
    }
    children.clear();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };

  try {
    for (const port of ports) await waitForPing(port, cli);
    const created = await new Deno.Command("redis-cli", {
      args: [
        "--cluster",
        "create",
        ...ports.map((port) => `127.0.0.1:${port}`),
        "--cluster-replicas",
        "1",
        "--cluster-yes",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!created.success) {
      throw new Error(
        `redis-cli --cluster create failed: ${
          new TextDecoder().decode(created.stdout)
        }${new TextDecoder().decode(created.stderr)}`,
      );
    }
  } catch (error) {
    await stopAll();
    throw error;
  }

  /**
   * Whether replication has settled: every live replica's link is up and its
   * first sync done, and every replica a master lists is online.
   */
  const linked = async () => {
    for (const port of children.keys()) {
      const { stdout } = await cli(port, "info", "replication");
      const info = new TextDecoder().decode(stdout);
      if (
        info.includes("role:slave") &&
        (!info.includes("master_link_status:up") ||
          !info.includes("master_sync_in_progress:0"))
      ) return false;
      const replicas = info.split("\n").filter((line) =>
        /^slave\d+:/.test(line)
      );
      if (replicas.some((line) => !line.includes("state=online"))) {
        return false;
      }
    }
    return true;
  };

  const cluster: RedisCluster = {
    url: ports.map((port) => `redis://127.0.0.1:${port}`).join(","),
    nodes: ports.map((port) => ({
      port,
      async kill() {
        const child = children.get(port);
        if (!child) return;
        child.kill("SIGKILL");
        await child.status;
        children.delete(port);
      },
    })),
    async masters() {
      for (const port of children.keys()) {
        const { stdout, success } = await cli(port, "cluster", "nodes");
        if (!success) continue;
        // <id> <ip:port@bus> <flags> <master> …; flags like myself,master.
        return new TextDecoder().decode(stdout).split("\n")
          .map((line) => line.split(" "))
          .filter((fields) => {
            const flags = fields[2]?.split(",") ?? [];
            return flags.includes("master") && !flags.includes("fail");
          })
          .map((fields) => Number(/:(\d+)@/.exec(fields[1]!)?.[1]))
          .sort((a, b) => a - b);
      }
      return [];
    },
    async masterOf(key) {
      for (const port of children.keys()) {
        const slot = Number(
          (await cliText(port, "cluster", "keyslot", key)).trim(),
        );
        // <id> <ip:port@bus> <flags> … <slot ranges, e.g. 0-5460 6000>
        for (
          const line of (await cliText(port, "cluster", "nodes")).split("\n")
        ) {
          const fields = line.split(" ");
          const flags = fields[2]?.split(",") ?? [];
          if (!flags.includes("master") || flags.includes("fail")) continue;
          const owns = fields.slice(8).some((range) => {
            const [from, to = from] = range.split("-").map(Number);
            return slot >= from! && slot <= to!;
          });
          if (owns) return Number(/:(\d+)@/.exec(fields[1]!)?.[1]);
        }
      }
      throw new Error(`no master holds ${key}`);
    },
    async healthy(timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        let ok = children.size > 0;
        for (const port of children.keys()) {
          const { stdout } = await cli(port, "cluster", "info");
          if (!new TextDecoder().decode(stdout).includes("cluster_state:ok")) {
            ok = false;
          }
        }
        // Replicas show as masters until the nodes agree on the roles, and
        // a write can wait for a replica only once its link is up.
        if (ok && (await cluster.masters()).length === 3 && await linked()) {
          return;
        }
        if (Date.now() > deadline) {
          throw new Error("the cluster did not become healthy");
        }
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    },
    async [Symbol.asyncDispose]() {
      await stopAll();
    },
  };
  await cluster.healthy();
  return cluster;
}

async function waitForPing(
  port: number,
  cli: (port: number, ...args: string[]) => Promise<Deno.CommandOutput>,
): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const { stdout } = await cli(port, "ping");
    if (new TextDecoder().decode(stdout).trim() === "PONG") return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`redis-server did not start on port ${port}`);
}

/** `count` free ports below 55535 whose bus ports (+10000) are free too. */
function freeClusterPorts(count: number): number[] {
  const ports: number[] = [];
  for (
    let attempt = 0;
    attempt < PORT_ATTEMPTS && ports.length < count;
    attempt++
  ) {
    const port = 20_000 + Math.floor(Math.random() * 35_000);
    if (ports.includes(port) || ports.includes(port + 10_000)) continue;
    if (isFree(port) && isFree(port + 10_000)) ports.push(port);
  }
  if (ports.length < count) throw new Error("Cannot find free cluster ports");
  return ports;
}

function isFree(port: number): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port }).close();
    return true;
  } catch {
    return false;
  }
}

/** Runs `redis-cli` against the node on `port` and returns what it printed. */
export async function redisCli(
  port: number,
  ...args: string[]
): Promise<string> {
  const { stdout } = await new Deno.Command("redis-cli", {
    args: ["-h", "127.0.0.1", "-p", String(port), ...args],
    stdout: "piped",
    stderr: "null",
  }).output();
  return new TextDecoder().decode(stdout);
}
