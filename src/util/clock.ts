/**
 * Where "now" comes from. Everything that schedules by time takes a Clock, so tests drive a
 * fake one through days in milliseconds and scheduling stays a deterministic function of it.
 */
export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };
