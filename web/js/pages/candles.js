// Candles: every stored series with a coverage timeline (its gaps in red),
// the import jobs with their progress, and the import schedules. Polls every
// two seconds; a series' gaps are read again only when the series changed.

import { api, enc } from '../api.js';
import { h, fill, table, section, num, when, day, s, badge, progressBar, duration } from '../dom.js';

function timeline(series, report) {
  const W = 1000;
  const H = 28;
  const span = Math.max(1, report.end - report.start);
  const x = (ms) => ((ms - report.start) / span) * W;
  const svg = s('svg', {
    class: 'timeline', viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img',
    'data-gaps': report.gaps.length,
  }, s('rect', { class: 'covered', x: 0, y: 4, width: W, height: H - 8, fill: '#26a69a' }));
  for (const gap of report.gaps) {
    svg.append(s('rect', {
      class: 'gap', x: x(gap.start), y: 0, width: Math.max(1.5, x(gap.end) - x(gap.start)), height: H, fill: '#ef5350',
    }, s('title', {}, `missing ${when(gap.start)} → ${when(gap.end)} (${num(gap.minutes)} minutes)`)));
  }
  return h('div', {},
    svg,
    h('div', { class: 'legend' },
      h('span', {}, day(report.start)),
      h('span', {}, `${num(report.coverage_pct, 3)} % covered, ${report.gaps.length} gap(s), ${num(report.missing_minutes)} minutes missing`),
      h('span', { style: 'margin-left:auto' }, day(report.end))));
}

export function render(ctx, el) {
  const seriesBox = h('div', { 'data-testid': 'series' });
  const importsBox = h('div');
  const schedulesBox = h('div');
  fill(el, h('h1', {}, 'Candles'),
    section('Stored series', seriesBox),
    section('Imports', importsBox),
    section('Schedules', schedulesBox));
  const reports = new Map();
  ctx.poll(async () => {
    const [series, imports, schedules] = await Promise.all([
      api('/v1/candles'),
      api('/v1/jobs?kind=candle_import&limit=50'),
      api('/v1/schedules'),
    ]);
    if (!ctx.alive) return;
    for (const one of series.series) {
      const key = `${one.exchange}\u0000${one.symbol}`;
      const version = `${one.first}/${one.last}/${one.rows}`;
      if (reports.get(key)?.version !== version) {
        const report = await api(`/v1/candles/${enc(one.exchange)}/${enc(one.symbol)}/gaps`);
        reports.set(key, { version, report });
      }
    }
    if (!ctx.alive) return;
    fill(seriesBox, series.series.length ? series.series.map((one) => h('div', {
      class: 'panel', 'data-series': `${one.exchange} ${one.symbol}`,
    },
    h('strong', {}, `${one.exchange} · ${one.symbol}`),
    one.source ? h('span', { class: one.source === 'synthetic' ? 'badge failed' : 'badge', 'data-field': 'source', style: 'margin-left:8px' }, one.source) : null,
    one.note ? h('p', { class: 'muted', 'data-field': 'note' }, one.note) : null,
    h('span', { class: 'muted' }, `  ${num(one.rows)} rows (${one.timeframe}), ${when(one.first)} → ${when(one.last)} UTC, ${num(one.gaps)} gap(s), last import ${when(one.last_import_at)}`),
    timeline(one, reports.get(`${one.exchange}\u0000${one.symbol}`).report))) : h('p', { class: 'muted' }, 'no candles stored'));
    fill(importsBox, table([
      { title: 'job', cell: (j) => h('a', { href: `#/jobs/${j.job_id}`, class: 'mono' }, j.job_id) },
      { title: 'status', cell: (j) => badge(j.status) },
      { title: 'progress', cell: (j) => h('span', { 'data-field': 'progress' }, progressBar(j.progress), ` ${Math.round((j.progress || 0) * 100)} %`) },
      { title: 'stage', cell: (j) => j.stage || '', wrap: true },
      { title: 'created (UTC)', cell: (j) => when(j.created_at) },
      { title: 'took', cell: (j) => duration(j.started_at, j.finished_at) },
      { title: 'result', cell: (j) => (j.error ? `${j.error.code}: ${j.error.message}` : j.summary ? JSON.stringify(j.summary).slice(0, 160) : ''), wrap: true },
    ], imports.jobs, { testid: 'imports-table', rowAttrs: (j) => ({ 'data-job-id': j.job_id }), empty: 'no imports yet' }));
    fill(schedulesBox, table([
      { title: 'exchange', cell: (r) => r.exchange },
      { title: 'symbol', cell: (r) => r.symbol },
      { title: 'cron (UTC)', cell: (r) => h('code', {}, r.cron) },
      { title: 'from', cell: (r) => r.start_date || '—' },
      { title: 'next run', cell: (r) => when(r.next_run_at) },
      { title: 'last fired', cell: (r) => when(r.last_fired_at) },
    ], schedules.schedules, { testid: 'schedules-table', empty: 'no schedules' }));
  }, 2000);
}
