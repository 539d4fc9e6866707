// pusher-js (Node build) against Herald, with events sent and channels authorized by
// the official `pusher` Node SDK: public, private and presence channels, presence
// membership with two clients, socket_id exclusion, and the channel-info API.
//
// Run: INTEROP_PORT=6001 node tests/interop/pusher_js.mjs

import { randomBytes } from 'node:crypto';

import {
  assert, assertEqual, connected, json, pusherClient, Recorder, run, serverSdk, step,
  subscribed, unique,
} from './lib.mjs';

run('pusher-js', async () => {
  const sdk = serverSdk();
  const alice = pusherClient({ sdk, user: { user_id: 'alice', user_info: { name: 'Alice' } } });
  const bob = pusherClient({ sdk, user: { user_id: 'bob', user_info: { name: 'Bob' } } });

  step('both clients connect');
  const [aliceSocket, bobSocket] = await Promise.all([connected(alice), connected(bob)]);
  assert(/^\d+\.\d+$/.test(aliceSocket), `socket_id has the wrong shape: ${aliceSocket}`);
  assert(aliceSocket !== bobSocket, 'two connections share a socket_id');

  await publicChannel(sdk, alice);
  await privateChannel(sdk, alice);
  await badSignatureIsRefused(sdk, alice);
  await encryptedChannel();
  await clientEvents(alice, bob);
  const presence = await presenceChannel(sdk, alice, bob);
  await socketIdExclusion(sdk, alice, bob, aliceSocket);
  await channelInfo(sdk, presence);

  alice.disconnect();
  bob.disconnect();
});

async function publicChannel(sdk, client) {
  const name = unique('interop-public');
  step(`public channel ${name}: subscribe`);
  const { recorder } = await subscribed(client, name);

  step('public: an object sent by the SDK arrives as the same object');
  await sdk.trigger(name, 'greeting', { text: 'hello', n: 1, nested: { ok: true } });
  assertEqual(await recorder.next('greeting'), { text: 'hello', n: 1, nested: { ok: true } },
    'public event data');

  step('public: a plain string arrives as that string');
  await sdk.trigger(name, 'plain', 'just text, with "quotes" and ünïcode');
  assertEqual(await recorder.next('plain'), 'just text, with "quotes" and ünïcode', 'string data');

  step('public: one trigger to two channels reaches both');
  const other = unique('interop-public');
  const { recorder: otherRecorder } = await subscribed(client, other);
  await sdk.trigger([name, other], 'fan-out', { to: 'both' });
  assertEqual(await recorder.next('fan-out'), { to: 'both' }, 'first channel of a multi-channel trigger');
  assertEqual(await otherRecorder.next('fan-out'), { to: 'both' }, 'second channel of a multi-channel trigger');

  step('public: batch trigger');
  await sdk.triggerBatch([
    { channel: name, name: 'batch-1', data: { i: 1 } },
    { channel: other, name: 'batch-2', data: { i: 2 } },
  ]);
  assertEqual(await recorder.next('batch-1'), { i: 1 }, 'first batch event');
  assertEqual(await otherRecorder.next('batch-2'), { i: 2 }, 'second batch event');

  client.unsubscribe(other);
}

async function privateChannel(sdk, client) {
  const name = unique('private-interop');
  step(`private channel ${name}: subscribe with an SDK-signed authorization`);
  const { recorder } = await subscribed(client, name);

  step('private: an event arrives');
  await sdk.trigger(name, 'secret-news', { level: 'private' });
  assertEqual(await recorder.next('secret-news'), { level: 'private' }, 'private event data');
}

async function badSignatureIsRefused(sdk, client) {
  const name = unique('private-interop-forged');
  step(`private channel ${name}: a signature made with the wrong secret is refused`);
  const forger = serverSdk({ secret: 'not-the-secret' });

  // pusher-js sends whatever the handler returns; the server must not let it in.
  const intruder = pusherClient({ sdk: forger });
  await connected(intruder);
  const connectionErrors = [];
  intruder.connection.bind('error', (error) => connectionErrors.push(error));
  const channel = intruder.subscribe(name);
  const recorder = new Recorder(channel);

  // Let a legitimate subscriber in, then publish: the intruder must see nothing.
  const { recorder: legit } = await subscribed(client, name);
  const refusal = recorder.next('pusher:subscription_error', { ms: 3000 }).catch(() => null);
  await sdk.trigger(name, 'for-members-only', { n: 1 });
  await legit.next('for-members-only');
  const refused = await refusal;
  assert(recorder.count('pusher:subscription_succeeded') === 0,
    'a private subscription signed with the wrong secret succeeded');
  assert(recorder.count('for-members-only') === 0, 'an unauthorized socket received a private event');
  assert(refused !== null || connectionErrors.length > 0,
    'the server neither sent pusher:subscription_error nor pusher:error for a forged signature');
  console.log(`  refused with: ${JSON.stringify(refused ?? connectionErrors[0])}`);
  intruder.disconnect();
  client.unsubscribe(name);
}

