// Charts drawn in the page: time series with TradingView's lightweight-charts
// (vendored, Apache-2.0, attribution logo kept on), and plain SVG for charts
// whose x axis is not time (convergence, Monte Carlo fan, heatmap, bars).
// Every chart container gets `data-series` (series drawn) and `data-points`.

import {
  createChart, LineSeries, AreaSeries, CandlestickSeries, HistogramSeries, createSeriesMarkers,
} from '../vendor/lightweight-charts.standalone.production.mjs';
import { h, s, num } from './dom.js';

export const COLORS = ['#4ea1ff', '#f0b429', '#26a69a', '#ef5350', '#ab7df8', '#ff8a65', '#90a4ae'];

const THEME = {
  layout: { background: { color: 'transparent' }, textColor: '#8a96a3', attributionLogo: true },
  grid: { vertLines: { color: '#1e252d' }, horzLines: { color: '#1e252d' } },
  rightPriceScale: { borderColor: '#2a323c' },
  timeScale: { borderColor: '#2a323c', timeVisible: true, secondsVisible: false },
  autoSize: true,
};

/** Sorted by time, one point per time (the last wins): what lightweight-charts accepts. */
export function byTime(points) {
  const sorted = points.filter((p) => Number.isFinite(p.time)).sort((a, b) => a.time - b.time);
  const out = [];
  for (const p of sorted) {
    if (out.length && out[out.length - 1].time === p.time) out[out.length - 1] = p;
    else out.push(p);
  }
  return out;
}

/**
 * A time chart in `el`: series [{type: line|area|histogram|candles, data, color, title, markers}],
 * times in seconds. Returns a dispose function.
 */
export function timeChart(el, series, options = {}) {
  const chart = createChart(el, { ...THEME, ...options });
  let points = 0;
  let drawn = 0;
  for (const [i, spec] of series.entries()) {
    const color = spec.color || COLORS[i % COLORS.length];
    let handle;
    const common = { title: spec.title || '', priceLineVisible: false, lastValueVisible: true };
    if (spec.type === 'candles') {
      handle = chart.addSeries(CandlestickSeries, {
        ...common, upColor: '#26a69a', downColor: '#ef5350', wickUpColor: '#26a69a', wickDownColor: '#ef5350', borderVisible: false,
      });
    } else if (spec.type === 'area') {
      handle = chart.addSeries(AreaSeries, {
        ...common, lineColor: color, topColor: `${color}55`, bottomColor: `${color}08`, lineWidth: 2,
        ...(spec.invert ? { invertFilledArea: true } : {}),
      });
    } else if (spec.type === 'histogram') {
      handle = chart.addSeries(HistogramSeries, { ...common, color });
    } else {
      handle = chart.addSeries(LineSeries, { ...common, color, lineWidth: 2 });
    }
    const data = byTime(spec.data);
    handle.setData(data);
    if (spec.markers && spec.markers.length) {
      createSeriesMarkers(handle, [...spec.markers].sort((a, b) => a.time - b.time));
    }
    points += data.length;
    if (data.length) drawn += 1;
  }
  chart.timeScale().fitContent();
  el.dataset.series = String(drawn);
  el.dataset.points = String(points);
  el.dataset.markers = String(series.reduce((n, sp) => n + (sp.markers ? sp.markers.length : 0), 0));
  return () => chart.remove();
}

function extent(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v === null || v === undefined || !Number.isFinite(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo === Infinity) return [0, 1];
  if (lo === hi) return [lo - (Math.abs(lo) || 1) * 0.05, hi + (Math.abs(hi) || 1) * 0.05];
  const pad = (hi - lo) * 0.04;
  return [lo - pad, hi + pad];
}

function ticks(lo, hi, count = 5) {
  const step = (hi - lo) / count;
  return Array.from({ length: count + 1 }, (_, i) => lo + step * i);
}

/**
 * An SVG chart over a numeric x: `lines` [{name, values (per x, null = gap), color, dots?, dash?}]
 * and `bands` [{name, lower, upper, color}]. Sets data-series to lines + bands drawn.
 */
