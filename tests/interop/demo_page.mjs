// The demo page in a real browser: Debian's headless Chromium, driven by
// playwright-core (which never downloads a browser of its own). The page must
// connect, subscribe, show an event sent through the signed HTTP API by the `pusher`
// SDK, and show one sent through its own form.
//
// Run: INTEROP_PORT=6001 node tests/interop/demo_page.mjs
// CHROMIUM=/path/to/chromium overrides /usr/bin/chromium. SCREENSHOT=file.png saves
// the final page.

import { withPage } from './browser.mjs';
import { assert, origin, run, serverSdk, step, unique } from './lib.mjs';

run('demo page', async () => {
  await withPage(exercise);
}, { seconds: 60 });

async function exercise(page, problems) {
  try {
    step(`open ${origin}/`);
    const response = await page.goto(`${origin}/`);
    assert(response && response.ok(), `GET / answered ${response && response.status()}`);

    step('wait for #status to say connected');
    await page.waitForSelector('#status[data-state="connected"]');
    const status = await page.textContent('#status');
    assert(/\bconnected\b/.test(status), `#status reads "${status}"`);

    const channel = unique('demo-page');
    step(`subscribe to ${channel}`);
    await page.fill('#channel', channel);
    await page.click('#subscribe');
    await page.waitForSelector(`#subscriptions li.subscribed[data-channel="${channel}"]`);

    step('an event sent with the pusher SDK shows up in #events');
    await serverSdk().trigger(channel, 'sdk-event', { from: 'the pusher SDK' });
    await expectEvent(page, 'sdk-event', 'the pusher SDK');

    step('an event sent with the page form shows up in #events');
    await page.fill('#event-channel', channel);
    await page.fill('#event-name', 'form-event');
    await page.fill('#event-data', '{"from": "the demo form"}');
    await page.click('#send');
    await expectEvent(page, 'form-event', 'the demo form');
    const sendNote = await page.textContent('#send-note');
    assert(/^Sent\b/.test(sendNote), `#send-note reads "${sendNote}"`);

    step('data is shown as text, never as markup');
    await serverSdk().trigger(channel, 'markup', '<img src=x onerror="window.pwned=1">');
    await expectEvent(page, 'markup', '<img src=x');
    assert(!(await page.evaluate(() => window.pwned)), 'event data was rendered as HTML');
    assert(await page.$('#events img') === null, 'event data created an <img> element');

    if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
    assert(problems.length === 0, `the page misbehaved:\n  ${problems.join('\n  ')}`);
  } catch (error) {
    const events = await page.textContent('#events').catch(() => '(unreadable)');
    const status = await page.textContent('#status').catch(() => '(unreadable)');
    error.message += `\n#status: ${status}\n#events: ${events}\n${problems.join('\n')}`;
    throw error;
  }
}

/** Waits until an `li` in #events contains both the event name and `dataFragment`. */
async function expectEvent(page, name, dataFragment) {
  await page.waitForFunction(
    ([eventName, fragment]) => [...document.querySelectorAll('#events li')]
      .some((li) => li.textContent.includes(eventName) && li.textContent.includes(fragment)),
    [name, dataFragment],
    { timeout: 10000 },
  );
}
