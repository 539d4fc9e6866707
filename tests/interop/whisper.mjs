// Laravel Echo whispers (client events) on a private channel between two clients:
// `whisper()` reaches the other client's `listenForWhisper()` and never the sender;
// objects and strings both arrive as sent; past 10 whispers a second the sender gets
// `pusher:error` 4301, the extra whisper reaches nobody, the connection stays up and a
// second later whispering works again. Channels are authorized in-process with the
// `pusher` SDK through pusher-js's `channelAuthorization.customHandler`, which Echo
// hands to pusher-js unchanged.
//
// Run: INTEROP_PORT=6001 node tests/interop/whisper.mjs

import Echo from 'laravel-echo';
import PusherJs from 'pusher-js';

import {
  assertEqual, clientOptions, connected, run, server, serverSdk, step, unique,
} from './lib.mjs';
import { Calls, sleep, waitFor } from './extras.mjs';

run('laravel-echo whispers', async () => {
  const sdk = serverSdk();
  const alice = echo(sdk);
  const bob = echo(sdk);
  await Promise.all([connected(alice.connector.pusher), connected(bob.connector.pusher)]);

  const room = unique('whispers');
  step(`both join private-${room}`);
  const calls = new Calls();
  const atAlice = alice.private(room)
    .listenForWhisper('typing', calls.add('alice-typing'));
  const atBob = bob.private(room)
    .listenForWhisper('typing', calls.add('bob-typing'))
    .listenForWhisper('note', calls.add('bob-note'))
    .listenForWhisper('burst', calls.add('bob-burst'));
  await Promise.all([subscribedVia(atAlice), subscribedVia(atBob)]);
  const errors = new Calls();
  alice.connector.pusher.connection.bind('error', errors.add('alice'));

  step('alice whispers an object; bob hears it, alice does not');
  atAlice.whisper('typing', { name: 'Alice', typing: true });
  assertEqual(await calls.next('bob-typing'), { name: 'Alice', typing: true }, 'whisper at bob');

  step('bob whispers back; alice hears it');
  atBob.whisper('typing', { name: 'Bob', typing: false });
  assertEqual(await calls.next('alice-typing'), { name: 'Bob', typing: false }, 'whisper at alice');
  assertEqual(calls.count('alice-typing'), 1, 'whispers alice heard (her own included?)');
  assertEqual(calls.count('bob-typing'), 1, 'whispers bob heard (his own included?)');

  step('a whisper of a plain string arrives as that string');
  atAlice.whisper('note', 'just a string');
  assertEqual(await calls.next('bob-note'), 'just a string', 'string whisper');

  // Let the one-second window of alice's earlier whispers pass.
  await sleep(1100);
  step('11 whispers in a second: 10 reach bob, alice gets pusher:error 4301 and stays up');
  for (let n = 0; n < 11; n += 1) atAlice.whisper('burst', { n });
  const error = await errors.next('alice');
  assertEqual(error.type, 'PusherError', 'error type');
  assertEqual(error.data && error.data.code, 4301, 'error code');
  await calls.next('bob-burst', 9);
  await sleep(300);
  assertEqual(calls.calls['bob-burst'].map((d) => d.n), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    'whispers that reached bob');
  assertEqual(alice.connectionStatus(), 'connected', 'alice after the rate limit');

  step('a second later alice may whisper again');
  await sleep(1100);
  atAlice.whisper('burst', { n: 'again' });
  assertEqual(await calls.next('bob-burst', 10), { n: 'again' }, 'whisper after the pause');
  await waitFor(() => alice.connectionStatus() === 'connected', 'alice still connected');

  alice.disconnect();
  bob.disconnect();
});

/** An Echo client whose private channels are authorized by the SDK, in-process. */
function echo(sdk) {
  return new Echo({
    broadcaster: 'pusher',
    Pusher: PusherJs,
    key: server.key,
    ...clientOptions(),
    auth: { headers: {} },
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        try {
          callback(null, sdk.authorizeChannel(socketId, channelName));
        } catch (error) {
          callback(error, null);
        }
      },
    },
  });
}

/** Resolves when an Echo channel's subscription succeeds, rejects on its error. */
function subscribedVia(channel, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${channel.name}: not subscribed within ${ms} ms`)), ms);
    channel.subscribed(() => { clearTimeout(timer); resolve(); });
    channel.error((error) => {
      clearTimeout(timer);
      reject(new Error(`${channel.name}: subscription error ${JSON.stringify(error)}`));
    });
  });
}
