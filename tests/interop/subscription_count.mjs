// `pusher_internal:subscription_count` with pusher-js, for an app that turns it on
// (`subscription_count = true`; the Rust test starts the server so): pusher-js emits
// `pusher:subscription_count` on the channel and keeps `channel.subscriptionCount`
// as connections come and go; presence channels get none.
//
// Run against a server whose app has subscription_count = true:
//   INTEROP_PORT=6001 node tests/interop/subscription_count.mjs

import {
  assertEqual, connected, pusherClient, run, serverSdk, step, subscribed, unique,
} from './lib.mjs';
import { sleep, waitFor } from './extras.mjs';

run('subscription_count', async () => {
  const sdk = serverSdk();
  const clients = ['ann', 'bob', 'cy'].map((id) => pusherClient({ sdk, user: { user_id: id, user_info: {} } }));
  await Promise.all(clients.map((client) => connected(client)));
  const [ann, bob, cy] = clients;

  for (const name of [unique('interop-counted'), unique('private-interop-counted')]) {
    step(`${name}: the first subscriber hears 1`);
    const { recorder, channel } = await subscribed(ann, name);
    assertEqual(await recorder.next('pusher:subscription_count'), { subscription_count: 1 },
      'count after the first subscription');

    step(`${name}: two more subscribe; ann's channel.subscriptionCount follows`);
    await subscribed(bob, name);
    await subscribed(cy, name);
    await waitFor(() => channel.subscriptionCount === 3, `subscriptionCount 3 (is ${channel.subscriptionCount})`);

    step(`${name}: one unsubscribes`);
    cy.unsubscribe(name);
    await waitFor(() => channel.subscriptionCount === 2, `subscriptionCount 2 (is ${channel.subscriptionCount})`);
    bob.unsubscribe(name);
    await waitFor(() => channel.subscriptionCount === 1, `subscriptionCount 1 (is ${channel.subscriptionCount})`);
    ann.unsubscribe(name);
  }

  const room = unique('presence-interop-counted');
  step(`${room}: presence channels get no subscription_count`);
  const { recorder } = await subscribed(ann, room);
  await subscribed(bob, room);
  await recorder.next('pusher:member_added');
  await sleep(300);
  assertEqual(recorder.count('pusher:subscription_count'), 0, 'subscription_count events on a presence channel');

  for (const client of clients) client.disconnect();
});
