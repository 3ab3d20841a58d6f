// With tokens configured: the page loads, asks for a token, and shows the
// service's data once one is given (kept for the tab in sessionStorage).

import { config, launch, watch, screenshot, assert, log } from './lib.mjs';

const { context, close } = await launch();
const page = await context.newPage();
const errors = watch(page);
try {
  await page.goto(`${config.base}/#/jobs`);
  await page.waitForSelector('[data-testid=token-form]:not([hidden])');
  assert(!(await page.$('[data-testid=jobs-table]')), 'no data without a token');
  await screenshot(page, 'token-prompt');
  await page.fill('[data-testid=token-form] input[name=token]', config.token);
  await page.click('[data-testid=token-form] button[type=submit]');
  await page.waitForSelector('[data-testid=jobs-table]');
  await page.waitForSelector('[data-testid=token-form]', { state: 'hidden' });
  // Reloading keeps the token for this tab.
  await page.reload();
  await page.waitForSelector('[data-testid=jobs-table]');
  await screenshot(page, 'token-accepted');
  // The only errors: the 401s (and their console lines) before the token was given.
  const unexpected = errors.filter((e) => !e.includes('401'));
  assert(unexpected.length === 0, `unexpected errors:\n${unexpected.join('\n')}`);
  assert(errors.some((e) => e.includes('401')), 'the API refused the page before it had a token');
  log('ok');
} finally {
  await close();
}
