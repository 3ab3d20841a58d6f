// A walk-forward analysis: its windows (in-sample study, chosen parameters,
// in- and out-of-sample metrics) and the stitched out-of-sample equity curve.

import { api, enc } from '../api.js';
import { h, fill, table, keyValues, section, num, pct, compact } from '../dom.js';
import { timeChart, chartBox, COLORS } from '../charts.js';

export async function render(ctx, el, job) {
  const result = await api(`/v1/jobs/${enc(job.job_id)}/result`);
  if (!ctx.alive) return;
  const stitched = result.stitched || {};
  const windows = result.windows || [];
  const curveBox = chartBox('stitched');
  const eff = result.efficiency || {};
  fill(el,
    section('Verdict', keyValues([
      ['verdict', result.verdict?.verdict ?? '—'],
      ['efficiency (OOS ÷ IS annual)', eff.value === null || eff.value === undefined ? `— ${eff.reason || ''}` : num(eff.value, 3)],
      ['t-statistic', num(result.t_statistic, 3)],
      ['OOS days', stitched.days],
      ['OOS return', pct(stitched.total_return_percentage)],
      ['OOS annual return', pct(stitched.annual_return_percentage)],
      ['OOS max drawdown', pct(stitched.max_drawdown_percentage)],
      ['OOS Sharpe', num(stitched.sharpe_ratio, 3)],
      ['mode', result.setup?.mode ?? '—'],
    ], 'verdict'), h('ul', {}, (result.verdict?.reasons || []).map((r) => h('li', {}, typeof r === 'string' ? r : JSON.stringify(r))))),
    section('Stitched out-of-sample equity', curveBox),
    section(`Windows (${windows.length})`, h('div', { class: 'scroll' }, table([
      { title: '#', cell: (w) => w.window, num: true },
      { title: 'in-sample', cell: (w) => `${w.in_sample.start_date} → ${w.in_sample.end_date}` },
      { title: 'out-of-sample', cell: (w) => `${w.out_of_sample.start_date} → ${w.out_of_sample.end_date}` },
      { title: 'study', cell: (w) => h('a', { href: `#/jobs/${w.optimization_job_id}` }, w.optimization_status) },
      { title: 'chosen', cell: (w) => compact(w.params), wrap: true },
      { title: 'IS net %', cell: (w) => num(w.in_sample_metrics?.net_profit_percentage), num: true },
      { title: 'IS sharpe', cell: (w) => num(w.in_sample_metrics?.sharpe_ratio), num: true },
      { title: 'OOS net %', cell: (w) => num(w.out_of_sample_metrics?.net_profit_percentage), num: true },
      { title: 'OOS sharpe', cell: (w) => num(w.out_of_sample_metrics?.sharpe_ratio), num: true },
      { title: 'OOS trades', cell: (w) => num(w.out_of_sample_metrics?.total), num: true },
      { title: 'OOS backtest', cell: (w) => (w.out_of_sample_job_id ? h('a', { href: `#/jobs/${w.out_of_sample_job_id}` }, 'result') : '—') },
      { title: 'error', cell: (w) => (w.error ? `${w.error.code}: ${w.error.message}` : ''), wrap: true },
    ], windows, { testid: 'windows-table', rowAttrs: (w) => ({ 'data-window': w.window }) }))),
    section('Parameter stability', h('pre', { class: 'mono' }, JSON.stringify(result.parameter_stability ?? {}, null, 2))));
  const points = (stitched.equity_curve || []).map((p) => ({ time: Date.parse(`${p.date}T00:00:00Z`) / 1000, value: p.equity }));
  if (points.length) {
    ctx.onDispose(timeChart(curveBox, [{ type: 'line', data: points, title: 'OOS equity', color: COLORS[0] }]));
  } else {
    curveBox.replaceWith(h('p', { class: 'muted' }, 'no out-of-sample days'));
  }
}