export function svgChart(el, { x, lines = [], bands = [], xLabel = '', yLabel = '' }) {
  const W = 800;
  const H = 280;
  const m = { l: 64, r: 12, t: 10, b: 34 };
  const all = [...lines.flatMap((l) => l.values), ...bands.flatMap((b) => [...b.lower, ...b.upper])];
  const [ylo, yhi] = extent(all);
  const [xlo, xhi] = x.length > 1 ? [Math.min(...x), Math.max(...x)] : [(x[0] ?? 0) - 1, (x[0] ?? 0) + 1];
  const px = (v) => m.l + ((v - xlo) / (xhi - xlo || 1)) * (W - m.l - m.r);
  const py = (v) => H - m.b - ((v - ylo) / (yhi - ylo || 1)) * (H - m.t - m.b);
  const svg = s('svg', { class: 'plot', viewBox: `0 0 ${W} ${H}`, role: 'img', style: 'width:100%;height:auto;max-height:520px' });
  for (const t of ticks(ylo, yhi)) {
    svg.append(s('line', { x1: m.l, x2: W - m.r, y1: py(t), y2: py(t), stroke: '#1e252d' }));
    svg.append(s('text', { x: m.l - 6, y: py(t) + 4, 'text-anchor': 'end' }, num(t)));
  }
  for (const t of ticks(xlo, xhi)) {
    svg.append(s('text', { x: px(t), y: H - m.b + 16, 'text-anchor': 'middle' }, num(Math.round(t * 100) / 100)));
  }
  svg.append(s('text', { x: (W + m.l) / 2, y: H - 4, 'text-anchor': 'middle' }, xLabel));
  svg.append(s('text', { x: 12, y: m.t + 10 }, yLabel));
  let drawn = 0;
  for (const [i, band] of bands.entries()) {
    const upper = [];
    const lower = [];
    x.forEach((xv, k) => {
      if (Number.isFinite(band.upper[k]) && Number.isFinite(band.lower[k])) {
        upper.push(`${px(xv)},${py(band.upper[k])}`);
        lower.unshift(`${px(xv)},${py(band.lower[k])}`);
      }
    });
    if (!upper.length) continue;
    svg.append(s('path', {
      class: 'series band', 'data-name': band.name, d: `M${upper.join('L')}L${lower.join('L')}Z`,
      fill: band.color || COLORS[i % COLORS.length], 'fill-opacity': band.opacity ?? 0.25, stroke: 'none',
    }));
    drawn += 1;
  }
  for (const [i, line] of lines.entries()) {
    const color = line.color || COLORS[i % COLORS.length];
    const group = s('g', { class: 'series line', 'data-name': line.name });
    if (line.dots) {
      x.forEach((xv, k) => {
        const v = line.values[k];
        if (v !== null && v !== undefined && Number.isFinite(v)) {
          group.append(s('circle', { cx: px(xv), cy: py(v), r: 3, fill: color }));
        }
      });
    } else {
      let d = '';
      let pen = false;
      x.forEach((xv, k) => {
        const v = line.values[k];
        if (v === null || v === undefined || !Number.isFinite(v)) { pen = false; return; }
        d += `${pen ? 'L' : 'M'}${px(xv)},${py(v)}`;
        pen = true;
      });
      group.append(s('path', {
        d, fill: 'none', stroke: color, 'stroke-width': 2, 'stroke-dasharray': line.dash || null, 'vector-effect': 'non-scaling-stroke',
      }));
    }
    if (group.childNodes.length && (group.firstChild.getAttribute('d') ?? 'x') !== '') {
      svg.append(group);
      drawn += 1;
    }
  }
  el.replaceChildren(svg, legend([...bands, ...lines]));
  el.dataset.series = String(drawn);
  el.dataset.points = String(x.length);
}

function legend(items) {
  return h('div', { class: 'legend' }, items.map((it, i) => h('span', {},
    h('i', { style: `background:${it.color || COLORS[i % COLORS.length]}` }), it.name)));
}

