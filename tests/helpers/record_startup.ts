/**
 * Preloaded into `main.ts` (`deno run --preload`) by the Deno Deploy test:
 * writes a line to stderr each time the service registers a cron job or
 * starts a server, so the test can check their order. Both calls go on to
 * Deno's own.
 *
 * @module
 */
const cron = Deno.cron;
const serve = Deno.serve;

// Deno's own are getters: define over them.
Object.defineProperty(Deno, "cron", {
  value: (...args: Parameters<typeof Deno.cron>) => {
    console.error(`startup: cron ${args[0]}`);
    return cron(...args);
  },
});
Object.defineProperty(Deno, "serve", {
  value: (...args: unknown[]) => {
    console.error("startup: serve");
    return (serve as (...a: unknown[]) => unknown)(...args);
  },
});
