// A research pipeline: its verdict, each step with its job and gates, and the
// Markdown report (shown as text: every number in it names its job).

import { api, enc } from '../api.js';
import { h, fill, table, keyValues, section, compact, badge } from '../dom.js';

export async function render(ctx, el, job) {
  const result = await api(`/v1/jobs/${enc(job.job_id)}/result`);
  if (!ctx.alive) return;
  const verdict = result.verdict || {};
  const failed = verdict.failed_gate;
  fill(el,
    section('Verdict', keyValues([
      ['outcome', h('strong', { 'data-field': 'verdict', class: verdict.outcome === 'passed' ? 'pos' : 'neg' }, verdict.outcome ?? '—')],
      ['reason', verdict.reason ?? '—'],
      ...(failed ? [['failed gate', `${failed.gate} (value ${JSON.stringify(failed.value)}, job ${failed.job_id})`]] : []),
      ['template', result.provenance?.template ?? '—'],
      ['seed', result.provenance?.params?.seed ?? '—'],
    ], 'verdict'), h('ul', {}, (result.provenance?.notes || []).map((n) => h('li', { class: 'muted' }, n)))),
    section(`Steps (${(result.steps || []).length})`, h('div', { class: 'scroll' }, table([
      { title: 'step', cell: (s) => s.id },
      { title: 'kind', cell: (s) => s.kind },
      { title: 'status', cell: (s) => badge(s.status) },
      { title: 'job', cell: (s) => (s.job_id ? h('a', { href: `#/jobs/${s.job_id}`, class: 'mono' }, s.job_id) : '—') },
      { title: 'needs', cell: (s) => (s.needs || []).join(', ') },
      { title: 'summary', cell: (s) => compact(s.summary), wrap: true },
    ], result.steps || [], { testid: 'steps-table', rowAttrs: (s) => ({ 'data-step': s.id }) }))),
    section('Gates', table([
      { title: 'gate', cell: (g) => h('span', { class: 'mono' }, g.gate) },
      { title: 'value', cell: (g) => JSON.stringify(g.value), num: true },
      { title: 'from job', cell: (g) => h('a', { href: `#/jobs/${g.job_id}`, class: 'mono' }, g.job_id) },
      { title: 'result', cell: (g) => (g.passed ? 'passed' : `failed: ${g.reason || ''}`), wrap: true },
    ], result.gates || [], { testid: 'gates-table', empty: 'no gate was checked' })),
    section('Report (Markdown)', h('pre', { class: 'mono', 'data-testid': 'report' }, result.report || '')));
}
