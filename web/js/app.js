// The dashboard's shell: a hash router over the pages, live updates by polling
// (each page polls while it is shown; leaving a page stops its timers), the
// token prompt, and the error banner. Pages are modules exporting `render(ctx, el, params)`.

import { onUnauthorized, setToken, token } from './api.js';
import * as jobs from './pages/jobs.js';
import * as job from './pages/job.js';
import * as candles from './pages/candles.js';
import * as strategies from './pages/strategies.js';

const ROUTES = [
  [/^\/?$/, jobs, 'jobs'],
  [/^\/jobs$/, jobs, 'jobs'],
  [/^\/jobs\/([^/]+)$/, job, 'jobs'],
  [/^\/candles$/, candles, 'candles'],
  [/^\/strategies$/, strategies, 'strategies'],
  [/^\/strategies\/([^/]+)$/, strategies, 'strategies'],
];

const view = document.getElementById('view');
const banner = document.querySelector('[data-testid=error-banner]');
const live = document.querySelector('[data-testid=live]');
const tokenForm = document.querySelector('[data-testid=token-form]');
const forget = document.querySelector('[data-testid=forget-token]');

/** What a page gets: polling that ends with the page, cleanups, error display. */
class Context {
  constructor() {
    this.alive = true;
    this.timers = new Set();
    this.cleanups = [];
  }

  /** Runs `fn` now and then `ms` after each run ends, while the page is shown. `fn` returning false stops it. */
  poll(fn, ms) {
    const run = async () => {
      if (!this.alive) return;
      let again = true;
      try {
        again = (await fn()) !== false;
        if (this.alive) live.textContent = `live · updated ${new Date().toISOString().slice(11, 19)} UTC`;
        showError(null);
      } catch (error) {
        if (this.alive) showError(error);
      }
      if (this.alive && again) {
        const timer = setTimeout(() => { this.timers.delete(timer); run(); }, ms);
        this.timers.add(timer);
      }
    };
    return run();
  }

  /** Runs `fn` once, showing its error if it fails. */
  async once(fn) {
    try {
      await fn();
    } catch (error) {
      if (this.alive) showError(error);
    }
  }

  onDispose(fn) {
    this.cleanups.push(fn);
  }

  dispose() {
    this.alive = false;
    for (const timer of this.timers) clearTimeout(timer);
    for (const fn of this.cleanups) {
      try { fn(); } catch { /* a chart already gone */ }
    }
  }
}

function showError(error) {
  if (!error) {
    banner.hidden = true;
    return;
  }
  banner.hidden = false;
  banner.textContent = error.status
    ? `${error.status} ${error.code}: ${error.message}`
    : `${error.message || error}`;
}

let current = null;

function route() {
  if (current) current.dispose();
  current = new Context();
  const [rawPath, query = ''] = location.hash.replace(/^#/, '').split('?');
  const path = decodeURIComponent(rawPath);
  const params = new URLSearchParams(query);
  for (const [pattern, page, nav] of ROUTES) {
    const match = path.match(pattern);
    if (match) {
      for (const a of document.querySelectorAll('[data-nav]')) a.classList.toggle('active', a.dataset.nav === nav);
      view.replaceChildren();
      view.dataset.page = nav;
      page.render(current, view, { id: match[1], params });
      return;
    }
  }
  view.replaceChildren(document.createTextNode(`No page at #${path}.`));
}

onUnauthorized(() => {
  tokenForm.hidden = false;
  tokenForm.querySelector('input').focus();
});

tokenForm.addEventListener('submit', (event) => {
  event.preventDefault();
  setToken(tokenForm.querySelector('input').value.trim());
  tokenForm.reset();
  tokenForm.hidden = true;
  forget.hidden = false;
  route();
});

forget.hidden = !token();
forget.addEventListener('click', () => {
  setToken('');
  forget.hidden = true;
  route();
});

window.addEventListener('hashchange', route);
route();
