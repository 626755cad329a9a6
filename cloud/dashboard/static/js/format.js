// Number and time formatting shared by every page.

export function fmt(value, reference) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  const scale = Math.abs(reference ?? value);
  let digits;
  if (scale >= 1000) digits = 0;
  else if (scale >= 100) digits = 1;
  else if (scale >= 1) digits = 2;
  else if (scale >= 0.01) digits = 3;
  else digits = 4;
  return value.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
    useGrouping: scale >= 10000,
  });
}

export function fmtInt(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  return Math.round(value).toLocaleString("en-US");
}

export function label(name) {
  return name.replace(/_/g, " ").toUpperCase();
}

export function timeOf(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toLocaleString("en-GB", { hour12: false });
}

const MINUTE_MS = 60_000;
const HOUR_MS = 60 * MINUTE_MS;
const DAY_MS = 24 * HOUR_MS;

/** How long, said one way on every page: "850 ms", "4.2 s", "17 min", "5.3 h", "3 d 4 h"
 *  (the unit grows with the value; hours up to two days, then days and hours). */
export function durationText(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "—";
  const t = Math.max(0, ms);
  if (t < 1000) return `${Math.round(t)} ms`;
  if (t < MINUTE_MS) return `${(t / 1000).toFixed(1)} s`;
  if (t < HOUR_MS) return `${Math.round(t / MINUTE_MS)} min`;
  if (t < 2 * DAY_MS) return `${(t / HOUR_MS).toFixed(1)} h`;
  let days = Math.floor(t / DAY_MS);
  let hours = Math.round((t - days * DAY_MS) / HOUR_MS);
  if (hours === 24) {
    days += 1;
    hours = 0;
  }
  return hours ? `${days} d ${hours} h` : `${days} d`;
}

/** The same, from hours (remaining life). */
export function hoursText(hours) {
  return hours === null || hours === undefined ? "—" : durationText(hours * HOUR_MS);
}

/** Age of something last seen ``ms`` ago. */
export function ageText(ms) {
  return durationText(ms);
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
