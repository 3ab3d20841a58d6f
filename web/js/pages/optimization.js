// An optimization study: its leaderboard (training objective, testing metrics
// and rank), convergence (each trial's value and the best so far), parameter
// importance, the two-parameter heatmap, and the overfitting statistics (PBO by
// CSCV, deflated and probabilistic Sharpe ratios).

import { api, enc } from '../api.js';
import { h, fill, table, keyValues, section, num, compact } from '../dom.js';
import { svgChart, heatmap, bars, chartBox, COLORS } from '../charts.js';

function stat(value, reason) {
  return value === null || value === undefined ? h('span', { class: 'muted', title: reason || '' }, `— ${reason || ''}`) : num(value, 4);
}

export async function render(ctx, el, job) {
  const result = await api(`/v1/jobs/${enc(job.job_id)}/result`);
  if (!ctx.alive) return;
  const study = result.study || {};
  const objective = study.objectives?.[0];
  const objectiveName = objective ? `${objective.name} (${objective.direction})` : 'objective';
  const rows = result.leaderboard || [];
  const convergence = result.convergence || [];
  const pbo = result.overfitting?.pbo || {};
  const dsr = result.overfitting?.deflated_sharpe || {};
  const convergenceBox = chartBox('convergence', { svg: true });
  const heatmapBox = chartBox('heatmap', { svg: true });
  const importanceBox = chartBox('importance', { svg: true });
  const logitBox = chartBox('pbo-logits', { svg: true });
  const testingKeys = [...new Set(rows.flatMap((r) => Object.keys(r.testing || {})))];
  fill(el,
    section('Study', keyValues([
      ['sampler', study.sampler], ['seed', study.seed], ['trials', study.trials], ['objective', objectiveName],
      ['training', study.training ? `${study.training.start_date} → ${study.training.end_date}` : '—'],
      ['testing', study.testing ? `${study.testing.start_date} → ${study.testing.end_date}` : '—'],
      ...Object.entries(result.counts || {}).map(([k, v]) => [k, v]),
      ['best', result.best ? `trial ${result.best.trial}: ${compact(result.best.params)}` : '—'],
    ])),
    section('Leaderboard', h('div', { class: 'scroll' }, table([
      { title: 'rank', cell: (r) => r.rank, num: true },
      { title: 'trial', cell: (r) => h('a', { href: `#/jobs/${r.job_id}` }, r.trial), num: true },
      { title: 'params', cell: (r) => compact(r.params), wrap: true },
      { title: 'training objective', cell: (r) => num(r.values?.[0], 4), num: true },
      { title: 'training sharpe', cell: (r) => num(r.training?.sharpe_ratio), num: true },
      { title: 'training net %', cell: (r) => num(r.training?.net_profit_percentage), num: true },
      { title: 'testing objective', cell: (r) => num(r.testing_objective, 4), num: true },
      { title: 'testing rank', cell: (r) => r.testing_rank ?? '—', num: true },
      ...testingKeys.filter((k) => ['net_profit_percentage', 'max_drawdown', 'total'].includes(k))
        .map((k) => ({ title: `testing ${k}`, cell: (r) => num(r.testing?.[k]), num: true })),
    ], rows, { testid: 'leaderboard', rowAttrs: (r) => ({ 'data-rank': r.rank }) }))),
    section('Convergence', convergenceBox),
    h('div', { class: 'row' },
      h('div', { class: 'grow' }, section('Heatmap', h('p', { class: 'muted' }, result.heatmap?.note || ''), heatmapBox)),
      h('div', { class: 'grow' }, section('Parameter importance (η²)', importanceBox))),
    section('Overfitting', keyValues([
      ['PBO (CSCV)', stat(pbo.pbo, pbo.reason)],
      ['partitions (S)', pbo.partitions ?? '—'],
      ['trials in PBO (N)', pbo.n_trials ?? pbo.trials ?? '—'],
      ['P(OOS loss)', stat(pbo.prob_oos_loss, pbo.reason)],
      ['logit mean', stat(pbo.logit_mean, pbo.reason)],
      ['deflated Sharpe (DSR)', stat(dsr.dsr, dsr.reason)],
      ['probabilistic Sharpe (PSR)', stat(dsr.psr, dsr.reason)],
      ['best trial Sharpe (daily)', stat(dsr.sharpe, dsr.reason)],
      ['expected max Sharpe (SR0)', stat(dsr.expected_max_sharpe, dsr.reason)],
      ['trials (N)', dsr.n_trials ?? '—'],
    ], 'overfitting'), h('h3', {}, 'PBO: logits of the in-sample best out of sample'), logitBox,
    h('p', { class: 'muted' }, result.overfitting?.input || '')));

  const xs = convergence.map((c) => c.trial);
  svgChart(convergenceBox, {
    x: xs,
    lines: [
      { name: 'trial value', values: convergence.map((c) => c.value), color: COLORS[0], dots: true },
      { name: 'best so far', values: convergence.map((c) => c.best), color: COLORS[1] },
    ],
    xLabel: 'trial',
    yLabel: objectiveName,
  });
  if (result.heatmap) heatmap(heatmapBox, result.heatmap);
  else heatmapBox.replaceWith(h('p', { class: 'muted' }, 'no heatmap: it needs two searched parameters and a scored trial'));
  bars(importanceBox, Object.entries(result.importance || {}).map(([label, value]) => ({ label, value })));
  const histogram = pbo.logit_histogram;
  if (histogram && histogram.counts?.length) {
    bars(logitBox, histogram.counts.map((c, i) => ({
      label: `${num(histogram.edges[i], 2)}…${num(histogram.edges[i + 1], 2)}`, value: c,
    })), { format: (v) => num(v, 0) });
  } else {
    logitBox.replaceWith(h('p', { class: 'muted' }, 'no PBO histogram'));
  }
}
