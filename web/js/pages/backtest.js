// A backtest's result: Jesse's metrics, the equity and drawdown curves, the
// trades, and a candlestick chart of the traded range (the stored 1m candles,
// read as CSV and grouped to the route's timeframe) with entries and exits marked.

import { api, enc } from '../api.js';
import { h, fill, table, keyValues, section, num, pct, signed, when, day } from '../dom.js';
import { timeChart, chartBox, COLORS } from '../charts.js';

const HEADLINE = ['net_profit_percentage', 'net_profit', 'total', 'win_rate', 'sharpe_ratio', 'sortino_ratio',
  'calmar_ratio', 'omega_ratio', 'max_drawdown', 'annual_return', 'total_winning_trades', 'total_losing_trades',
  'longs_percentage', 'shorts_percentage', 'fee', 'starting_balance', 'finishing_balance', 'ratio_avg_win_loss',
  'expectancy_percentage', 'average_holding_period', 'largest_winning_trade', 'largest_losing_trade'];

const MINUTES = { m: 1, h: 60, D: 1440, W: 10080, M: 43200 };

/** '4h' → 240 (minutes). */
export function timeframeMinutes(tf) {
  const m = /^(\d+)([mhDWM])$/.exec(tf || '');
  return m ? Number(m[1]) * MINUTES[m[2]] : 60;
}

/** Parses the CSV export into 1m candles, then groups them into `minutes`-wide bars (times in seconds). */
export function candlesFromCsv(csv, minutes) {
  const width = minutes * 60000;
  const bars = [];
  let bar = null;
  const lines = csv.split('\n');
  for (let i = 1; i < lines.length; i += 1) {
    const line = lines[i];
    if (!line) continue;
    const [ts, open, high, low, close] = line.split(',');
    const t = Number(ts);
    const bucket = Math.floor(t / width) * width;
    const o = Number(open);
    const hi = Number(high);
    const lo = Number(low);
    const c = Number(close);
    if (bar && bar.bucket === bucket) {
      if (hi > bar.high) bar.high = hi;
      if (lo < bar.low) bar.low = lo;
      bar.close = c;
    } else {
      bar = { bucket, time: bucket / 1000, open: o, high: hi, low: lo, close: c };
      bars.push(bar);
    }
  }
  return bars.map(({ time, open, high, low, close }) => ({ time, open, high, low, close }));
}

/** The result's equity curve: [{name, points: [{time (ms), date, value}]}] → the Portfolio points, in seconds for the chart. */
export function portfolio(curve) {
  if (!Array.isArray(curve) || !curve.length) return [];
  const series = curve.find((c) => c.name === 'Portfolio') || curve[0];
  return (series.points || []).filter((p) => Number.isFinite(p.value)).map((p) => ({ time: p.time / 1000, value: p.value }));
}

/** Drawdown in percent below the running peak. */
export function drawdown(points) {
  let peak = -Infinity;
  return points.map((p) => {
    peak = Math.max(peak, p.value);
    return { time: p.time, value: peak > 0 ? (p.value / peak - 1) * 100 : 0 };
  });
}

function tradeTime(value) {
  // Trade times are integer ms since the epoch (with an `*_iso` sibling).
  return typeof value === 'number' ? value : Date.parse(value);
}

const MAX_BARS = 4000;

async function candleChart(ctx, box, note, plan, trades) {
  const route = plan.routes?.[0];
  if (!route) {
    note.textContent = 'no route in the plan';
    return;
  }
  const exchange = plan.exchange;
  let minutes = timeframeMinutes(route.timeframe);
  const span = (plan.end_ms - plan.start_ms) / 60000;
  // Keep the chart readable: coarser bars for long ranges.
  while (span / minutes > MAX_BARS) minutes *= 2;
  const start = day(plan.start_ms);
  const endDay = new Date(plan.end_ms - 1);
  const end = new Date(Date.UTC(endDay.getUTCFullYear(), endDay.getUTCMonth(), endDay.getUTCDate() + 1)).toISOString().slice(0, 10);
  const csv = await api(`/v1/candles/${enc(exchange)}/${enc(route.symbol)}/csv?start_date=${start}&end_date=${end}`, { text: true });
  if (!ctx.alive) return;
  const bars = candlesFromCsv(csv, minutes).filter((b) => b.time * 1000 >= plan.start_ms && b.time * 1000 < plan.end_ms);
  const width = minutes * 60;
  // A position Jesse closes at the end of the range closes at the last bar's end:
  // marked on the last bar.
  const last = bars.length ? bars[bars.length - 1].time : 0;
  const at = (ms) => Math.min(Math.floor(ms / 1000 / width) * width, last);
  const markers = [];
  for (const t of trades) {
    if (t.symbol && t.symbol !== route.symbol) continue;
    const long = t.type === 'long';
    if (t.opened_at) {
      markers.push({
        time: at(tradeTime(t.opened_at)), position: long ? 'belowBar' : 'aboveBar', color: long ? '#26a69a' : '#ef5350',
        shape: long ? 'arrowUp' : 'arrowDown', text: `${long ? 'long' : 'short'} @ ${num(t.entry_price)}`,
      });
    }
    if (t.closed_at) {
      markers.push({
        time: at(tradeTime(t.closed_at)), position: long ? 'aboveBar' : 'belowBar', color: '#f0b429',
        shape: 'circle', text: `exit @ ${num(t.exit_price)}`,
      });
    }
  }
  const times = new Set(bars.map((b) => b.time));
  const shown = markers.filter((m) => times.has(m.time));
  note.textContent = `${route.symbol} on ${exchange}, ${bars.length} bars of ${minutes} m, ${shown.filter((m) => m.shape !== 'circle').length} entries and ${shown.filter((m) => m.shape === 'circle').length} exits marked`;
  ctx.onDispose(timeChart(box, [{ type: 'candles', data: bars, markers: shown, title: route.symbol }]));
}

