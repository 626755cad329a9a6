// Threshold colouring: the rule of docs/manifest.md §4.2, as shared/catalog.py applies it.
//   critical: below critical_low or above critical_high
//   warning:  below warn_low or above warn_high (when null: low + 10 % of |low|,
//             high - 10 % of |high|, i.e. low × 1.1 and high × 0.9 for positive limits)
//   nominal:  otherwise

export const NOMINAL = "nominal";
export const WARNING = "warning";
export const CRITICAL = "critical";
const RANK = { [NOMINAL]: 0, [WARNING]: 1, [CRITICAL]: 2 };

const isNum = (v) => typeof v === "number" && Number.isFinite(v);

export function warnLow(entry) {
  if (isNum(entry.warn_low)) return entry.warn_low;
  return isNum(entry.critical_low) ? entry.critical_low + 0.1 * Math.abs(entry.critical_low) : null;
}

export function warnHigh(entry) {
  if (isNum(entry.warn_high)) return entry.warn_high;
  return isNum(entry.critical_high)
    ? entry.critical_high - 0.1 * Math.abs(entry.critical_high)
    : null;
}

/** "critical" | "warning" | "nominal", or null (no value or no thresholds). */
export function classify(value, entry) {
  if (!isNum(value)) return null;
  if (!entry) return null;
  const low = entry.critical_low;
  const high = entry.critical_high;
  if ((isNum(low) && value < low) || (isNum(high) && value > high)) return CRITICAL;
  const wl = warnLow(entry);
  const wh = warnHigh(entry);
  if ((wl !== null && value < wl) || (wh !== null && value > wh)) return WARNING;
  return NOMINAL;
}

export function worst(states) {
  let result = null;
  for (const state of states) {
    if (state && (result === null || RANK[state] > RANK[result])) result = state;
  }
  return result;
}

/** Thresholds of one machine: catalog defaults, replaced by the API's table and by pushes. */
export class ThresholdTable {
  constructor(catalog) {
    this.entries = new Map();
    for (const sensor of catalog) {
      this.entries.set(sensor.name, {
        critical_low: sensor.critical_low,
        critical_high: sensor.critical_high,
        warn_low: sensor.warn_low,
        warn_high: sensor.warn_high,
        source: "default",
      });
    }
  }

  load(table) {
    for (const [name, entry] of Object.entries(table || {})) this.entries.set(name, entry);
  }

  set(name, entry) {
    if (entry) this.entries.set(name, entry);
    else this.entries.delete(name);
  }

  get(name) {
    return this.entries.get(name) || null;
  }

  classify(name, value) {
    return classify(value, this.get(name));
  }
}
