// Strategies: the list with validity; one strategy's source with its
// validation errors and warnings at their lines, its hyperparameters and its
// deep validation; and a scratch editor that validates a draft (nothing saved).

import { api, enc } from '../api.js';
import { h, fill, table, section, badge, when, keyValues } from '../dom.js';

function hyperparameters(list) {
  return table([
    { title: 'name', cell: (p) => p.name },
    { title: 'type', cell: (p) => p.type },
    { title: 'min', cell: (p) => JSON.stringify(p.min ?? null), num: true },
    { title: 'max', cell: (p) => JSON.stringify(p.max ?? null), num: true },
    { title: 'step', cell: (p) => JSON.stringify(p.step ?? null), num: true },
    { title: 'options', cell: (p) => (p.options ? JSON.stringify(p.options) : '—'), wrap: true },
    { title: 'default', cell: (p) => JSON.stringify(p.default ?? null) },
  ], list || [], { testid: 'hyperparameters', empty: 'none declared (or not a literal list)' });
}

/** The source, numbered, each diagnostic under its line. */
export function source(code, errors = [], warnings = []) {
  const byLine = new Map();
  for (const [kind, list] of [['error', errors], ['warning', warnings]]) {
    for (const d of list || []) {
      const line = Number(d.line) || 0;
      if (!byLine.has(line)) byLine.set(line, []);
      byLine.get(line).push({ kind, ...d });
    }
  }
  const lines = code.split('\n');
  const out = [];
  // Diagnostics without a line (0) or past the end come first.
  for (const [line, diags] of byLine) {
    if (line < 1 || line > lines.length) {
      for (const d of diags) out.push(h('div', { class: `diag ${d.kind}`, 'data-line': line }, `${d.kind}: ${d.message}`));
    }
  }
  lines.forEach((text, i) => {
    const diags = byLine.get(i + 1) || [];
    const worst = diags.some((d) => d.kind === 'error') ? 'error' : diags.length ? 'warning' : '';
    out.push(h('div', { class: `line ${worst}`.trim(), 'data-line': i + 1 }, h('span', { class: 'n' }, i + 1), text));
    for (const d of diags) {
      out.push(h('div', { class: `diag ${d.kind}`, 'data-testid': `diag-${d.kind}`, 'data-line': i + 1 },
        `${' '.repeat(Math.max(0, (Number(d.column) || 1) - 1))}^ ${d.kind} (line ${i + 1}, column ${d.column ?? '?'}): ${d.message}`));
    }
  });
  return h('div', { class: 'code mono', 'data-testid': 'source' }, out);
}

function list(ctx, el) {
  const box = h('div');
  fill(el, h('h1', {}, 'Strategies'), box);
  ctx.poll(async () => {
    const { strategies } = await api('/v1/strategies');
    if (!ctx.alive) return;
    fill(box, table([
      { title: 'name', cell: (st) => h('a', { href: `#/strategies/${enc(st.name)}` }, st.name) },
      { title: 'valid', cell: (st) => h('span', { class: `badge ${st.valid ? 'valid' : 'invalid'}` }, st.valid ? 'valid' : 'invalid') },
      { title: 'errors', cell: (st) => st.errors.length, num: true },
      { title: 'warnings', cell: (st) => st.warnings.length, num: true },
      { title: 'hyperparameters', cell: (st) => (st.hyperparameters ? st.hyperparameters.map((p) => p.name).join(', ') : '—'), wrap: true },
      { title: 'deep validation', cell: (st) => (st.deep_validation ? badge(st.deep_validation.status) : '—') },
      { title: 'modified (UTC)', cell: (st) => when(st.modified_at) },
      { title: 'sha256', cell: (st) => h('span', { class: 'mono muted' }, st.sha256.slice(0, 12)) },
    ], strategies, { testid: 'strategies-table', rowAttrs: (st) => ({ 'data-strategy': st.name, 'data-valid': String(st.valid) }) }));
  }, 5000);
}

function detail(ctx, el, name) {
  const top = h('div');
  const code = h('div');
  const draft = h('div');
  fill(el, h('h1', {}, 'Strategy ', name), top, code, draft);
  let sha = null;
  ctx.poll(async () => {
    const st = await api(`/v1/strategies/${enc(name)}`);
    if (!ctx.alive || st.sha256 === sha) return;
    sha = st.sha256;
    const deep = st.deep_validation;
    fill(top, section('Status', keyValues([
      ['valid', h('span', { class: `badge ${st.valid ? 'valid' : 'invalid'}`, 'data-testid': 'strategy-valid' }, st.valid ? 'valid' : 'invalid')],
      ['errors', st.errors.length],
      ['warnings', st.warnings.length],
      ['modified', when(st.modified_at)],
      ['sha256', h('span', { class: 'mono' }, st.sha256.slice(0, 16))],
      ['deep validation', deep ? h('a', { href: `#/jobs/${deep.job_id}` }, deep.status, deep.valid === false ? ' (invalid)' : '') : '—'],
    ])), section('Hyperparameters', hyperparameters(st.hyperparameters || deep?.hyperparameters)));
    fill(code, section('Source', source(st.code, st.errors, [...st.warnings, ...(deep?.warnings || [])])));
    if (!draft.childNodes.length) fill(draft, editor(ctx, st.code));
  }, 5000);
}

function editor(ctx, initial) {
  const area = h('textarea', { class: 'source mono', spellcheck: 'false', 'data-testid': 'draft' });
  area.value = initial;
  const out = h('div', { 'data-testid': 'draft-result' });
  const run = () => ctx.once(async () => {
    const report = await api('/v1/strategies/validate', { method: 'POST', body: { code: area.value } });
    fill(out, h('p', {}, h('span', { class: `badge ${report.valid ? 'valid' : 'invalid'}` }, report.valid ? 'valid' : 'invalid'),
      ` ${report.errors.length} error(s), ${report.warnings.length} warning(s)`),
    source(area.value, report.errors, report.warnings));
  });
  return section('Check a draft (validated by the API, not saved)', area,
    h('p', {}, h('button', { type: 'button', onclick: run, 'data-action': 'validate' }, 'validate')), out);
}

export function render(ctx, el, { id }) {
  if (id) detail(ctx, el, decodeURIComponent(id));
  else list(ctx, el);
}
