// The jobs filter: the status tab and the filter form (engine, kind, enqueue-time range, id prefix) as one value,
// its query string for GET /jobs, its body for POST /jobs/bulk, and whether a job matches it.

/** Reads the form; `status` comes from the tabs ('' = every state). Returns `{filter}` or `{error}`. */
export function readFilter(form, status) {
  const value = (name) => form.elements[name].value.trim();
  const filter = {};
  if (status) filter.status = status;
  if (value('engine')) filter.engine = value('engine');
  if (value('kind')) filter.kind = value('kind').toLowerCase();
  for (const name of ['after', 'before']) {
    if (!value(name)) continue;
    // datetime-local is the browser's local time without a zone.
    const date = new Date(value(name));
    if (Number.isNaN(date.getTime())) return { error: `“${name}” is not a time` };
    filter[name] = date.toISOString();
  }
  const prefix = value('id_prefix').toLowerCase();
  if (prefix) {
    if (!/^[0-9a-f-]{1,36}$/.test(prefix)) return { error: 'An id prefix is hex digits and dashes (up to 36).' };
    filter.id_prefix = prefix;
  }
  return { filter };
}

/** The query string of `GET /jobs` for `filter`. */
export function toQuery(filter, extra = {}) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries({ ...filter, ...extra })) {
    if (value !== undefined && value !== null && value !== '') params.set(key, String(value));
  }
  return params.toString();
}

/** Whether a job (a summary with `enqueued_at`) is one `filter` selects. */
export function matches(job, filter) {
  if (filter.status && !filter.status.split(',').includes(job.status)) return false;
  if (filter.engine && job.engine !== filter.engine) return false;
  if (filter.kind && job.kind !== filter.kind) return false;
  if (filter.id_prefix && !job.id.startsWith(filter.id_prefix)) return false;
  if (filter.after || filter.before) {
    if (!job.enqueued_at) return false;
    const at = new Date(job.enqueued_at).getTime();
    if (filter.after && at < new Date(filter.after).getTime()) return false;
    if (filter.before && at >= new Date(filter.before).getTime()) return false;
  }
  return true;
}

/** The filter in words, for the confirmation of a bulk action. */
export function describe(filter) {
  const parts = [];
  if (filter.status) parts.push(`status ${filter.status.replace(',', ' or ')}`);
  if (filter.engine) parts.push(`engine ${filter.engine}`);
  if (filter.kind) parts.push(`kind ${filter.kind}`);
  if (filter.after) parts.push(`enqueued from ${new Date(filter.after).toLocaleString()}`);
  if (filter.before) parts.push(`enqueued before ${new Date(filter.before).toLocaleString()}`);
  if (filter.id_prefix) parts.push(`id starting ${filter.id_prefix}`);
  return parts.length ? parts.join(', ') : 'every job';
}