async function encryptedChannel() {
  // End-to-end encrypted channels: the SDK derives a per-channel key from its master
  // key, hands it to the client in the authorization and encrypts what it sends;
  // Herald only checks the private-channel signature and relays the ciphertext.
  const sdk = serverSdk({ encryptionMasterKeyBase64: randomBytes(32).toString('base64') });
  const client = pusherClient({ sdk });
  await connected(client);
  const name = unique('private-encrypted-interop');
  step(`encrypted channel ${name}: subscribe, receive and decrypt`);
  const { recorder } = await subscribed(client, name);
  await sdk.trigger(name, 'sealed', { secret: 'only the client can read this' });
  assertEqual(await recorder.next('sealed'), { secret: 'only the client can read this' },
    'decrypted data');
  client.disconnect();
}

async function clientEvents(alice, bob) {
  const open = unique('interop-client-events');
  const closed = unique('private-interop-client-events');
  step(`client events on ${closed}: relayed to others, not to the sender`);
  const { recorder: aliceOpen, channel: aliceOpenChannel } = await subscribed(alice, open);
  const { recorder: bobOpen } = await subscribed(bob, open);
  const { recorder: aliceClosed, channel: aliceClosedChannel } = await subscribed(alice, closed);
  const { recorder: bobClosed } = await subscribed(bob, closed);
  const errors = [];
  alice.connection.bind('error', (error) => errors.push(error));

  // Sent in this order by one socket, they reach bob in this order (if at all).
  assert(aliceOpenChannel.trigger('client-on-public', { n: 1 }), 'pusher-js refused to send');
  assert(aliceClosedChannel.trigger('client-typing', { typing: true }), 'pusher-js refused to send');
  assertEqual(await bobClosed.next('client-typing'), { typing: true }, 'client event at bob');
  assertEqual(bobOpen.count('client-on-public'), 0, 'client events relayed on a public channel');
  assertEqual(aliceClosed.count('client-typing'), 0, 'client events echoed to their sender');
  assertEqual(aliceOpen.count('client-on-public'), 0, 'client events echoed to their sender');
  console.log(`  client event on a public channel answered with: ${JSON.stringify(errors[0] ?? null)}`);
  alice.unsubscribe(open);
  alice.unsubscribe(closed);
  bob.unsubscribe(open);
  bob.unsubscribe(closed);
}

async function presenceChannel(sdk, alice, bob) {
  const name = unique('presence-interop');
  step(`presence channel ${name}: alice joins alone`);
  const { recorder: aliceEvents, members: first } = await subscribed(alice, name);
  assertEqual(first.count, 1, 'members when alone');
  assertEqual(first.me, { id: 'alice', info: { name: 'Alice' } }, 'members.me');
  assertEqual(first.get('alice'), { id: 'alice', info: { name: 'Alice' } }, 'alice in members');

  step('presence: bob joins; alice hears member_added, bob sees both members');
  const { recorder: bobEvents, members: second } = await subscribed(bob, name);
  assertEqual(await aliceEvents.next('pusher:member_added'), { id: 'bob', info: { name: 'Bob' } },
    'member_added');
  assertEqual(second.count, 2, 'members seen by bob');
  const seen = [];
  second.each((member) => seen.push(member));
  seen.sort((a, b) => a.id.localeCompare(b.id));
  assertEqual(seen, [
    { id: 'alice', info: { name: 'Alice' } },
    { id: 'bob', info: { name: 'Bob' } },
  ], 'members listed to bob');
  assertEqual(alice.channel(name).members.count, 2, 'members count at alice after bob joined');

  step('presence: an SDK event reaches both members');
  await sdk.trigger(name, 'roll-call', { who: 'everyone' });
  assertEqual(await aliceEvents.next('roll-call'), { who: 'everyone' }, 'presence event at alice');
  assertEqual(await bobEvents.next('roll-call'), { who: 'everyone' }, 'presence event at bob');

  step('presence: bob unsubscribes; alice hears member_removed');
  bob.unsubscribe(name);
  assertEqual(await aliceEvents.next('pusher:member_removed'), { id: 'bob', info: { name: 'Bob' } },
    'member_removed after unsubscribe');
  assertEqual(alice.channel(name).members.count, 1, 'members count after bob left');

  step('presence: a third client joins and disconnects; alice hears both');
  const carol = pusherClient({ sdk, user: { user_id: 'carol', user_info: { name: 'Carol' } } });
  await connected(carol);
  await subscribed(carol, name);
  const marker = aliceEvents.events.length;
  assertEqual(await aliceEvents.next('pusher:member_added', { test: (m) => m.id === 'carol' }),
    { id: 'carol', info: { name: 'Carol' } }, 'member_added for carol');
  carol.disconnect();
  assertEqual(
    await aliceEvents.next('pusher:member_removed', { test: (m) => m.id === 'carol', from: marker }),
    { id: 'carol', info: { name: 'Carol' } }, 'member_removed after a disconnect');
  return name;
}

