// Users with the real libraries: pusher-js `signin()` with a
// `userAuthentication.customHandler` that returns the `pusher` SDK's
// `authenticateUser`; the SDK's `sendToUser` reaching `pusher.user.bind`; watchlist
// online/offline events on `pusher.user.watchlist`; `terminateUserConnections`
// disconnecting every socket of that user and no other; a forged sign-in refused.
//
// Run: INTEROP_PORT=6001 node tests/interop/users.mjs

import {
  assert, assertEqual, connected, run, serverSdk, step, unique,
} from './lib.mjs';
import { Calls, reachesState, signedIn, sleep, userClient } from './extras.mjs';

run('users', async () => {
  const sdk = serverSdk();
  // Ids unique to this run, so that nothing else on the server is watched by mistake.
  const alice = unique('alice');
  const bob = unique('bob');
  const carol = unique('carol');

  step(`${alice} signs in, watching ${bob}`);
  const atAlice = userClient(sdk, { id: alice, user_info: { name: 'Alice' }, watchlist: [bob] });
  const aliceCalls = new Calls();
  atAlice.user.bind('notice', aliceCalls.add('notice'));
  atAlice.user.watchlist.bind('online', aliceCalls.add('online'));
  atAlice.user.watchlist.bind('offline', aliceCalls.add('offline'));
  await connected(atAlice);
  await signedIn(atAlice, alice);
  assertEqual(atAlice.user.user_data,
    { id: alice, user_info: { name: 'Alice' }, watchlist: [bob] }, 'user_data after sign-in');
  assertEqual(aliceCalls.count('online'), 0, 'online events while nobody watched is online');

  step('sendToUser reaches pusher.user.bind');
  await sdk.sendToUser(alice, 'notice', { text: 'hello alice' });
  assertEqual(await aliceCalls.next('notice'), { text: 'hello alice' }, 'event sent to the user');

  step(`${bob} signs in on two connections: ${alice} hears online once`);
  const bobTabs = [
    userClient(sdk, { id: bob, user_info: { name: 'Bob' } }),
    userClient(sdk, { id: bob, user_info: { name: 'Bob' } }),
  ];
  const bobCalls = new Calls();
  bobTabs.forEach((tab, i) => {
    tab.user.bind('notice', bobCalls.add(`notice-${i}`));
    tab.connection.bind('error', bobCalls.add(`error-${i}`));
  });
  await Promise.all(bobTabs.map((tab) => connected(tab)));
  await signedIn(bobTabs[0], bob);
  const online = await aliceCalls.next('online');
  assertEqual(online.user_ids, [bob], 'user_ids of the online event');
  await signedIn(bobTabs[1], bob);

  step('sendToUser reaches every connection of the user');
  await sdk.sendToUser(bob, 'notice', { text: 'hello bob' });
  assertEqual(await bobCalls.next('notice-0'), { text: 'hello bob' }, 'first tab');
  assertEqual(await bobCalls.next('notice-1'), { text: 'hello bob' }, 'second tab');
  assertEqual(aliceCalls.count('notice'), 1, `events for ${bob} reaching ${alice}`);

  step(`${carol} signs in watching ${alice} and ${bob}: both already online, in one event`);
  const atCarol = userClient(sdk, { id: carol, watchlist: [alice, bob] });
  const carolCalls = new Calls();
  atCarol.user.watchlist.bind('online', carolCalls.add('online'));
  atCarol.user.watchlist.bind('offline', carolCalls.add('offline'));
  await connected(atCarol);
  await signedIn(atCarol, carol);
  const already = await carolCalls.next('online');
  assertEqual([...already.user_ids].sort(), [alice, bob].sort(), 'users already online');
  assertEqual(aliceCalls.count('online'), 1, `online events at ${alice}`);

  step(`terminateUserConnections(${bob}) disconnects both of bob's connections`);
  await sdk.terminateUserConnections(bob);
  await Promise.all(bobTabs.map((tab) => reachesState(tab, 'disconnected')));
  for (const i of [0, 1]) {
    const error = await bobCalls.next(`error-${i}`);
    assertEqual(error.data && error.data.code, 4009, `error code at tab ${i}`);
  }
  const offline = await aliceCalls.next('offline');
  assertEqual(offline.user_ids, [bob], 'user_ids of the offline event');
  const carolOffline = await carolCalls.next('offline');
  assertEqual(carolOffline.user_ids, [bob], `offline event at ${carol}`);

  step('4009 means do not reconnect: bob stays disconnected; the others are untouched');
  await sleep(1500);
  for (const tab of bobTabs) assertEqual(tab.connection.state, 'disconnected', 'bob after a second');
  assertEqual(atAlice.connection.state, 'connected', `${alice} after ${bob} was terminated`);
  await sdk.sendToUser(alice, 'notice', { text: 'still here' });
  assertEqual(await aliceCalls.next('notice', 1), { text: 'still here' }, 'event after terminate');

  step('a sign-in signed with the wrong secret is refused with 4009');
  const forger = userClient(sdk, { id: unique('mallory') }, serverSdk({ secret: 'not-the-secret' }));
  const forgerCalls = new Calls();
  forger.connection.bind('error', forgerCalls.add('error'));
  await connected(forger);
  forger.signin();
  await reachesState(forger, 'disconnected');
  const refused = await forgerCalls.next('error');
  assertEqual(refused.data && refused.data.code, 4009, 'error code of a forged sign-in');
  assert(forger.user.user_data === null, 'a forged sign-in succeeded');

  step(`${alice} disconnects: ${carol} hears offline`);
  atAlice.disconnect();
  const aliceGone = await carolCalls.next('offline', 1);
  assertEqual(aliceGone.user_ids, [alice], `offline event for ${alice}`);

  atCarol.disconnect();
});
