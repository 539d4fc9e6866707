// The demo page's Jobs panel in a real browser: Debian's headless Chromium, driven by
// playwright-core (which never downloads a browser of its own). The page must send a
// chat analysis and file uploads to POST /demo/jobs, follow each job on its channel
// until it ends, and show the result as text: participants and language for the
// chat, type, size and dimensions for the images. A chat the server cannot read must
// show as failed, and a file name made of markup must stay text.
//
// Run: INTEROP_PORT=6001 node tests/interop/demo_jobs.mjs
// CHROMIUM=/path/to/chromium overrides /usr/bin/chromium. SCREENSHOT=file.png saves
// the final page.

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { withPage } from './browser.mjs';
import { assert, assertEqual, origin, run, step } from './lib.mjs';

const fixtures = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');
const FINAL = ['completed', 'failed', 'cancelled'];
/** How long one job may take, from its request to its final event on the page. */
const JOB_MS = 30000;

run('demo page jobs', async () => {
  await withPage(exercise, { viewport: { width: 1100, height: 900 } });
}, { seconds: 80 });

async function exercise(page, problems) {
  try {
    step(`open ${origin}/`);
    const response = await page.goto(`${origin}/`);
    assert(response && response.ok(), `GET / answered ${response && response.status()}`);
    await page.waitForSelector('#status[data-state="connected"]');
    await recordStatuses(page);

    step('upload tests/fixtures/gradient-7x5.png');
    await page.setInputFiles('#file-input', join(fixtures, 'gradient-7x5.png'));
    const png = await runJob(page, '#upload-file', 'file-upload', '#upload-note');
    assertEqual(png.status, 'completed', `status of the PNG upload (result: ${png.result})`);
    assert(/\b7 × 5 px\b/.test(png.facts.dimensions), `PNG dimensions read "${png.facts.dimensions}"`);
    assert(png.facts.type.includes('image/png'), `PNG type reads "${png.facts.type}"`);
    assert(png.facts.name === 'gradient-7x5.png', `PNG file name reads "${png.facts.name}"`);
    assert(/^[0-9a-f]{64}$/.test(png.facts.sha256), `PNG sha256 reads "${png.facts.sha256}"`);
    const pngBytes = readFileSync(join(fixtures, 'gradient-7x5.png')).length;
    assert(png.facts.size.includes(`${pngBytes} bytes`), `PNG size reads "${png.facts.size}", not ${pngBytes} bytes`);
    assertEqual(png.raw.data && png.raw.data.image, { width: 7, height: 5 }, 'raw result image');

    step('upload the JPEG fixture under a file name made of markup');
    // No double quotes: browsers send them as %22 in a multipart file name.
    const markupName = '<img src=x onerror=window.pwned=1>.jpg';
    await page.setInputFiles('#file-input', {
      name: markupName,
      mimeType: 'image/jpeg',
      buffer: readFileSync(join(fixtures, 'gradient-9x4.jpg')),
    });
    const jpeg = await runJob(page, '#upload-file', 'file-upload', '#upload-note');
    assertEqual(jpeg.status, 'completed', `status of the JPEG upload (result: ${jpeg.result})`);
    assert(/\b9 × 4 px\b/.test(jpeg.facts.dimensions), `JPEG dimensions read "${jpeg.facts.dimensions}"`);
    assert(jpeg.facts.type.includes('image/jpeg'), `JPEG type reads "${jpeg.facts.type}"`);
    assertEqual(jpeg.facts.name, markupName, 'the markup file name, shown as text');
    assert(!(await page.evaluate(() => window.pwned)), 'a file name was rendered as HTML');
    assert(await page.$('#jobs img') === null, 'a file name created an <img> element');

    step('analyse the sample chat');
    const sample = await page.inputValue('#chat-input');
    const chat = await runJob(page, '#analyse-chat', 'chat-analysis', '#chat-note');
    assertEqual(chat.status, 'completed', `status of the chat analysis (result: ${chat.result})`);
    assert(chat.participants.length >= 2, `participants shown: ${JSON.stringify(chat.participants)}`);
    for (const person of chat.participants) {
      assert(sample.includes(`${person.user}:`), `participant ${person.user} is not in the sample chat`);
      assert(/^\d+(\.\d)?%$/.test(person.share), `${person.user}'s message share reads "${person.share}"`);
    }
    const total = chat.participants.reduce((sum, p) => sum + parseFloat(p.share), 0);
    assert(Math.abs(total - 100) < 0.5, `message shares add up to ${total}%`);
    assert(/^English \(eng\)/.test(chat.facts.language), `language reads "${chat.facts.language}"`);
    assert(/^(positive|negative|neutral) \(compound [+-]\d\.\d\d\)/.test(chat.facts.sentiment),
      `sentiment reads "${chat.facts.sentiment}"`);
    assert(chat.terms.length > 0, 'no top terms shown');
    assert(Array.isArray(chat.raw.data && chat.raw.data.participants), 'the raw result has no participants');

    step('a chat the server cannot read ends as failed, with its reason');
    await page.fill('#chat-input', '[{"user": "ana", "text": "no time on this one"}]');
    const bad = await runJob(page, '#analyse-chat', 'chat-analysis', '#chat-note');
    assertEqual(bad.status, 'failed', 'status of the unreadable chat');
    assert(/messages\[0\]\.ts/.test(bad.result), `the failure reads "${bad.result}"`);

    step('a chat the page cannot read is refused before sending');
    const before = await page.$$eval('#jobs > li[data-job-id]', (items) => items.length);
    await page.fill('#chat-input', 'maya: hello\nthis line has no name');
    await page.click('#analyse-chat');
    await page.waitForSelector('#chat-note.error');
    const chatNote = await page.textContent('#chat-note');
    assert(/Line 2/.test(chatNote), `#chat-note reads "${chatNote}"`);
    const after = await page.$$eval('#jobs > li[data-job-id]', (items) => items.length);
    assertEqual(after, before, 'jobs listed after the refused chat');
    await page.fill('#chat-input', sample);

    step('every job went forward only, and ended exactly once');
    const history = await page.evaluate(() => window.__jobStatuses);
    for (const [id, statuses] of Object.entries(history)) {
      const ends = statuses.filter((s) => FINAL.includes(s));
      assert(ends.length === 1 && FINAL.includes(statuses.at(-1)), `job ${id} went ${statuses.join(' → ')}`);
      console.log(`  ${id}: ${statuses.join(' → ')}`);
    }
    assertEqual(Object.keys(history).length, 4, 'jobs seen on the page');

    if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
    assert(problems.length === 0, `the page misbehaved:\n  ${problems.join('\n  ')}`);
  } catch (error) {
    const jobs = await page.innerText('#jobs').catch(() => '(unreadable)');
    const status = await page.textContent('#status').catch(() => '(unreadable)');
    error.message += `\n#status: ${status}\n#jobs:\n${jobs}\n${problems.join('\n')}`;
    throw error;
  }
}

