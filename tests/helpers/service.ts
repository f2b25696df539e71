/**
 * Runs the real service (`main.ts`) as a child process for end-to-end tests,
 * and reads its JSON Lines log from stdout.
 *
 * @module
 */

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** `deno run` with the permissions `deno task start` gives the service. */
const RUN_MAIN = [
  "run",
  "--allow-net",
  "--allow-env",
  "--allow-read",
  "--allow-write",
  MAIN,
];

/** One parsed log line of the service. */
export interface LogLine {
  level: string;
  message: string;
  logger: string;
  properties: Record<string, unknown>;
}

/** A running service process. */
export interface Service extends AsyncDisposable {
  /** Base URL, e.g. `http://127.0.0.1:43210`. */
  url: string;
  /** The process id. */
  pid: number;
  /** Every log line so far. */
  lines: LogLine[];
  /** Resolves with the first line matching `test`, waiting for it if needed. */
  waitForLog(
    test: (line: LogLine) => boolean,
    timeoutMs?: number,
  ): Promise<LogLine>;
  /** Sends `signal` and resolves with the exit code. */
  stop(signal?: Deno.Signal): Promise<number>;
  /** Sends `signal` and returns at once, e.g. to send it twice. */
  signal(signal: Deno.Signal): void;
  /** What the process wrote to stderr so far. */
  stderr(): string;
}

/**
 * Starts `main.ts` on 127.0.0.1 and a free port with `env` added to a clean
 * environment, and waits until it listens.
 */
export async function startService(
  env: Record<string, string>,
): Promise<Service> {
  const child = new Deno.Command(Deno.execPath(), {
    args: RUN_MAIN,
    env: { HOST: "127.0.0.1", PORT: "0", LOG_LEVEL: "info", ...env },
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: LogLine[] = [];
  const waiters = new Set<() => void>();
  let stderr = "";
  const stdoutDone = (async () => {
    let buffered = "";
    for await (
      const chunk of child.stdout.pipeThrough(new TextDecoderStream())
    ) {
      buffered += chunk;
      let newline;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const text = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        if (text.trim() === "") continue;
        lines.push(JSON.parse(text));
        for (const wake of waiters) wake();
      }
    }
  })();
  const stderrDone = (async () => {
    for await (
      const chunk of child.stderr.pipeThrough(new TextDecoderStream())
    ) stderr += chunk;
  })();
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    for (const wake of waiters) wake();
    return s;
  });

  function waitForLog(
    test: (line: LogLine) => boolean,
    timeoutMs = 15_000,
  ): Promise<LogLine> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = lines.find(test);
        if (found) done(() => resolve(found));
        else if (exited) {
          done(() => reject(new Error(`service exited; stderr: ${stderr}`)));
        }
      };
      const timer = setTimeout(
        () => done(() => reject(new Error("timed out waiting for a log line"))),
        timeoutMs,
      );
      const done = (settle: () => void) => {
        clearTimeout(timer);
        waiters.delete(check);
        settle();
      };
      waiters.add(check);
      check();
    });
  }

  let stopped: Promise<number> | undefined;
  function stop(signal: Deno.Signal = "SIGTERM"): Promise<number> {
    stopped ??= (async () => {
      if (!exited) child.kill(signal);
      const { code } = await status;
      await Promise.all([stdoutDone, stderrDone]);
      return code;
    })();
    return stopped;
  }

  try {
    const listening = await waitForLog((l) =>
      l.message.startsWith("Listening on")
    );
    return {
      url: `${
        listening.properties.scheme ?? "http"
      }://127.0.0.1:${listening.properties.port}`,
      pid: child.pid,
      lines,
      waitForLog,
      stop,
      signal: (signal) => child.kill(signal),
      stderr: () => stderr,
      async [Symbol.asyncDispose]() {
        await stop("SIGKILL");
      },
    };
  } catch (error) {
    await stop("SIGKILL");
    throw error;
  }
}

/**
 * Runs `main.ts` with `env` to its end and returns its exit code, its log
 * lines (stdout) and its stderr.
 */
export async function runServiceToExit(
  env: Record<string, string>,
): Promise<{ code: number; lines: LogLine[]; stderr: string }> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: RUN_MAIN,
    env,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const lines = new TextDecoder().decode(stdout).split("\n")
    .filter((line) => line.trim() !== "").map((line) => JSON.parse(line));
  return { code, lines, stderr: new TextDecoder().decode(stderr) };
}