async function socketIdExclusion(sdk, alice, bob, aliceSocket) {
  const name = unique('interop-exclusion');
  step(`socket_id exclusion on ${name}`);
  const { recorder: atAlice } = await subscribed(alice, name);
  const { recorder: atBob } = await subscribed(bob, name);

  // Events on one channel arrive in order, so once the second (unexcluded) event is
  // at alice, the first one would have been there too had it been sent to her.
  await sdk.trigger(name, 'not-for-alice', { n: 1 }, { socket_id: aliceSocket });
  await sdk.trigger(name, 'for-everyone', { n: 2 });
  await atBob.next('not-for-alice');
  await atBob.next('for-everyone');
  await atAlice.next('for-everyone');
  assertEqual(atAlice.count('not-for-alice'), 0, 'events delivered to the excluded socket');

  step('socket_id exclusion in a batch trigger');
  await sdk.triggerBatch([
    { channel: name, name: 'batch-not-for-alice', data: { n: 3 }, socket_id: aliceSocket },
    { channel: name, name: 'batch-for-everyone', data: { n: 4 } },
  ]);
  await atBob.next('batch-not-for-alice');
  await atAlice.next('batch-for-everyone');
  assertEqual(atAlice.count('batch-not-for-alice'), 0, 'batch events delivered to the excluded socket');
}

async function channelInfo(sdk, presence) {
  step('channel info: GET /channels lists occupied channels');
  const all = await json(await sdk.get({ path: '/channels' }));
  assert(all.channels && typeof all.channels === 'object', `no channels object: ${JSON.stringify(all)}`);
  assert(presence in all.channels, `${presence} missing from ${JSON.stringify(all)}`);

  step('channel info: presence channels with user_count');
  const counted = await json(await sdk.get({
    path: '/channels',
    params: { filter_by_prefix: 'presence-', info: 'user_count' },
  }));
  assertEqual(counted.channels[presence], { user_count: 1 }, `user_count of ${presence}`);
  for (const name of Object.keys(counted.channels)) {
    assert(name.startsWith('presence-'), `filter_by_prefix let ${name} through`);
  }

  step('channel info: GET /channels/{name}');
  const one = await json(await sdk.get({ path: `/channels/${presence}`, params: { info: 'user_count' } }));
  assertEqual(one.occupied, true, 'occupied');
  assertEqual(one.user_count, 1, 'user_count');

  const empty = await json(await sdk.get({ path: `/channels/${unique('interop-nobody')}` }));
  assertEqual(empty.occupied, false, 'occupied for a channel nobody joined');

  step('channel info: POST /events with info returns the counts of the channels');
  const triggered = await json(await sdk.trigger(presence, 'counted', {}, { info: 'user_count' }));
  assertEqual(triggered, { channels: { [presence]: { user_count: 1 } } }, 'trigger info answer');

  step('channel info: GET /channels/{name}/users');
  const users = await json(await sdk.get({ path: `/channels/${presence}/users` }));
  assertEqual(users, { users: [{ id: 'alice' }] }, 'users of the presence channel');

  step('API errors reach the SDK as RequestError with their status');
  await expectStatus(serverSdk({ secret: 'not-the-secret' }).trigger('any', 'x', {}), 401,
    'a request signed with the wrong secret');
  await expectStatus(sdk.get({ path: '/channels', params: { info: 'user_count' } }), 400,
    'user_count without filter_by_prefix=presence-');
  await expectStatus(sdk.get({ path: `/channels/${unique('interop-public')}/users` }), 400,
    'the users of a channel that is not a presence channel');
}

async function expectStatus(request, status, what) {
  try {
    const response = await request;
    throw new Error(`${what}: expected ${status}, got ${response.status}`);
  } catch (error) {
    if (error.status === undefined) throw error;
    assertEqual(error.status, status, `${what} (body: ${error.body})`);
  }
}
