// Cache channels with the real libraries: an event triggered by the `pusher` SDK
// before anyone subscribed reaches pusher-js as soon as it subscribes, on each kind of
// cache channel (public, private, encrypted, presence); a cache channel with nothing
// cached gives `pusher:cache_miss` to `channel.bind`; `GET /channels/{name}?info=cache`
// reports what is cached.
//
// Run: INTEROP_PORT=6001 node tests/interop/cache.mjs

import { randomBytes } from 'node:crypto';

import {
  assert, assertEqual, connected, json, pusherClient, run, serverSdk, step, subscribed, unique,
} from './lib.mjs';
import { expectStatus, sleep } from './extras.mjs';

run('cache channels', async () => {
  const sdk = serverSdk({ encryptionMasterKeyBase64: randomBytes(32).toString('base64') });
  const client = pusherClient({ sdk, user: { user_id: 'reader', user_info: { name: 'Reader' } } });
  await connected(client);

  for (const prefix of ['cache-', 'private-cache-', 'private-encrypted-cache-', 'presence-cache-']) {
    const name = unique(`${prefix}interop`);
    step(`${name}: trigger before anyone subscribes, then subscribe`);
    await sdk.trigger(name, 'score', { home: 1, away: 0 });
    await sdk.trigger(name, 'score', { home: 2, away: 0 });
    const { recorder } = await subscribed(client, name);
    assertEqual(await recorder.next('score'), { home: 2, away: 0 }, `cached event on ${name}`);
    await sleep(200);
    assertEqual(recorder.count('score'), 1, `events replayed on ${name}`);
    assertEqual(recorder.count('pusher:cache_miss'), 0, `cache misses on ${name}`);

    step(`${name}: a later event arrives live as usual`);
    const seen = recorder.events.length;
    await sdk.trigger(name, 'score', { home: 2, away: 1 });
    assertEqual(await recorder.next('score', { from: seen }), { home: 2, away: 1 }, 'live event');
    client.unsubscribe(name);
  }

  const empty = unique('cache-interop-empty');
  step(`${empty}: nothing cached gives pusher:cache_miss`);
  const channel = client.subscribe(empty);
  const missed = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no pusher:cache_miss on ${empty}`)), 5000);
    channel.bind('pusher:cache_miss', (data) => { clearTimeout(timer); resolve(data); });
  });
  await missed;

  step(`${empty}: the next event arrives normally`);
  const arrived = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no first event on ${empty}`)), 5000);
    channel.bind('first', (data) => { clearTimeout(timer); resolve(data); });
  });
  await sdk.trigger(empty, 'first', { n: 1 });
  assertEqual(await arrived, { n: 1 }, 'first event on a cache channel');

  step('GET /channels/{name}?info=cache reports the cached data and its ttl');
  const info = await json(await sdk.get({ path: `/channels/${empty}`, params: { info: 'cache' } }));
  assertEqual(info.occupied, true, 'occupied');
  assert(info.cache && typeof info.cache === 'object', `no cache object: ${JSON.stringify(info)}`);
  assertEqual(JSON.parse(info.cache.data), { n: 1 }, 'cached data');
  assert(Number.isInteger(info.cache.ttl) && info.cache.ttl > 0 && info.cache.ttl <= 1800,
    `ttl: ${JSON.stringify(info)}`);

  step('info=cache on a channel that is not a cache channel is a 400');
  await expectStatus(sdk.get({ path: `/channels/${unique('interop-plain')}`, params: { info: 'cache' } }),
    400, 'info=cache on a public channel');

  client.disconnect();
});
