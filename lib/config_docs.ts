/**
 * The settings' documentation, from the schema in `config.ts`: every
 * variable, its default as shown, and what it means. `deno task docs`
 * writes it to `docs/configuration.md`; a test fails when that is stale.
 *
 * @module
 */
import type { z } from "zod";
import { schema } from "./config.ts";

/** A setting's default as the documentation shows it: `-` for none. */
function defaultOf(field: z.ZodType): string {
  const unset = field.safeParse(undefined);
  if (!unset.success || unset.data === undefined) return "-";
  const value = unset.data;
  const text = Array.isArray(value) ? value.join(",") : String(value);
  return text === "" ? "-" : `\`${text}\``;
}

/**
 * Every setting as documented: its name, its default as shown, and what it
 * means, in the schema's order.
 */
export function settingDocs(): {
  name: string;
  shownDefault: string;
  meaning: string;
}[] {
  return Object.entries(schema.shape).map(([name, field]) => {
    const meta = field.meta() as
      | { shownDefault?: string; description?: string }
      | undefined;
    return {
      name,
      shownDefault: meta?.shownDefault ?? defaultOf(field),
      meaning: meta?.description ?? "",
    };
  });
}

/**
 * The settings' documentation in Markdown, from the schema: every variable,
 * its default and what it means, in the schema's order. `deno task docs`
 * writes it to `docs/configuration.md`, so links in the meanings are
 * relative to `docs/`.
 */
export function configurationDoc(): string {
  const lines = [
    "# Configuration",
    "",
    "All settings are environment variables; every one has a default. A value",
    "the service cannot accept stops it at start with exit code 2 and a message",
    "naming the variable, e.g.",
    '`Cannot parse WINDOW_MS: must be a whole number (got "soon")`.',
    "",
    "Generated from the settings schema in `lib/config.ts` by `deno task docs`;",
    "a test fails when this file is stale.",
    "",
    "| Variable | Default | Meaning |",
    "| --- | --- | --- |",
  ];
  for (const { name, shownDefault, meaning } of settingDocs()) {
    lines.push(`| \`${name}\` | ${shownDefault} | ${meaning} |`);
  }
  return lines.join("\n") + "\n";
}
