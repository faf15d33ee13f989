/**
 * The attach block of a planned move (PROP.moving on the home copy): `<target host>@<ISO time>`,
 * e.g. `bob@2026-12-03T16:40:02.120Z`. The time is when attaches were blocked: the start of the
 * downtime, read back by a rerun of an interrupted move so the downtime it reports is the real one.
 */

export interface MovingMark {
  readonly target: string;
  /** ISO time the attaches were blocked; undefined when the value carries none that parses. */
  readonly since?: string;
}

export function formatMoving(target: string, since: Date): string {
  return `${target}@${since.toISOString()}`;
}

/** Tolerant: a value written by hand (`bob`) still blocks, with no time. */
export function parseMoving(value: string): MovingMark {
  const at = value.lastIndexOf("@");
  if (at <= 0) return { target: value };
  const since = value.slice(at + 1);
  return { target: value.slice(0, at), ...(!Number.isNaN(Date.parse(since)) && { since }) };
}
