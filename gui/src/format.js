// How times and durations read on the page: always with the day, in the browser's locale and time zone.

const thisYear = new Date().getFullYear();
const withDay = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', second: '2-digit' });
const withYear = new Intl.DateTimeFormat(undefined, { year: 'numeric', day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', second: '2-digit' });

/** An RFC 3339 time as "3 Dec, 18:04:05" (the year too when it is not this one); '—' for none. */
export function dateTime(text) {
  if (!text) return '—';
  const date = new Date(text);
  if (Number.isNaN(date.getTime())) return text;
  return (date.getFullYear() === thisYear ? withDay : withYear).format(date);
}

/** The time between two RFC 3339 times as "340 ms", "12.5 s" or "3 min 4 s"; '—' when either is missing. */
export function duration(from, to) {
  if (!from || !to) return '—';
  const ms = new Date(to).getTime() - new Date(from).getTime();
  if (!Number.isFinite(ms) || ms < 0) return '—';
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const minutes = Math.floor(ms / 60_000);
  return `${minutes} min ${Math.round((ms % 60_000) / 1000)} s`;
}

/** A count with thousands separators. */
export function count(n) {
  return Number(n ?? 0).toLocaleString();
}
