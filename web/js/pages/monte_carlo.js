// A Monte Carlo: the fan chart (equity percentile bands over the scenarios and
// the original path) and each metric's distribution (percentiles, intervals,
// the original's rank), with the probabilities of loss and ruin. Trades mode
// measures closed-trade equity; Jesse's mark-to-market figure of the original
// is its own column, beside the distribution, not part of it.

import { api, enc } from '../api.js';
import { h, fill, table, keyValues, section, num, pct } from '../dom.js';
import { svgChart, bars, chartBox, COLORS } from '../charts.js';

export async function render(ctx, el, job) {
  const result = await api(`/v1/jobs/${enc(job.job_id)}/result`);
  if (!ctx.alive) return;
  const fan = result.fan || {};
  const metrics = result.metrics || {};
  const fanBox = chartBox('fan', { svg: true });
  const histogramBox = chartBox('return-histogram', { svg: true });
  const percentileKeys = [...new Set(Object.values(metrics).flatMap((m) => Object.keys(m.percentiles || {})))]
    .sort((a, b) => Number(a) - Number(b));
  const setup = result.setup || {};
  fill(el,
    section('Setup', keyValues([
      ...Object.entries(setup).filter(([, v]) => typeof v !== 'object' || v === null).map(([k, v]) => [k, String(v ?? '—')]),
      ['equity', result.equity_basis === 'closed_trade'
        ? 'closed-trade (trades compounded in exit order)' : (result.equity_basis || '—')],
      ['P(loss)', result.probability_of_loss_reason
        ? `not computed: ${result.probability_of_loss_reason}` : pct((result.probability_of_loss ?? NaN) * 100)],
      [`P(drawdown ≥ ${num(result.ruin_drawdown, 0)} %)`, pct((result.probability_of_ruin ?? NaN) * 100)],
    ], 'setup')),
    section('Fan chart', h('p', { class: 'muted' }, fan.unit || ''), fanBox),
    section('Percentiles', table([
      { title: 'metric', cell: ([k]) => k },
      { title: 'original', cell: ([, m]) => num(m.original, 3), num: true },
      { title: 'rank %', cell: ([, m]) => num(m.original_percentile_rank, 1), num: true },
      ...(result.equity_basis === 'closed_trade'
        ? [{ title: 'Jesse (mark-to-market)', cell: ([, m]) => num(m.original_mark_to_market, 3), num: true }] : []),
      { title: 'mean', cell: ([, m]) => num(m.mean, 3), num: true },
      { title: 'std', cell: ([, m]) => num(m.std, 3), num: true },
      ...percentileKeys.map((p) => ({ title: `p${p}`, cell: ([, m]) => num(m.percentiles?.[p], 3), num: true })),
      { title: '90 % interval', cell: ([, m]) => (m.interval_90 ? `${num(m.interval_90[0], 2)} … ${num(m.interval_90[1], 2)}` : '—') },
    ], Object.entries(metrics), { testid: 'percentiles', rowAttrs: ([k]) => ({ 'data-metric': k }) })),
    section('Total return over the scenarios (%)', histogramBox));
  const bands = fan.bands || {};
  const band = (lo, hi, name, opacity) => (bands[lo] && bands[hi]
    ? [{ name, lower: bands[lo], upper: bands[hi], color: COLORS[0], opacity }] : []);
  svgChart(fanBox, {
    x: fan.x || [],
    bands: [...band('5', '95', 'p5–p95', 0.18), ...band('25', '75', 'p25–p75', 0.35)],
    lines: [
      ...(bands['50'] ? [{ name: 'median', values: bands['50'], color: COLORS[0] }] : []),
      ...(fan.original ? [{ name: 'original', values: fan.original, color: COLORS[1] }] : []),
    ],
    xLabel: fan.x_label || '',
    yLabel: 'equity ÷ start',
  });
  const returns = (result.distribution?.total_return || []).filter(Number.isFinite);
  if (returns.length) {
    const lo = Math.min(...returns);
    const hi = Math.max(...returns);
    const n = Math.min(20, Math.max(1, Math.ceil(Math.sqrt(returns.length))));
    const width = (hi - lo) / n || 1;
    const counts = new Array(n).fill(0);
    for (const r of returns) counts[Math.min(n - 1, Math.floor((r - lo) / width))] += 1;
    bars(histogramBox, counts.map((c, i) => ({ label: `${num(lo + i * width, 1)}…${num(lo + (i + 1) * width, 1)}`, value: c })), { format: (v) => num(v, 0) });
  } else {
    histogramBox.replaceWith(h('p', { class: 'muted' }, 'no per-scenario returns'));
  }
}
