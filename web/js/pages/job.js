// One job: its status, progress, stage and error, live until it ends; a
// parent's children; then its result, drawn by the page of its kind.

import { api, enc, TERMINAL } from '../api.js';
import { h, fill, badge, progressBar, when, duration, keyValues, section, num } from '../dom.js';
import { cancelButton, jobsTable } from './jobs.js';
import * as backtest from './backtest.js';
import * as batch from './batch.js';
import * as optimization from './optimization.js';
import * as walkForward from './walk_forward.js';
import * as monteCarlo from './monte_carlo.js';
import * as pipeline from './pipeline.js';

const PAGES = {
  backtest,
  backtest_batch: batch,
  optimization,
  walk_forward: walkForward,
  monte_carlo: monteCarlo,
  pipeline,
};

const PARENTS = new Set(['backtest_batch', 'batch', 'optimization', 'walk_forward', 'monte_carlo', 'significance_test', 'pairs_screen', 'pairs_backtest', 'pipeline']);

function header(ctx, job, refresh) {
  const counts = job.children
    ? Object.entries(job.children).map(([k, v]) => `${k} ${v}`).join(' · ')
    : null;
  return h('div', { class: 'panel', 'data-testid': 'job-header', 'data-job-id': job.job_id, 'data-status': job.status },
    h('div', { class: 'filters' },
      badge(job.status),
      h('span', { 'data-field': 'progress', 'data-value': job.progress }, progressBar(job.progress), ` ${Math.round((job.progress || 0) * 100)} %`),
      job.stage ? h('span', { class: 'muted', 'data-field': 'stage' }, job.stage) : null,
      job.eta_seconds !== undefined && job.eta_seconds !== null ? h('span', { class: 'muted' }, `ETA ${num(job.eta_seconds, 0)} s`) : null,
      cancelButton(ctx, job, refresh)),
    keyValues([
      ['kind', job.kind],
      ['created', when(job.created_at)],
      ['started', when(job.started_at)],
      ['finished', when(job.finished_at)],
      ['took', duration(job.started_at, job.finished_at)],
      ['attempts', job.attempts],
      ...(job.parent_id ? [['parent', h('a', { href: `#/jobs/${job.parent_id}` }, job.parent_id)]] : []),
      ...(counts ? [['children', counts]] : []),
      ...(job.best_so_far ? [['best so far', num(job.best_so_far.value ?? job.best_so_far.values?.[0], 4)]] : []),
    ]),
    job.error ? h('p', { class: 'neg', 'data-testid': 'job-error' }, `${job.error.code}: ${job.error.message}`) : null);
}

export function render(ctx, el, { id }) {
  const top = h('div');
  const kids = h('div');
  const body = h('div', { 'data-testid': 'job-result' });
  fill(el, h('h1', {}, 'Job ', h('span', { class: 'mono' }, id)), top, kids, body);
  let rendered = false;
  const refresh = async () => {
    const job = await api(`/v1/jobs/${enc(id)}`);
    if (!ctx.alive) return false;
    el.querySelector('h1').replaceChildren(`${job.kind.replace(/_/g, ' ')} `, h('span', { class: 'mono' }, id));
    fill(top, header(ctx, job, refresh));
    if (PARENTS.has(job.kind) && !TERMINAL.has(job.status)) {
      const page = await api(`/v1/jobs/${enc(id)}/children?limit=50`);
      fill(kids, section('Children', jobsTable(ctx, page.jobs, refresh, 'children-table')));
    } else if (TERMINAL.has(job.status)) {
      kids.replaceChildren();
    }
    if (job.status === 'succeeded' && !rendered) {
      rendered = true;
      const page = PAGES[job.kind];
      if (page) {
        await page.render(ctx, body, job);
      } else {
        const result = await api(`/v1/jobs/${enc(id)}/result`);
        fill(body, section('Result', h('pre', { class: 'mono' }, JSON.stringify(result, null, 2))));
      }
      body.dataset.ready = 'true';
    }
    return !TERMINAL.has(job.status);
  };
  ctx.poll(refresh, 1000);
}
