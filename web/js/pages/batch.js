// A batch's leaderboard: every variant ranked by the batch's metric, failed
// ones last with their error.

import { api, enc } from '../api.js';
import { h, fill, table, keyValues, section, num, compact } from '../dom.js';
import { bars, chartBox } from '../charts.js';

export async function render(ctx, el, job) {
  const result = await api(`/v1/jobs/${enc(job.job_id)}/result?limit=1000`);
  if (!ctx.alive) return;
  const rows = result.leaderboard || [];
  const metricNames = [...new Set(rows.flatMap((r) => Object.keys(r.metrics || {})))];
  const scoreBox = chartBox('scores', { svg: true });
  fill(el,
    section('Batch', keyValues([
      ['variants', result.total], ['succeeded', result.succeeded], ['failed', result.failed],
      ['cancelled', result.cancelled], ['ranked by', `${result.rank_by} (${result.order})`],
      ['best', result.best ? h('a', { href: `#/jobs/${result.best.job_id}` }, `#${result.best.index} ${compact(result.best.variant)}`) : '—'],
    ])),
    section(`Leaderboard (${result.leaderboard_total ?? rows.length})`, h('div', { class: 'scroll' }, table([
      { title: 'rank', cell: (r) => r.rank ?? '—', num: true },
      { title: 'variant', cell: (r) => compact(r.variant), wrap: true },
      { title: `score (${result.rank_by})`, cell: (r) => num(r.score, 4), num: true },
      ...metricNames.map((m) => ({ title: m, cell: (r) => num(r.metrics?.[m]), num: true })),
      { title: 'job', cell: (r) => h('a', { href: `#/jobs/${r.job_id}`, class: 'mono' }, r.job_id) },
      { title: 'error', cell: (r) => (r.error ? `${r.error.code}: ${r.error.message}` : ''), wrap: true },
    ], rows, { testid: 'leaderboard', rowAttrs: (r) => ({ 'data-rank': r.rank ?? '' }) }))),
    section('Scores', scoreBox));
  bars(scoreBox, rows.filter((r) => Number.isFinite(r.score)).slice(0, 40)
    .map((r) => ({ label: `#${r.rank} ${compact(r.variant)}`.slice(0, 28), value: r.score })), { format: (v) => num(v, 4) });
}
