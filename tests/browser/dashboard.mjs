// The dashboard in headless Chromium against a real service (started by
// tests/tests/dashboard.rs, which ran the jobs named in the config): every page
// renders the service's data, a backtest submitted through the API appears on
// the Jobs page and completes there, cancel works, charts draw, and no page
// logs an error. Screenshots go to the artifacts directory.

import { config, launch, watch, screenshot, chartDrew, api, assert, log } from './lib.mjs';

const { base, jobs } = config;
const LONG = { timeout: 240000 };

async function show(page, hash) {
  await page.goto(`${base}/#${hash}`);
}

async function resultReady(page, id) {
  await page.waitForSelector(`[data-testid=job-header][data-job-id="${id}"][data-status=succeeded]`, LONG);
  await page.waitForSelector('[data-testid=job-result][data-ready=true]', LONG);
}

async function rows(page, testid) {
  return page.$$eval(`[data-testid="${testid}"] tbody tr`, (trs) => trs.filter((tr) => !tr.querySelector('td.muted[colspan]')).length);
}

const { context, close } = await launch();
const page = await context.newPage();
const errors = watch(page);
try {
  // ---- Jobs: a backtest submitted through the API appears and completes.
  await show(page, '/jobs');
  await page.waitForSelector('[data-testid=jobs-table]');
  const submitted = await api('/v1/backtests', { method: 'POST', body: JSON.stringify(config.live_backtest) });
  assert(submitted.status === 202, `submit: ${JSON.stringify(submitted)}`);
  const liveId = submitted.body.job_id;
  log('live backtest', liveId);
  await page.waitForSelector(`[data-testid=jobs-table] tr[data-job-id="${liveId}"]`, { timeout: 30000 });
  await page.waitForSelector(`[data-testid=jobs-table] tr[data-job-id="${liveId}"][data-status=succeeded]`, LONG);
  const summary = await page.$eval(`tr[data-job-id="${liveId}"]`, (tr) => tr.textContent);
  assert(summary.includes('backtest'), `row shows the kind: ${summary}`);
  for (const id of Object.values(jobs)) {
    assert(await page.$(`tr[data-job-id="${id}"]`), `job ${id} is listed on the Jobs page`);
  }
  await screenshot(page, 'jobs');

  // Filters: kind (kept in the URL).
  await page.selectOption('select[data-filter=kind]', 'backtest_batch');
  await page.waitForFunction(() => location.hash.includes('kind=backtest_batch'));
  await page.waitForFunction(() => {
    const trs = [...document.querySelectorAll('[data-testid=jobs-table] tbody tr[data-job-id]')];
    return trs.length > 0 && trs.every((tr) => tr.dataset.kind === 'backtest_batch');
  });
  await page.selectOption('select[data-filter=status]', 'succeeded');
  await page.waitForSelector(`tr[data-job-id="${jobs.batch}"][data-status=succeeded]`);
  await screenshot(page, 'jobs-filtered');

  // ---- Backtest result.
  await show(page, `/jobs/${jobs.backtest}`);
  await resultReady(page, jobs.backtest);
  const result = (await api(`/v1/jobs/${jobs.backtest}/result?include_trades=true`)).body;
  for (const metric of ['net_profit_percentage', 'sharpe_ratio', 'total', 'win_rate', 'max_drawdown']) {
    const text = await page.$eval(`[data-testid=metrics] [data-metric="${metric}"] .v`, (el) => el.textContent);
    assert(text && text !== '—' || result.metrics[metric] === null, `metric ${metric} shown: ${text}`);
  }
  assert(result.trades_total > 0, 'the backtest traded');
  assert(await rows(page, 'trades-table') === result.trades_total, `${result.trades_total} trades listed`);
  assert(await chartDrew(page, 'equity', 1) === 1, 'equity chart: one series');
  assert(await chartDrew(page, 'drawdown', 1) === 1, 'drawdown chart: one series');
  assert(await chartDrew(page, 'candles', 1) === 1, 'candlestick chart: one series');
  const markers = Number(await page.$eval('[data-chart=candles]', (el) => el.dataset.markers));
  assert(markers === 2 * result.trades_total, `entries and exits marked: ${markers} markers for ${result.trades_total} trades`);
  const attribution = await page.$$eval('a[href^="https://www.tradingview.com"]', (as) => as.length);
  assert(attribution >= 1, 'the TradingView attribution is shown');
  await screenshot(page, 'backtest');

  // ---- Batch leaderboard.
  await show(page, `/jobs/${jobs.batch}`);
  await resultReady(page, jobs.batch);
  const batch = (await api(`/v1/jobs/${jobs.batch}/result`)).body;
  assert(await rows(page, 'leaderboard') === batch.total, `batch: ${batch.total} variants listed`);
  const firstRank = await page.$eval('[data-testid=leaderboard] tbody tr', (tr) => tr.dataset.rank);
  assert(firstRank === '1', 'the leaderboard starts at rank 1');
  assert(await chartDrew(page, 'scores', 1) === 1, 'scores drawn');
  await screenshot(page, 'batch');

  // ---- Optimization.
  await show(page, `/jobs/${jobs.optimization}`);
  await resultReady(page, jobs.optimization);
  const study = (await api(`/v1/jobs/${jobs.optimization}/result`)).body;
  assert(await rows(page, 'leaderboard') === study.leaderboard.length, 'optimization leaderboard rows');
  assert(await chartDrew(page, 'convergence', 2) === 2, 'convergence: trial values and best so far');
  assert(study.heatmap, `the study has a heatmap: ${JSON.stringify(study.heatmap)}`);
  await chartDrew(page, 'heatmap', 1);
  const cells = Number(await page.$eval('[data-chart=heatmap]', (el) => el.dataset.cells));
  const expectedCells = study.heatmap.best.flat().filter((v) => v !== null).length;
  assert(cells === expectedCells && cells > 0, `heatmap cells ${cells} = ${expectedCells}`);
  const pboText = await page.$eval('[data-testid=overfitting] [data-metric="PBO (CSCV)"] .v', (el) => el.textContent);
  const pbo = study.overfitting.pbo.pbo;
  assert(pbo === null ? pboText.includes('—') : pboText.length > 0 && !pboText.startsWith('—'), `PBO shown: ${pboText}`);
  const dsrText = await page.$eval('[data-testid=overfitting] [data-metric="deflated Sharpe (DSR)"] .v', (el) => el.textContent);
  assert(dsrText.length > 0, 'DSR shown');
  await screenshot(page, 'optimization');

  // ---- Walk-forward.
  await show(page, `/jobs/${jobs.walk_forward}`);
  await resultReady(page, jobs.walk_forward);
  const wf = (await api(`/v1/jobs/${jobs.walk_forward}/result`)).body;
  assert(await rows(page, 'windows-table') === wf.windows.length, `${wf.windows.length} windows listed`);
  assert(wf.stitched.equity_curve.length > 0, 'the walk-forward has out-of-sample days');
  assert(await chartDrew(page, 'stitched', 1) === 1, 'stitched out-of-sample curve drawn');
  await screenshot(page, 'walk-forward');

  // ---- Monte Carlo.
  await show(page, `/jobs/${jobs.monte_carlo}`);
  await resultReady(page, jobs.monte_carlo);
  const mc = (await api(`/v1/jobs/${jobs.monte_carlo}/result`)).body;
  assert(await chartDrew(page, 'fan', 4) === 4, 'fan: two bands, the median and the original');
  assert(await rows(page, 'percentiles') === Object.keys(mc.metrics).length, 'one percentile row per metric');
  const p50 = await page.$eval('[data-testid=percentiles] tr[data-metric=total_return]', (tr) => tr.textContent);
  assert(p50.length > 0, 'total_return percentiles shown');
  await screenshot(page, 'monte-carlo');

  // ---- Research pipeline: verdict, one row per step, gates, the report.
  await show(page, `/jobs/${jobs.pipeline}`);
  await resultReady(page, jobs.pipeline);
  const pipeline = (await api(`/v1/jobs/${jobs.pipeline}/result`)).body;
  const verdictText = await page.$eval('[data-field=verdict]', (el) => el.textContent);
  assert(verdictText === pipeline.verdict.outcome, `verdict shown: ${verdictText}`);
  assert(await rows(page, 'steps-table') === pipeline.steps.length, `${pipeline.steps.length} steps listed`);
  assert(await rows(page, 'gates-table') === pipeline.gates.length, `${pipeline.gates.length} gates listed`);
  const reportText = await page.$eval('[data-testid=report]', (el) => el.textContent);
  assert(reportText === pipeline.report && reportText.includes(pipeline.steps[0].job_id), 'the report is shown');
  await screenshot(page, 'pipeline');

  // ---- Candles: coverage with the gap the test left, the import, the schedule.
  await show(page, '/candles');
  const series = `[data-series="${config.gappy_series}"]`;
  await page.waitForSelector(`${series} svg.timeline`, { timeout: 30000 });
  const gaps = await page.$$eval(`${series} svg.timeline rect.gap`, (rects) => rects.length);
  assert(gaps === config.gappy_series_gaps, `${config.gappy_series}: ${gaps} gap(s) drawn, ${config.gappy_series_gaps} expected`);
  const source = await page.$eval(`${series} [data-field=source]`, (el) => el.textContent);
  assert(source === 'csv', `${config.gappy_series}: its source is shown (${source})`);
  await page.waitForSelector(`[data-testid=imports-table] tr[data-job-id="${jobs.import}"] .badge.succeeded`, { timeout: 30000 });
  const schedule = await page.$eval('[data-testid=schedules-table] tbody', (tb) => tb.textContent);
  assert(schedule.includes(config.schedule_cron), `schedule listed: ${schedule}`);
  await screenshot(page, 'candles');

  // ---- Strategies: the list, a strategy's hyperparameters, errors at their lines.
  await show(page, '/strategies');
  await page.waitForSelector('[data-testid=strategies-table] tr[data-strategy=SmaCross][data-valid=true]');
  await page.waitForSelector(`[data-testid=strategies-table] tr[data-strategy="${config.broken_strategy}"][data-valid=false]`);
  await screenshot(page, 'strategies');
  await show(page, '/strategies/SmaCross');
  await page.waitForSelector('[data-testid=hyperparameters] tbody tr');
  const hps = await rows(page, 'hyperparameters');
  assert(hps === config.smacross_hyperparameters, `SmaCross: ${hps} hyperparameters listed`);
  await show(page, `/strategies/${config.broken_strategy}`);
  await page.waitForSelector('[data-testid=diag-error]');
  const lines = await page.$$eval('[data-testid=diag-error]', (ds) => ds.map((d) => Number(d.dataset.line)));
  assert(lines.includes(config.broken_line), `an error is shown at line ${config.broken_line}: ${lines}`);
  const marked = await page.$eval(`[data-testid=source] .line[data-line="${config.broken_line}"]`, (el) => el.className);
  assert(marked.includes('error'), 'the line is marked');
  await screenshot(page, 'strategy-errors');
  // A draft checked from the page: the API's static validation, nothing saved.
  await page.fill('[data-testid=draft]', 'class Nope(:\n    pass\n');
  await page.click('[data-action=validate]');
  await page.waitForSelector('[data-testid=draft-result] [data-testid=diag-error]');

  // ---- Cancel from the Jobs page: a long batch, one child at a time.
  const long = await api('/v1/backtests/batch', { method: 'POST', body: JSON.stringify(config.long_batch) });
  assert(long.status === 202, `long batch: ${JSON.stringify(long)}`);
  const longId = long.body.job_id;
  await show(page, '/jobs');
  const cancel = `tr[data-job-id="${longId}"] button[data-action=cancel]`;
  await page.waitForSelector(cancel, { timeout: 30000 });
  await page.click(cancel);
  await page.waitForSelector(`tr[data-job-id="${longId}"][data-status=cancelled]`, LONG);
  const after = (await api(`/v1/jobs/${longId}`)).body;
  assert(after.status === 'cancelled', `the batch was cancelled: ${JSON.stringify(after)}`);
  await screenshot(page, 'jobs-cancelled');

  assert(errors.length === 0, `the pages logged errors:\n${errors.join('\n')}`);
  log('ok');
} catch (error) {
  await screenshot(page, 'failure').catch(() => {});
  console.error(`errors logged by the page:\n${errors.join('\n')}`);
  throw error;
} finally {
  await close();
}
