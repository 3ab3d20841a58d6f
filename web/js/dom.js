// Small DOM helpers: element building, number and date formatting, tables.

/** h('div', {class: 'x', onclick: f}, child, 'text', [more]) → Element. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const SVG_NS = 'http://www.w3.org/2000/svg';

export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) el.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** A number for people: null/NaN → '—', large values grouped, small ones with precision. */
export function num(value, digits = 2) {
  if (value === null || value === undefined || value === '') return '—';
  if (typeof value !== 'number') return String(value);
  if (!Number.isFinite(value)) return '—';
  if (Number.isInteger(value) && Math.abs(value) < 1e15) return value.toLocaleString('en-US');
  const abs = Math.abs(value);
  if (abs !== 0 && abs < 0.01) return value.toPrecision(3);
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function pct(value, digits = 2) {
  return value === null || value === undefined || !Number.isFinite(value) ? '—' : `${num(value, digits)} %`;
}

/** A signed number wrapped in a span coloured by its sign. */
export function signed(value, text) {
  const cls = typeof value === 'number' && value > 0 ? 'pos' : typeof value === 'number' && value < 0 ? 'neg' : '';
  return h('span', { class: cls }, text ?? num(value));
}

/** RFC 3339 / ms / seconds → 'YYYY-MM-DD HH:MM' (UTC). */
export function when(value) {
  if (value === null || value === undefined) return '—';
  const date = typeof value === 'number' ? new Date(value > 1e11 ? value : value * 1000) : new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toISOString().slice(0, 16).replace('T', ' ');
}

export function day(ms) {
  return new Date(ms).toISOString().slice(0, 10);
}

/** Seconds between two RFC 3339 times (or until now). */
export function duration(from, to) {
  if (!from) return '—';
  const seconds = Math.max(0, ((to ? new Date(to) : new Date()) - new Date(from)) / 1000);
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} m ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} m`;
}

/** A compact one-line JSON of small objects (parameters, variants). */
export function compact(value) {
  if (value === null || value === undefined) return '—';
  if (typeof value !== 'object') return String(value);
  return Object.entries(value)
    .map(([k, v]) => `${k}=${typeof v === 'object' && v !== null ? JSON.stringify(v) : v}`)
    .join(' ');
}

export function badge(status) {
  return h('span', { class: `badge ${status}`, 'data-field': 'status' }, status);
}

export function progressBar(fraction) {
  const p = Math.max(0, Math.min(1, Number(fraction) || 0));
  return h('span', { class: 'progress', title: `${(p * 100).toFixed(0)} %` },
    h('span', { style: `width:${(p * 100).toFixed(1)}%` }));
}

/**
 * A table: columns are [{title, cell: row => content, num?: bool, wrap?: bool}].
 * `rowAttrs(row)` adds attributes to each <tr> (e.g. data-job-id).
 */
export function table(columns, rows, { testid, rowAttrs, empty = 'nothing yet' } = {}) {
  const head = h('tr', {}, columns.map((c) => h('th', { class: c.num ? 'num' : '' }, c.title)));
  const body = rows.length
    ? rows.map((row) => h('tr', rowAttrs ? rowAttrs(row) : {},
      columns.map((c) => h('td', { class: [c.num ? 'num' : '', c.wrap ? 'wrap' : ''].join(' ').trim() || null }, c.cell(row)))))
    : [h('tr', {}, h('td', { colspan: columns.length, class: 'muted' }, empty))];
  return h('table', { 'data-testid': testid }, h('thead', {}, head), h('tbody', {}, body));
}

/** Key/value grid of metrics. */
export function keyValues(entries, testid) {
  return h('div', { class: 'kv', 'data-testid': testid },
    entries.map(([k, v]) => h('div', { 'data-metric': k }, h('span', { class: 'k' }, k), h('span', { class: 'v' }, v))));
}

export function section(title, ...children) {
  return h('section', { class: 'panel' }, h('h2', {}, title), children);
}
