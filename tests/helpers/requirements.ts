/**
 * What tests need from the machine: programs and free ports. Tests that need
 * a missing program are skipped with a message that says how to install it,
 * except under `CI=true`, where `.ci/run` installs everything and a missing
 * program must fail the run.
 *
 * @module
 */

/** Whether `program` runs and exits 0 with `args`. */
export async function programRuns(
  program: string,
  args: string[],
): Promise<boolean> {
  try {
    const { success } = await new Deno.Command(program, {
      args,
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
}

/**
 * `ignore` for `Deno.test`: `true` (and a warning naming `what` and the
 * package to install) when `available` is false, unless `CI=true`.
 */
export function skipUnless(
  available: boolean,
  what: string,
  debianPackage: string,
): boolean {
  if (available || Deno.env.get("CI") === "true") return false;
  console.warn(
    `${what} is not installed, skipping the tests that need it; install it with: apt-get install ${debianPackage}`,
  );
  return true;
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}
