/**
 * Markdown tables for the benchmarks' output, with padded columns so they
 * read well in a terminal and paste as they are into BENCHMARKS.md.
 *
 * @module
 */

/**
 * A Markdown table of `rows` under `header`, one line per row.
 *
 * @example
 * ```ts
 * markdownTable(["batch", "ids/s"], [["99", "47956"]]);
 * // "| batch | ids/s |\n| ----- | ----- |\n| 99    | 47956 |"
 * ```
 */
export function markdownTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) =>
    Math.max(h.length, ...rows.map((row) => row[i]!.length))
  );
  const line = (cells: string[]) =>
    `| ${cells.map((cell, i) => cell.padEnd(widths[i]!)).join(" | ")} |`;
  return [
    line(header),
    `| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`,
    ...rows.map(line),
  ].join("\n");
}
