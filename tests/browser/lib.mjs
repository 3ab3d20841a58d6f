// Shared by the browser tests: launching Debian's chromium through
// playwright-core (no browser download), collecting console errors, checking
// that charts drew, saving screenshots, and plain assertions.

import { createRequire } from 'node:module';
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const modules = process.env.JESSE_MCP_NODE_MODULES;
if (!modules) throw new Error('JESSE_MCP_NODE_MODULES is not set: run ops/browser-env.sh and pass the directory it prints');
const require = createRequire(join(modules, 'noop.js'));
const { chromium } = require('playwright-core');

export const config = JSON.parse(process.env.JESSE_MCP_BROWSER_CONFIG || '{}');
const artifacts = config.artifacts || join(tmpdir(), 'jesse-mcp-dashboard');

export function assert(condition, message) {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

export function log(...args) {
  console.log('[browser]', ...args);
}

/** Launches chromium with a fresh profile; returns {context, close}. */
export async function launch() {
  const profile = await mkdtemp(join(tmpdir(), 'jesse-mcp-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: config.chromium || '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1400, height: 1000 },
    // Without the background-networking flags Chromium calls home on a closed network.
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage'],
  });
  await mkdir(artifacts, { recursive: true });
  return {
    context,
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/** Console errors and uncaught exceptions of a page, and its failed requests (status >= 400). */
export function watch(page) {
  const errors = [];
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(`console: ${message.text()} (${message.location()?.url ?? ''})`);
  });
  page.on('pageerror', (error) => errors.push(`pageerror: ${error.message}`));
  page.on('response', (response) => {
    if (response.status() >= 400) errors.push(`HTTP ${response.status()} ${response.request().method()} ${response.url()}`);
  });
  page.on('requestfailed', (request) => errors.push(`request failed: ${request.method()} ${request.url()} ${request.failure()?.errorText}`));
  return errors;
}

export async function screenshot(page, name) {
  const path = join(artifacts, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  log('screenshot', path);
  return path;
}

/**
 * Waits until the chart `[data-chart=name]` inside `root` drew `series` series:
 * its data-series attribute says so and, for canvas charts (lightweight-charts),
 * a canvas has painted pixels; for SVG charts, the series elements exist.
 */
export async function chartDrew(page, name, series, timeout = 30000) {
  const selector = `[data-chart="${name}"]`;
  await page.waitForSelector(`${selector}[data-series="${series}"]`, { timeout });
  await page.waitForFunction((sel) => {
    const box = document.querySelector(sel);
    const canvases = [...box.querySelectorAll('canvas')];
    if (canvases.length) {
      return canvases.some((canvas) => {
        if (!canvas.width || !canvas.height) return false;
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let painted = 0;
        for (let i = 3; i < data.length; i += 4 * 7) if (data[i] !== 0) painted += 1;
        return painted > 50;
      });
    }
    const svg = box.querySelector('svg');
    return !!svg && svg.querySelectorAll('.series, rect.cell, rect.bar').length > 0;
  }, selector, { timeout });
  return page.$eval(selector, (box) => Number(box.dataset.series));
}

export async function api(path, init = {}) {
  const response = await fetch(`${config.base}${path}`, {
    ...init,
    headers: { 'content-type': 'application/json', ...(init.headers || {}) },
  });
  const text = await response.text();
  let body;
  try { body = JSON.parse(text); } catch { body = text; }
  return { status: response.status, body };
}
