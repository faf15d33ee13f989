/**
 * Records zcsi keeps as JSON text (zcsi:* properties such as zcsi:failed-over, zcsi:last-move,
 * zcsi:meta and zcsi:parameters; a Lease's move annotation; `zfs program -j` output) are read
 * back here. A hand-edited value, or one written by another zcsi version, must never throw in a
 * reader: each reader gets the object or undefined, and checks the type of every field it uses.
 */

/** The JSON object `text` holds; undefined for no text, text that is not JSON, and JSON that is not an object (null, an array, a string, a number). */
export function parseJsonObject(text: string | undefined): Record<string, unknown> | undefined {
  if (text === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return undefined;
  }
  return typeof parsed === "object" && parsed !== null && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : undefined;
}