/** Colour from blue (low) to amber (high) for t in [0, 1]. */
function ramp(t) {
  const a = [30, 60, 110];
  const b = [240, 180, 41];
  const c = a.map((v, i) => Math.round(v + (b[i] - v) * t));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

/** The optimization heatmap: rows y, columns x, cells `best[y][x]` (null = no trial). */
export function heatmap(el, map) {
  const xs = map.x.values;
  const ys = map.y.values;
  const W = 800;
  const H = Math.max(160, Math.min(520, 40 + ys.length * 28));
  const m = { l: 90, r: 10, t: 10, b: 40 };
  const cw = (W - m.l - m.r) / Math.max(1, xs.length);
  const ch = (H - m.t - m.b) / Math.max(1, ys.length);
  const values = map.best.flat().filter((v) => v !== null && Number.isFinite(v));
  const [lo, hi] = values.length ? [Math.min(...values), Math.max(...values)] : [0, 1];
  const svg = s('svg', { class: 'plot', viewBox: `0 0 ${W} ${H}`, role: 'img', style: 'width:100%;height:auto;max-height:520px' });
  let cells = 0;
  ys.forEach((yv, r) => {
    svg.append(s('text', { x: m.l - 6, y: m.t + (ys.length - 1 - r) * ch + ch / 2 + 4, 'text-anchor': 'end' }, yv));
    xs.forEach((xv, c) => {
      const v = map.best[r]?.[c];
      const y = m.t + (ys.length - 1 - r) * ch;
      const rect = s('rect', {
        class: v === null || v === undefined ? 'empty' : 'cell', x: m.l + c * cw + 1, y: y + 1, width: cw - 2, height: ch - 2,
        fill: v === null || v === undefined ? '#1a2027' : ramp(hi > lo ? (v - lo) / (hi - lo) : 0.5),
      }, s('title', {}, `${map.x.name}=${xv}, ${map.y.name}=${yv}: ${v === null || v === undefined ? 'no trial' : num(v, 4)}`));
      if (v !== null && v !== undefined) cells += 1;
      svg.append(rect);
    });
  });
  const step = Math.max(1, Math.ceil(xs.length / 16));
  xs.forEach((xv, c) => {
    if (c % step === 0) svg.append(s('text', { x: m.l + c * cw + cw / 2, y: H - m.b + 14, 'text-anchor': 'middle' }, xv));
  });
  svg.append(s('text', { x: (W + m.l) / 2, y: H - 6, 'text-anchor': 'middle' }, map.x.name));
  svg.append(s('text', { x: 4, y: m.t + 10 }, map.y.name));
  el.replaceChildren(svg, h('div', { class: 'legend' },
    h('span', {}, h('i', { style: `background:${ramp(0)}` }), `low ${num(lo, 4)}`),
    h('span', {}, h('i', { style: `background:${ramp(1)}` }), `high ${num(hi, 4)}`)));
  el.dataset.series = '1';
  el.dataset.cells = String(cells);
}

/** Horizontal bars: [{label, value}] (importance, histograms). */
export function bars(el, items, { format = (v) => num(v, 3) } = {}) {
  const W = 800;
  const rowH = 20;
  const H = Math.max(40, items.length * rowH + 8);
  const max = Math.max(1e-12, ...items.map((i) => Math.abs(i.value) || 0));
  const svg = s('svg', { class: 'plot', viewBox: `0 0 ${W} ${H}`, role: 'img', style: 'width:100%;height:auto' });
  items.forEach((it, k) => {
    const w = ((Math.abs(it.value) || 0) / max) * (W - 260);
    svg.append(s('text', { x: 150, y: k * rowH + 15, 'text-anchor': 'end' }, it.label));
    svg.append(s('rect', { class: 'bar', x: 160, y: k * rowH + 4, width: Math.max(1, w), height: rowH - 8, fill: COLORS[0] }));
    svg.append(s('text', { x: 166 + w, y: k * rowH + 15 }, format(it.value)));
  });
  el.replaceChildren(svg);
  el.dataset.series = String(items.length ? 1 : 0);
  el.dataset.points = String(items.length);
}

/** A chart container with a test id. */
export function chartBox(name, { small = false, svg = false } = {}) {
  return h('div', { class: svg ? 'svgbox' : small ? 'chart small' : 'chart', 'data-chart': name });
}
