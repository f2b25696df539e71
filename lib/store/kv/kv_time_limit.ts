/**
 * Deno KV with a time limit on every call. A remote database (KV Connect,
 * Deno Deploy) retries server errors and lost connections without end, so a
 * call can wait for as long as the database is away; with the limit, it
 * fails with {@link StoreUnavailableError} instead, which the request path
 * answers with `503` and the reporter retries on its next tick.
 *
 * A call that ran out of time may still take effect later, when the
 * database answers its retry: a commit's checks keep that safe (a later
 * commit sees it, or fails its check), and an id whose commit ran out of
 * time got `503` and may still be counted, within the bounds `docs/faults.md`
 * states.
 *
 * @module
 */
import { withinTime } from "../../time_limit.ts";
import { StoreUnavailableError } from "../store.ts";

/**
 * Wraps `kv` so that `get`, `getMany`, `set`, `delete`, each step of `list`
 * and each `commit` of `atomic` fail after `timeoutMs`.
 *
 * @example
 * ```ts
 * const kv = withTimeLimit(await Deno.openKv("https://…"), 2000);
 * await kv.get(["verve", "report", 0]); // rejects after 2 s without an answer
 * ```
 */
export function withTimeLimit(kv: Deno.Kv, timeoutMs: number): Deno.Kv {
  const limit = <T>(call: string, work: Promise<T>): Promise<T> =>
    withinTime(
      work,
      timeoutMs,
      () =>
        new StoreUnavailableError(
          `Deno KV did not answer ${call} within ${timeoutMs} ms`,
        ),
    );
  return new Proxy(kv, {
    get(target, property) {
      switch (property) {
        case "get":
        case "getMany":
        case "set":
        case "delete":
          return (...args: unknown[]) =>
            limit(
              property,
              (target[property] as (...a: unknown[]) => Promise<unknown>)
                .apply(target, args),
            );
        case "list":
          return (...args: Parameters<Deno.Kv["list"]>) =>
            limitList(target.list(...args), limit);
        case "atomic":
          return () => limitAtomic(target.atomic(), limit);
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

type Limit = <T>(call: string, work: Promise<T>) => Promise<T>;

function limitList<T>(
  iterator: Deno.KvListIterator<T>,
  limit: Limit,
): Deno.KvListIterator<T> {
  const limited: Deno.KvListIterator<T> = new Proxy(iterator, {
    get(target, property) {
      if (property === "next") return () => limit("list", target.next());
      if (property === Symbol.asyncIterator) return () => limited;
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return limited;
}

function limitAtomic(
  operation: Deno.AtomicOperation,
  limit: Limit,
): Deno.AtomicOperation {
  const commit = operation.commit.bind(operation);
  operation.commit = () => limit("commit", commit());
  return operation;
}
