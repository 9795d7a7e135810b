// Debian's chromium driven by playwright-core: no browser download. Each page
// records console errors, uncaught exceptions and CSP violations, and
// screenshots go to ARTIFACTS_DIR.

import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const ARTIFACTS = process.env.ARTIFACTS_DIR || path.resolve('artifacts');
mkdirSync(ARTIFACTS, { recursive: true });

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
}

// A fresh context (its own storage: one user) and page on `baseURL`.
export async function openPage(browser, baseURL, options = {}) {
  const context = await browser.newContext({ baseURL, ...options });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: baseURL });
  const page = await context.newPage();
  page.problems = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error') page.problems.push(`console: ${msg.text()}`);
  });
  page.on('pageerror', (err) => page.problems.push(`exception: ${err.message}`));
  // The access token travels as a WebSocket subprotocol, never in the URL.
  page.on('websocket', (ws) => {
    if (/token/i.test(ws.url())) page.problems.push(`token in a WebSocket URL: ${ws.url()}`);
  });
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  return { context, page };
}

let shot = 0;
export async function screenshot(page, name) {
  shot += 1;
  await page.screenshot({ path: path.join(ARTIFACTS, `${String(shot).padStart(2, '0')}-${name}.png`), fullPage: true });
}
