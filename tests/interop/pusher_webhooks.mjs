// The official `pusher` Node SDK's webhook check on requests Herald sent: every
// captured request must pass `webhook.isValid()`, `getEvents()` must read the events
// the Rust test expects, and a changed body or the wrong secret must fail the check.
//
// The requests come from the Rust test that ran the server and the receiver: a JSON
// file named by INTEROP_WEBHOOKS, of the form
//   { "requests": [{ "headers": { lower-case name: value }, "body": "raw body" }],
//     "expected": [event, ...] }
//
// Run: INTEROP_WEBHOOKS=/tmp/captured.json INTEROP_KEY=... INTEROP_SECRET=... \
//        node tests/interop/pusher_webhooks.mjs

import { readFileSync } from 'node:fs';
import { isDeepStrictEqual, inspect } from 'node:util';

import { assert, fail, run, server, serverSdk, step } from './lib.mjs';

/** How far a webhook's time_ms may be from now. */
const CLOCK_SLACK_MS = 5 * 60 * 1000;

run('pusher webhooks', async () => {
  const path = process.env.INTEROP_WEBHOOKS;
  if (!path) fail('INTEROP_WEBHOOKS must name the file of captured webhook requests');
  const { requests, expected } = JSON.parse(readFileSync(path, 'utf8'));
  assert(requests.length > 0, 'no captured requests to check');
  const sdk = serverSdk();

  step(`the SDK accepts all ${requests.length} captured requests`);
  const events = [];
  for (const [i, { headers, body }] of requests.entries()) {
    const webhook = sdk.webhook({ headers, rawBody: body });
    assert(webhook.isValid(), `request ${i} failed the SDK's check: ${inspect({ headers, body })}`);
    const skew = Math.abs(Date.now() - webhook.getTime().getTime());
    assert(skew < CLOCK_SLACK_MS, `request ${i}: time_ms is ${skew} ms from now`);
    events.push(...webhook.getEvents());
  }

  step(`the SDK reads the ${expected.length} expected events`);
  for (const event of expected) {
    assert(
      events.some((seen) => isDeepStrictEqual(seen, event)),
      `missing ${inspect(event)} among ${inspect(events, { depth: 4 })}`,
    );
  }

  step('a changed body, another key or another secret fails the check');
  const { headers, body } = requests[0];
  assert(!sdk.webhook({ headers, rawBody: `${body} ` }).isValid(), 'a changed body passed');
  const otherKey = { ...headers, 'x-pusher-key': `${server.key}-other` };
  assert(!sdk.webhook({ headers: otherKey, rawBody: body }).isValid(), 'another key passed');
  const otherSecret = serverSdk({ secret: `${server.secret}-other` });
  assert(!otherSecret.webhook({ headers, rawBody: body }).isValid(), 'another secret passed');
});