export async function render(ctx, el, job) {
  const result = await api(`/v1/jobs/${enc(job.job_id)}/result?include_trades=true&trades_limit=10000`);
  if (!ctx.alive) return;
  const metrics = result.metrics || result.training || {};
  const plan = result.provenance?.params || result.provenance?.plan || {};
  const trades = result.trades || [];
  const known = HEADLINE.filter((k) => k in metrics);
  const rest = Object.keys(metrics).filter((k) => !known.includes(k));
  const equityBox = chartBox('equity');
  const drawdownBox = chartBox('drawdown', { small: true });
  const candleBox = chartBox('candles');
  const candleNote = h('p', { class: 'muted', 'data-testid': 'candles-note' }, 'loading candles…');
  const route = plan.routes?.[0];
  fill(el,
    section('Setup', keyValues([
      ['strategy', route?.strategy ?? '—'],
      ['exchange', plan.exchange ?? '—'],
      ['symbol', route?.symbol ?? '—'],
      ['timeframe', route?.timeframe ?? '—'],
      ['from', plan.start_ms ? day(plan.start_ms) : '—'],
      ['to (excl.)', plan.end_ms ? day(plan.end_ms) : '—'],
      ['hyperparameters', plan.hyperparameters ? JSON.stringify(plan.hyperparameters) : 'defaults'],
      ['Jesse', result.provenance?.jesse_version ?? '—'],
    ])),
    section('Metrics', keyValues([...known, ...rest].map((k) => [k, typeof metrics[k] === 'number' ? signed(metrics[k], num(metrics[k])) : String(metrics[k] ?? '—')]), 'metrics')),
    section('Equity', equityBox, h('h3', {}, 'Drawdown (%)'), drawdownBox),
    section('Price and trades', candleNote, candleBox),
    section(`Trades (${result.trades_total ?? trades.length})`, h('div', { class: 'scroll' }, table([
      { title: '#', cell: (t) => t._i, num: true },
      { title: 'type', cell: (t) => t.type },
      { title: 'symbol', cell: (t) => t.symbol },
      { title: 'opened (UTC)', cell: (t) => when(t.opened_at) },
      { title: 'closed (UTC)', cell: (t) => when(t.closed_at) },
      { title: 'entry', cell: (t) => num(t.entry_price), num: true },
      { title: 'exit', cell: (t) => num(t.exit_price), num: true },
      { title: 'qty', cell: (t) => num(t.qty, 4), num: true },
      { title: 'fee', cell: (t) => num(t.fee), num: true },
      { title: 'PNL', cell: (t) => signed(t.PNL), num: true },
      { title: 'PNL %', cell: (t) => signed(t.PNL_percentage, pct(t.PNL_percentage)), num: true },
      { title: 'held', cell: (t) => (t.holding_period ? `${num(t.holding_period / 3600, 1)} h` : '—'), num: true },
    ], trades.map((t, i) => ({ ...t, _i: i + 1 })), { testid: 'trades-table', empty: 'no closed trades' }))));
  const points = portfolio(result.equity_curve);
  if (points.length) {
    ctx.onDispose(timeChart(equityBox, [{ type: 'area', data: points, title: 'equity', color: COLORS[0] }]));
    ctx.onDispose(timeChart(drawdownBox, [{ type: 'area', data: drawdown(points), title: 'drawdown %', color: COLORS[3], invert: true }]));
  } else {
    equityBox.replaceWith(h('p', { class: 'muted' }, 'no equity curve (Jesse keeps none without trades)'));
    drawdownBox.remove();
  }
  if (plan.routes) await candleChart(ctx, candleBox, candleNote, plan, trades);
  else candleNote.textContent = 'no plan in the provenance';
}
