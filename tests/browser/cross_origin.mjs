// A page of another origin (a small HTTP server on another 127.0.0.1 port)
// tries to change the service from the visitor's browser: cross-site fetch
// POSTs (text/plain, form-encoded, JSON without and with CORS), a CSV upload,
// and HTML form submits (text/plain-encoded JSON, multipart CSV). None may
// create a job or store a candle; nor may the page read the API.

import http from 'node:http';
import { config, launch, screenshot, api, assert, log } from './lib.mjs';

const API = config.base;
const backtest = JSON.stringify(config.backtest);
const csvPath = `/v1/candles/csv?exchange=${encodeURIComponent(config.exchange)}&symbol=${config.csv_symbol}`;
const csv = 'timestamp,open,high,low,close,volume\n1704067200000,1,2,0.5,1.5,10\n1704067260000,1.5,2,1,1.2,11\n';

// Everything the page tries, in its own script (the attacker's page).
const attack = `
const API = ${JSON.stringify(API)};
const backtest = ${JSON.stringify(backtest)};
const csvPath = ${JSON.stringify(csvPath)};
const csv = ${JSON.stringify(csv)};
async function attempt(name, run) {
  try {
    const response = await run();
    let body = null;
    try { body = await response.text(); } catch (e) { body = 'unreadable: ' + e.message; }
    return { name, outcome: 'response', type: response.type, status: response.status, body };
  } catch (e) {
    return { name, outcome: 'rejected', error: String(e) };
  }
}
function submitForm(name, action, enctype, fields) {
  return new Promise((resolve) => {
    const sink = document.createElement('iframe');
    sink.name = 'sink-' + name;
    document.body.append(sink);
    sink.addEventListener('load', () => resolve({ name, outcome: 'form submitted (frame loaded)' }), { once: true });
    const form = document.createElement('form');
    form.method = 'POST';
    form.action = API + action;
    form.enctype = enctype;
    form.target = sink.name;
    for (const [key, value] of fields) {
      const input = document.createElement('textarea');
      input.name = key;
      input.value = value;
      form.append(input);
    }
    document.body.append(form);
    form.submit();
  });
}
window.results = (async () => {
  const out = [];
  out.push(await attempt('fetch text/plain JSON (no-cors)', () => fetch(API + '/v1/backtests', { method: 'POST', mode: 'no-cors', headers: { 'Content-Type': 'text/plain' }, body: backtest })));
  out.push(await attempt('fetch form-encoded (no-cors)', () => fetch(API + '/v1/backtests', { method: 'POST', mode: 'no-cors', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(JSON.parse(backtest)).toString() })));
  out.push(await attempt('fetch JSON without CORS (no-cors)', () => fetch(API + '/v1/backtests', { method: 'POST', mode: 'no-cors', headers: { 'Content-Type': 'application/json' }, body: backtest })));
  out.push(await attempt('fetch JSON with CORS', () => fetch(API + '/v1/backtests', { method: 'POST', mode: 'cors', headers: { 'Content-Type': 'application/json' }, body: backtest })));
  out.push(await attempt('fetch CSV upload (no-cors)', () => fetch(API + csvPath, { method: 'POST', mode: 'no-cors', body: csv })));
  out.push(await attempt('fetch CSV upload with CORS', () => fetch(API + csvPath, { method: 'POST', mode: 'cors', headers: { 'Content-Type': 'text/csv' }, body: csv })));
  out.push(await attempt('fetch read jobs with CORS', () => fetch(API + '/v1/jobs', { mode: 'cors' })));
  const json = JSON.parse(backtest);
  const head = JSON.stringify(json).slice(0, -1) + ',"pad":"';
  out.push(await submitForm('text-plain-json', '/v1/backtests', 'text/plain', [[head, '"}']]));
  out.push(await submitForm('urlencoded', '/v1/backtests', 'application/x-www-form-urlencoded', Object.entries(json).map(([k, v]) => [k, String(v)])));
  out.push(await submitForm('multipart-csv', csvPath, 'multipart/form-data', [['file', csv]]));
  out.push(await submitForm('text-plain-csv', csvPath, 'text/plain', [['timestamp,open,high,low,close,volume\\n1704067200000,1,2,0.5,1.5,10\\n1704067260000,1.5,2,1,1.2,11\\nx', '1']]));
  return out;
})();
`;

const server = http.createServer((request, response) => {
  if (request.url === '/attack.js') {
    response.writeHead(200, { 'content-type': 'text/javascript' });
    response.end(attack);
  } else {
    response.writeHead(200, { 'content-type': 'text/html' });
    response.end('<!doctype html><title>another site</title><link rel="icon" href="data:,"><h1>another site</h1><script src="/attack.js"></script>');
  }
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const evil = `http://127.0.0.1:${server.address().port}`;
log('attacker page at', evil, 'API at', API);

const jobsBefore = (await api('/v1/jobs?limit=200')).body.jobs.length;
const seriesBefore = (await api('/v1/candles')).body.series.length;
const { context, close } = await launch();
const page = await context.newPage();
try {
  await page.goto(`${evil}/`);
  const results = await page.evaluate(() => window.results);
  for (const r of results) log(JSON.stringify(r).slice(0, 300));
  await screenshot(page, 'cross-origin');
  const failures = [];
  // Reading: a cross-origin page never gets the API's data.
  const read = results.find((r) => r.name === 'fetch read jobs with CORS');
  if (read.outcome === 'response' && read.body && read.body.includes('"jobs"')) failures.push('another origin read GET /v1/jobs');
  for (const r of results) {
    if (r.outcome === 'response' && r.type !== 'opaque' && r.status >= 200 && r.status < 300) {
      failures.push(`${r.name}: readable ${r.status} answer`);
    }
  }
  const jobsAfter = (await api('/v1/jobs?limit=200')).body.jobs;
  if (jobsAfter.length !== jobsBefore) {
    failures.push(`jobs were created from another origin: ${jobsAfter.length - jobsBefore} (${jobsAfter.map((j) => j.kind).join(', ')})`);
  }
  const seriesAfter = (await api('/v1/candles')).body.series;
  const uploaded = seriesAfter.filter((s) => s.symbol === config.csv_symbol);
  if (seriesAfter.length !== seriesBefore || uploaded.length) {
    failures.push(`candles were stored from another origin: ${JSON.stringify(uploaded)}`);
  }
  assert(failures.length === 0, `cross-origin requests changed or read the service:\n${failures.join('\n')}`);
  log('ok: nothing changed, nothing read');
} finally {
  await close();
  server.close();
}
