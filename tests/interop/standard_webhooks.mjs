// Herald's signed callbacks checked by the official Standard Webhooks library
// (`standardwebhooks`), the way a receiver would check them: a loopback HTTP server
// takes the POSTs of a subscription to the `relay` event type and verifies each raw
// body and its headers with `new Webhook(secret).verify(...)`. A tampered body, a
// wrong secret and a replayed old timestamp must all be refused; after a secret
// rotation, the old and the new secret must both verify during the grace.
//
// The server must let callbacks reach loopback (`[webhooks] allow_cidrs =
// ["127.0.0.0/8"]`) and accept the bearer token INTEROP_TOKEN (default demo-token).
//
// Run: INTEROP_PORT=6001 node tests/interop/standard_webhooks.mjs

import { createServer } from 'node:http';

import { Webhook } from 'standardwebhooks';

import { assert, assertEqual, origin, run, server, step } from './lib.mjs';

const token = process.env.INTEROP_TOKEN || 'demo-token';

run('standard webhooks', async () => {
  const receiver = await startReceiver();
  try {
    await scenario(receiver);
  } finally {
    receiver.server.close();
  }
});

async function scenario(receiver) {
  step('subscribe the receiver to relay results');
  const subscription = await api('POST', '/subscriptions', {
    eventType: 'relay',
    callbackUrl: receiver.url,
    description: 'standardwebhooks interop',
  }, 201);
  assert(subscription.secret.startsWith('whsec_'), `secret ${subscription.secret}`);

  step('a relay job is delivered and verifies with the subscription secret');
  const payload = { service: 'billing', state: 'down', note: 'é ✓' };
  const job = await api('POST', '/jobs', { eventType: 'relay', payload, metadata: { from: 'node' } }, 202);
  const first = await receiver.next();
  assertEqual(first.method, 'POST', 'method');
  assert(first.headers['content-type'].startsWith('application/json'), `content-type ${first.headers['content-type']}`);
  const verified = new Webhook(subscription.secret).verify(first.body, first.headers);
  assertEqual(verified.jobId, job.id, 'jobId of the verified payload');
  assertEqual(verified.eventType, 'relay', 'eventType');
  assertEqual(verified.status, 'completed', 'status');
  assertEqual(verified.metadata, { from: 'node' }, 'metadata');
  assertEqual(verified.result.status, 'success', 'result.status');
  assertEqual(verified.result.data, payload, 'result.data');

  step('a tampered body, another secret and an old timestamp are refused');
  refused(() => new Webhook(subscription.secret).verify(first.body.replace('billing', 'billinG'), first.headers), 'tampered body');
  const stranger = `whsec_${Buffer.from('a-secret-of-twenty-four!').toString('base64')}`;
  refused(() => new Webhook(stranger).verify(first.body, first.headers), 'another secret');
  const old = String(Number(first.headers['webhook-timestamp']) - 3600);
  refused(() => new Webhook(subscription.secret).verify(first.body, { ...first.headers, 'webhook-timestamp': old }), 'timestamp an hour old');

  step('after a rotation the old and the new secret both verify');
  const rotated = await api('POST', `/subscriptions/${subscription.id}/rotate-secret`, undefined, 200);
  assert(rotated.secret !== subscription.secret, 'rotate-secret kept the secret');
  await api('POST', '/jobs', { eventType: 'relay', payload: { after: 'rotation' } }, 202);
  const second = await receiver.next();
  assertEqual(second.headers['webhook-signature'].split(' ').length, 2, 'signatures during the grace');
  for (const [name, secret] of [['new', rotated.secret], ['old', subscription.secret]]) {
    const data = new Webhook(secret).verify(second.body, second.headers);
    assertEqual(data.result.data, { after: 'rotation' }, `payload verified with the ${name} secret`);
  }
  assert(second.headers['webhook-id'] !== first.headers['webhook-id'], 'two jobs, one webhook-id');
}

function refused(verify, what) {
  let threw = false;
  try {
    verify();
  } catch (error) {
    threw = true;
    assertEqual(error.name, 'WebhookVerificationError', `error for ${what}`);
  }
  assert(threw, `${what} verified`);
}

/** An authenticated API call under /apps/{id}, expecting `status`; returns the JSON. */
async function api(method, path, body, status) {
  const response = await fetch(`${origin}/apps/${server.appId}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const text = await response.text();
  assertEqual(response.status, status, `${method} ${path} status (body ${text})`);
  return JSON.parse(text);
}

/** A loopback receiver that answers 204 and hands over each request in order. */
function startReceiver() {
  const received = [];
  const waiters = [];
  const server = createServer((request, response) => {
    const chunks = [];
    request.on('data', (chunk) => chunks.push(chunk));
    request.on('end', () => {
      received.push({
        method: request.method,
        headers: request.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      });
      response.writeHead(204).end();
      while (waiters.length > 0 && received.length > 0) waiters.shift()(received.shift());
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      resolve({
        server,
        url: `http://127.0.0.1:${port}/hooks/herald`,
        next(ms = 5000) {
          if (received.length > 0) return Promise.resolve(received.shift());
          return new Promise((done, fail) => {
            const waiter = (hit) => {
              clearTimeout(timer);
              done(hit);
            };
            const timer = setTimeout(() => {
              waiters.splice(waiters.indexOf(waiter), 1);
              fail(new Error(`no callback within ${ms} ms`));
            }, ms);
            waiters.push(waiter);
          });
        },
      });
    });
  });
}
