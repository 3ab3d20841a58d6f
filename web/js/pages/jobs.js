// Jobs: the newest jobs with status and progress, filtered by kind and status
// (kept in the URL), a cancel button on queued and running jobs, and a form to
// start a backtest. Polls every second.

import { api, enc } from '../api.js';
import { h, fill, table, badge, progressBar, when, duration, num, compact } from '../dom.js';

export const KINDS = ['backtest', 'backtest_batch', 'optimization', 'optimization_trial', 'walk_forward',
  'monte_carlo', 'significance_test', 'candle_import', 'strategy_validation'];
const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];

/** The headline of a job's summary, whatever its kind. */
// What a job is about: strategy, market, timeframe, range and tags, from its `subject`.
function subjectText(job) {
  const sub = job.subject || {};
  const range = sub.range ? `${(sub.range.start_date || sub.range.start_iso || '').slice(0, 10)} → ${(sub.range.end_date || sub.range.end_iso || '').slice(0, 10)}` : '';
  const parts = [
    sub.strategy || (sub.strategies || []).join(', '),
    sub.symbol || (sub.symbols || []).join(', '),
    sub.timeframe || (sub.timeframes || []).join(', '),
    range,
    ...(job.tags || []).map((t) => `#${t}`),
  ];
  return parts.filter((p) => p).join(' · ');
}

export function summaryText(job) {
  const sum = job.summary;
  if (job.error) return `${job.error.code}: ${job.error.message}`;
  if (!sum || typeof sum !== 'object') return job.stage || '';
  const picks = ['net_profit_percentage', 'sharpe_ratio', 'total', 'best_value', 'verdict', 'probability_of_loss',
    'inserted', 'valid', 'total_trades', 'max_drawdown'];
  const parts = [];
  for (const key of picks) {
    if (key in sum && parts.length < 3) {
      const v = sum[key];
      parts.push(`${key}=${typeof v === 'number' ? num(v) : typeof v === 'object' ? JSON.stringify(v) : v}`);
    }
  }
  return parts.length ? parts.join(' ') : compact(sum).slice(0, 120);
}

export function cancelButton(ctx, job, after) {
  if (!(job.status === 'queued' || job.status === 'running')) return null;
  if (job.cancel_requested) return h('span', { class: 'muted' }, 'cancelling…');
  return h('button', {
    type: 'button',
    class: 'danger',
    'data-action': 'cancel',
    onclick: (event) => {
      event.currentTarget.disabled = true;
      ctx.once(async () => {
        await api(`/v1/jobs/${enc(job.job_id)}/cancel`, { method: 'POST', body: {} });
        if (after) await after();
      });
    },
  }, 'cancel');
}

export function jobsTable(ctx, jobs, refresh, testid = 'jobs-table') {
  return table([
    { title: 'job', cell: (j) => h('a', { href: `#/jobs/${j.job_id}`, class: 'mono' }, j.job_id) },
    { title: 'kind', cell: (j) => j.kind },
    { title: 'what', cell: (j) => subjectText(j), wrap: true },
    { title: 'status', cell: (j) => badge(j.status) },
    {
      title: 'progress',
      cell: (j) => h('span', { 'data-field': 'progress', 'data-value': j.progress }, progressBar(j.progress), ` ${Math.round((j.progress || 0) * 100)} %`),
    },
    { title: 'stage', cell: (j) => j.stage || '', wrap: true },
    { title: 'created (UTC)', cell: (j) => when(j.created_at) },
    { title: 'took', cell: (j) => duration(j.started_at, j.finished_at) },
    { title: 'summary', cell: (j) => summaryText(j), wrap: true },
    { title: '', cell: (j) => cancelButton(ctx, j, refresh) },
  ], jobs, { testid, rowAttrs: (j) => ({ 'data-job-id': j.job_id, 'data-status': j.status, 'data-kind': j.kind }), empty: 'no jobs' });
}

function backtestForm(ctx) {
  const form = h('form', { class: 'filters', 'data-testid': 'backtest-form' },
    h('strong', {}, 'Start a backtest:'),
    h('input', { name: 'strategy', placeholder: 'strategy', value: 'SmaCross', required: true, size: 12 }),
    h('input', { name: 'exchange', placeholder: 'exchange', value: 'Binance Perpetual Futures', required: true, size: 22 }),
    h('input', { name: 'symbol', placeholder: 'symbol', value: 'BTC-USDT', required: true, size: 10 }),
    h('input', { name: 'timeframe', placeholder: 'timeframe', value: '1h', required: true, size: 4 }),
    h('input', { name: 'start_date', type: 'date', required: true }),
    h('input', { name: 'end_date', type: 'date', required: true }),
    h('button', { type: 'submit' }, 'submit'),
    h('span', { class: 'muted', 'data-testid': 'backtest-form-result' }));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    ctx.once(async () => {
      const accepted = await api('/v1/backtests', { method: 'POST', body: { ...data, include_trades: true } });
      location.hash = `#/jobs/${accepted.job_id}`;
    });
  });
  return form;
}

export function render(ctx, el, { params }) {
  const kind = params.get('kind') || '';
  const status = params.get('status') || '';
  const children = params.get('children') === '1';
  const setFilter = (key, value) => {
    const next = new URLSearchParams(params);
    if (value) next.set(key, value); else next.delete(key);
    location.hash = `#/jobs${next.toString() ? `?${next}` : ''}`;
  };
  const select = (name, options, value) => h('select', {
    name, 'data-filter': name, onchange: (e) => setFilter(name, e.target.value),
  }, h('option', { value: '' }, `any ${name}`), options.map((o) => h('option', { value: o, selected: o === value }, o)));
  const list = h('div', { class: 'scroll', style: 'max-height:none' });
  const count = h('span', { class: 'muted' });
  fill(el,
    h('h1', {}, 'Jobs'),
    h('div', { class: 'filters' },
      select('kind', KINDS, kind),
      select('status', STATUSES, status),
      h('label', {}, h('input', {
        type: 'checkbox', 'data-filter': 'children', checked: children, onchange: (e) => setFilter('children', e.target.checked ? '1' : ''),
      }), ' show child jobs (batch variants, trials)'),
      count),
    list,
    backtestForm(ctx));
  const query = new URLSearchParams({ limit: '100' });
  if (kind) query.set('kind', kind);
  if (status) query.set('status', status);
  const refresh = async () => {
    const page = await api(`/v1/jobs?${query}`);
    if (!ctx.alive) return;
    const shown = page.jobs.filter((j) => children || kind || !j.parent_id);
    count.textContent = `${shown.length} shown${page.next_cursor ? ' (newest 100)' : ''}`;
    fill(list, jobsTable(ctx, shown, refresh));
  };
  ctx.poll(refresh, 1000);
}
