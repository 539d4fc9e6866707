// Debian's headless Chromium for the page tests, driven by playwright-core (which
// never downloads a browser of its own), with a fresh profile each time and no way
// to reach any host but loopback.

import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

import { origin, step } from './lib.mjs';

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

/**
 * Opens the browser, hands `exercise(page, problems)` a page, and closes the browser
 * whatever happens. `problems` collects page errors, console errors and requests to
 * anything but the server: the page is one self-contained file.
 */
export async function withPage(exercise, { viewport } = {}) {
  if (!existsSync(executablePath)) {
    throw new Error(`${executablePath} is missing: run scripts/test.sh, or apt-get install chromium`);
  }
  const profile = mkdtempSync(join(tmpdir(), 'herald-chromium-'));
  let browser;
  try {
    step(`launch ${executablePath}`);
    // A persistent context is how playwright takes a --user-data-dir: a fresh
    // temporary profile, deleted afterwards.
    browser = await chromium.launchPersistentContext(profile, {
      executablePath,
      headless: true,
      timeout: 30000,
      ...(viewport ? { viewport } : {}),
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        // Resolve no host name but loopback: nothing else may be reached from here.
        '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE [::1], EXCLUDE localhost',
      ],
    });
    const page = browser.pages()[0] || await browser.newPage();
    // Generous: CI runs this next to the rest of the suite on two cores.
    page.setDefaultTimeout(10000);
    await exercise(page, watch(page));
  } finally {
    if (browser) await browser.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
}

function watch(page) {
  const problems = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
  });
  page.on('request', (request) => {
    const url = request.url();
    if (!url.startsWith(origin) && !url.startsWith(origin.replace('http', 'ws'))) {
      problems.push(`request outside the server: ${url}`);
    }
  });
  return problems;
}
