/**
 * A small real filesystem for the full-disk chaos scenario: a `tmpfs` with a
 * size limit, mounted on a fresh temporary directory. Mounting needs root
 * (CAP_SYS_ADMIN); where the machine does not allow it, the scenario is
 * skipped with the reason.
 *
 * @module
 */

/** A mounted small filesystem. */
export interface SmallDisk extends AsyncDisposable {
  /** Where it is mounted. */
  path: string;
  /** Writes a filler file until the filesystem is full. */
  fill(): Promise<void>;
  /** Removes the filler file: the space is back. */
  free(): Promise<void>;
}

/**
 * Mounts a `tmpfs` of `bytes` on a new temporary directory.
 *
 * @returns The disk, or why it cannot be mounted here.
 */
export async function mountSmallDisk(
  bytes: number,
): Promise<SmallDisk | string> {
  const path = await Deno.makeTempDir({ prefix: "verve-disk-" });
  const mount = await run("mount", [
    "-t",
    "tmpfs",
    "-o",
    `size=${bytes}`,
    "tmpfs",
    path,
  ]);
  if (mount !== "") {
    await Deno.remove(path);
    return `cannot mount a tmpfs here (${mount})`;
  }
  const filler = `${path}/filler`;
  return {
    path,
    async fill() {
      const file = await Deno.open(filler, { write: true, create: true });
      const block = new Uint8Array(64 * 1024);
      try {
        for (;;) await file.write(block);
      } catch (error) {
        if (!isFull(error)) throw error;
      } finally {
        file.close();
      }
    },
    async free() {
      await Deno.remove(filler).catch(() => {});
    },
    async [Symbol.asyncDispose]() {
      const unmount = await run("umount", [path]);
      if (unmount !== "") throw new Error(`umount ${path}: ${unmount}`);
      await Deno.remove(path);
    },
  };
}

function isFull(error: unknown): boolean {
  return error instanceof Error && /No space left|os error 28/.test(
    error.message,
  );
}

/** Runs `program`; returns "" on success, else its error output. */
async function run(program: string, args: string[]): Promise<string> {
  try {
    const { success, stderr } = await new Deno.Command(program, {
      args,
      stdout: "null",
      stderr: "piped",
    }).output();
    return success ? "" : new TextDecoder().decode(stderr).trim() || "failed";
  } catch (error) {
    return (error as Error).message;
  }
}
