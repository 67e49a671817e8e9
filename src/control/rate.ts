import Type, { type Static } from 'typebox';

/** One time-of-day window with its own limit (Mbit/s, 0 = unlimited); end may wrap past midnight. */
export const RateWindow = Type.Object(
  {
    start: Type.String({ pattern: '^([01][0-9]|2[0-3]):[0-5][0-9]$' }),
    end: Type.String({ pattern: '^([01][0-9]|2[0-3]):[0-5][0-9]$' }),
    mbps: Type.Number({ minimum: 0, maximum: 1_000_000 }),
  },
  { additionalProperties: false },
);
export type RateWindow = Static<typeof RateWindow>;

export const RateSettings = Type.Object(
  {
    /** Mbit/s outside every window; 0 = no limit. */
    mbps: Type.Number({ minimum: 0, maximum: 1_000_000 }),
    windows: Type.Array(RateWindow, { maxItems: 5 }),
  },
  { additionalProperties: false },
);
export type RateSettings = Static<typeof RateSettings>;

export const NO_RATE_LIMIT: RateSettings = { mbps: 0, windows: [] };

function minutes(hhmm: string): number {
  const [h, m] = hhmm.split(':').map(Number);
  return h! * 60 + m!;
}

/** The limit in force at a local time of day (minutes since midnight): the first matching window, else the default. */
export function mbpsAt(settings: RateSettings, minuteOfDay: number): number {
  for (const w of settings.windows) {
    const a = minutes(w.start);
    const b = minutes(w.end);
    const inside = a <= b ? minuteOfDay >= a && minuteOfDay < b : minuteOfDay >= a || minuteOfDay < b;
    if (inside) return w.mbps;
  }
  return settings.mbps;
}

/** Parses the CLI form `HH:MM-HH:MM=MBIT`. */
export function parseRateWindow(text: string): RateWindow | null {
  const m = /^(\d{2}:\d{2})-(\d{2}:\d{2})=(\d+(?:\.\d+)?)$/.exec(text.trim());
  if (!m) return null;
  return { start: m[1]!, end: m[2]!, mbps: Number(m[3]) };
}

export const bytesPerSecond = (mbps: number): number => (mbps * 1_000_000) / 8;