/** Keeps, in the page, every data-status each job element has had, in order. */
async function recordStatuses(page) {
  await page.evaluate(() => {
    window.__jobStatuses = {};
    const note = (item) => {
      if (!item.dataset || !item.dataset.jobId) return;
      const seen = (window.__jobStatuses[item.dataset.jobId] ||= []);
      if (seen.at(-1) !== item.dataset.status) seen.push(item.dataset.status);
    };
    new MutationObserver((mutations) => {
      for (const mutation of mutations) {
        if (mutation.type === 'attributes') note(mutation.target);
        for (const added of mutation.addedNodes) note(added);
      }
    }).observe(document.getElementById('jobs'), {
      subtree: true, childList: true, attributes: true, attributeFilter: ['data-status'],
    });
  });
}

/**
 * Clicks `button`, waits for the job it sends to appear in #jobs (or for `noteSelector`
 * to show an error) and then for the job to end, and reads what the page shows of it.
 */
async function runJob(page, button, eventType, noteSelector) {
  const known = await page.$$eval('#jobs > li[data-job-id]', (items) => items.map((li) => li.dataset.jobId));
  await page.click(button);
  const appeared = await page.waitForFunction(([type, ids, noteAt]) => {
    const item = [...document.querySelectorAll('#jobs > li[data-job-id]')]
      .find((li) => li.dataset.eventType === type && !ids.includes(li.dataset.jobId));
    if (item) return { id: item.dataset.jobId };
    const note = document.querySelector(noteAt);
    return note && note.classList.contains('error') ? { error: note.textContent } : null;
  }, [eventType, known, noteSelector]);
  const { id, error } = await appeared.jsonValue();
  if (error) throw new Error(`the ${eventType} job was not accepted: ${error}`);
  console.log(`  job ${id}`);

  const selector = `#jobs > li[data-job-id="${id}"]`;
  await page.waitForSelector(FINAL.map((s) => `${selector}[data-status="${s}"]`).join(', '), { timeout: JOB_MS });
  return page.$eval(selector, (item) => {
    const text = (className) => {
      const found = item.querySelector(`.${className}`);
      return found ? found.textContent.trim() : '';
    };
    let raw = null;
    try {
      raw = JSON.parse(item.querySelector('.job-raw pre').textContent);
    } catch {
      raw = null;
    }
    return {
      status: item.dataset.status,
      result: item.querySelector('.job-result').innerText,
      message: text('job-message'),
      raw,
      facts: {
        name: text('job-file-name'),
        type: text('job-mime'),
        size: text('job-size'),
        dimensions: text('job-dimensions'),
        sha256: text('job-sha256'),
        language: text('job-language'),
        sentiment: text('job-sentiment'),
      },
      participants: [...item.querySelectorAll('.job-result tr[data-user]')].map((row) => ({
        user: row.dataset.user,
        share: row.cells[2].textContent.trim(),
      })),
      terms: [...item.querySelectorAll('.job-terms li')].map((li) => li.textContent),
    };
  });
}
