// Laravel Echo (broadcaster 'pusher', over pusher-js) against Herald, set up the way a
// Laravel app sets it up: Echo builds the pusher-js client from its own options, and
// private and presence channels are authorized by an HTTP auth endpoint (here a tiny
// loopback server standing in for Laravel's /broadcasting/auth, signing with the
// official `pusher` SDK). Events are sent by that SDK, as Laravel's broadcaster does.
//
// Run: INTEROP_PORT=6001 node tests/interop/echo.mjs

import { createServer } from 'node:http';

import Echo from 'laravel-echo';
import PusherJs from 'pusher-js';

import {
  assert, assertEqual, clientOptions, connected, run, server, serverSdk, step, unique,
} from './lib.mjs';

// The users the stand-in auth endpoint knows, by bearer token.
const USERS = {
  'token-alice': { user_id: '1', user_info: { id: 1, name: 'Alice' } },
  'token-bob': { user_id: '2', user_info: { id: 2, name: 'Bob' } },
};

run('laravel-echo', async () => {
  const sdk = serverSdk();
  const auth = await startAuthEndpoint(sdk);
  try {
    await scenario(sdk, auth);
  } finally {
    auth.server.close();
  }
});

async function scenario(sdk, auth) {
  const alice = echo(auth.url, 'token-alice');
  const bob = echo(auth.url, 'token-bob');
  step('both Echo clients connect');
  await Promise.all([connected(alice.connector.pusher), connected(bob.connector.pusher)]);
  assert(/^\d+\.\d+$/.test(alice.socketId()), `Echo socketId() is ${alice.socketId()}`);
  assertEqual(alice.connectionStatus(), 'connected', 'Echo connectionStatus()');

  await eventNames(sdk, alice);
  await privateChannel(sdk, alice, auth);
  await presenceChannel(sdk, alice, bob);
  await toOthers(sdk, alice, bob);

  alice.disconnect();
  bob.disconnect();
}

/** An Echo instance as a Laravel front end would create it, logged in as `token`. */
function echo(authEndpoint, token) {
  return new Echo({
    broadcaster: 'pusher',
    Pusher: PusherJs,
    key: server.key,
    ...clientOptions(),
    authEndpoint,
    bearerToken: token,
    // Echo's default `auth` object is shared by every Echo instance in a process and
    // Echo writes the bearer token into it, so give each instance its own.
    auth: { headers: {} },
  });
}

async function eventNames(sdk, client) {
  const name = unique('orders');
  step(`Echo channel ${name}: listen() before subscription completes`);
  const got = collector();
  client.channel(name)
    .listen('OrderShipped', got.add('namespaced'))
    .listen('.order.shipped', got.add('dotted'))
    .listen('\\Custom\\Escaped', got.add('backslashed'));
  await subscribedVia(client.channel(name));

  step('Echo: a bare event name gets the App\\Events namespace on the wire');
  await sdk.trigger(name, 'App\\Events\\OrderShipped', { order: { id: 7 } });
  assertEqual(await got.next('namespaced'), { order: { id: 7 } }, 'namespaced event');

  step('Echo: a name starting with "." is used as is');
  await sdk.trigger(name, 'order.shipped', { order: { id: 8 } });
  assertEqual(await got.next('dotted'), { order: { id: 8 } }, 'dot-prefixed event');

  step('Echo: a name starting with "\\" is used as is, without its first character');
  await sdk.trigger(name, 'Custom\\Escaped', { ok: true });
  assertEqual(await got.next('backslashed'), { ok: true }, 'backslash-prefixed event');

  step('Echo: the un-namespaced name does not reach a namespaced listener');
  await sdk.trigger(name, 'OrderShipped', { wrong: true });
  await sdk.trigger(name, 'order.shipped', { order: { id: 9 } });
  assertEqual(await got.next('dotted', 1), { order: { id: 9 } }, 'second dot-prefixed event');
  assertEqual(got.count('namespaced'), 1, 'namespaced listener calls');

  client.leaveChannel(name);
}

async function privateChannel(sdk, client, auth) {
  const name = unique('user');
  step(`Echo private(${name}): authorized by the HTTP auth endpoint`);
  const before = auth.requests.length;
  const got = collector();
  const channel = client.private(name).listen('.notice', got.add('notice'));
  await subscribedVia(channel);
  const request = auth.requests.slice(before).find((r) => r.channel === `private-${name}`);
  assert(request, `no auth request for private-${name}`);
  assertEqual(request.token, 'token-alice', 'bearer token sent to the auth endpoint');
  assertEqual(request.socketId, client.socketId(), 'socket_id sent to the auth endpoint');

  await sdk.trigger(`private-${name}`, 'notice', { text: 'only for you' });
  assertEqual(await got.next('notice'), { text: 'only for you' }, 'private event');
  client.leave(name);
}

async function presenceChannel(sdk, alice, bob) {
  const room = unique('chat');
  step(`Echo join(${room}): here() for the first member`);
  const atAlice = collector();
  alice.join(room)
    .here(atAlice.add('here'))
    .joining(atAlice.add('joining'))
    .leaving(atAlice.add('leaving'))
    .listen('.message', atAlice.add('message'))
    .listenForWhisper('typing', atAlice.add('whisper'));
  assertEqual(await atAlice.next('here'), [{ id: 1, name: 'Alice' }], 'here() for alice alone');

  step('Echo: a second member joins; here() lists both and joining() fires');
  const atBob = collector();
  const bobRoom = bob.join(room).here(atBob.add('here')).listen('.message', atBob.add('message'));
  const here = await atBob.next('here');
  here.sort((a, b) => a.id - b.id);
  assertEqual(here, [{ id: 1, name: 'Alice' }, { id: 2, name: 'Bob' }], 'here() for bob');
  assertEqual(await atAlice.next('joining'), { id: 2, name: 'Bob' }, 'joining()');

  step('Echo: an SDK event on the presence channel reaches both');
  await sdk.trigger(`presence-${room}`, 'message', { body: 'hi all' });
  assertEqual(await atAlice.next('message'), { body: 'hi all' }, 'presence event at alice');
  assertEqual(await atBob.next('message'), { body: 'hi all' }, 'presence event at bob');

  step('Echo: whisper() is a client event relayed to the other member');
  bobRoom.whisper('typing', { typing: true });
  assertEqual(await atAlice.next('whisper'), { typing: true }, 'whisper from bob');

  step('Echo: leave() makes leaving() fire at the other member');
  bob.leave(room);
  assertEqual(await atAlice.next('leaving'), { id: 2, name: 'Bob' }, 'leaving()');
  alice.leave(room);
}

async function toOthers(sdk, alice, bob) {
  const name = unique('feed');
  step(`Echo: broadcast()->toOthers() (socket_id = Echo.socketId()) on ${name}`);
  const atAlice = collector();
  const atBob = collector();
  const aliceChannel = alice.channel(name).listen('.post', atAlice.add('post'));
  const bobChannel = bob.channel(name).listen('.post', atBob.add('post'));
  await Promise.all([subscribedVia(aliceChannel), subscribedVia(bobChannel)]);

  // Laravel forwards the X-Socket-ID header Echo adds to its requests as socket_id.
  await sdk.trigger(name, 'post', { n: 1 }, { socket_id: alice.socketId() });
  await sdk.trigger(name, 'post', { n: 2 });
  assertEqual(await atBob.next('post'), { n: 1 }, 'first post at bob');
  assertEqual(await atBob.next('post', 1), { n: 2 }, 'second post at bob');
  assertEqual(await atAlice.next('post'), { n: 2 }, 'first post to reach alice');
  assertEqual(atAlice.count('post'), 1, 'posts at alice, the excluded sender');
}

/** Resolves when an Echo channel's subscription succeeds, rejects on its error. */
function subscribedVia(channel, ms = 5000) {
  return new Promise((resolve, reject) => {
    if (channel.subscription && channel.subscription.subscribed) return resolve();
    const timer = setTimeout(() => reject(new Error(`${channel.name}: not subscribed within ${ms} ms`)), ms);
    channel.subscribed(() => { clearTimeout(timer); resolve(); });
    channel.error((error) => {
      clearTimeout(timer);
      reject(new Error(`${channel.name}: subscription error ${JSON.stringify(error)}`));
    });
  });
}

/** Callbacks that record their calls under a label, and waits on those calls. */
function collector() {
  const calls = {};
  const waiters = [];
  return {
    add(label) {
      calls[label] = [];
      return (value) => {
        calls[label].push(value);
        for (const wake of [...waiters]) wake();
      };
    },
    count(label) {
      return calls[label].length;
    },
    // The `index`th call (from 0) of the callback labelled `label`.
    next(label, index = 0, ms = 5000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (calls[label].length <= index) return false;
          waiters.splice(waiters.indexOf(check), 1);
          clearTimeout(timer);
          resolve(calls[label][index]);
          return true;
        };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(check), 1);
          reject(new Error(`no call ${index + 1} of ${label} within ${ms} ms (calls: ${JSON.stringify(calls)})`));
        }, ms);
        waiters.push(check);
        check();
      });
    },
  };
}

/**
 * A loopback stand-in for Laravel's /broadcasting/auth: it reads the form pusher-js
 * posts, identifies the user by bearer token, and answers with the `pusher` SDK's
 * authorization, as Laravel's Pusher broadcaster does.
 */
function startAuthEndpoint(sdk) {
  const requests = [];
  const httpServer = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk) => { body += chunk; });
    request.on('end', () => {
      const form = new URLSearchParams(body);
      const token = (request.headers.authorization || '').replace(/^Bearer /, '');
      const channel = form.get('channel_name');
      const socketId = form.get('socket_id');
      requests.push({ token, channel, socketId });
      const user = USERS[token];
      if (!user || !channel || !socketId) {
        response.writeHead(403, { 'content-type': 'application/json' });
        response.end('{"message":"forbidden"}');
        return;
      }
      const presence = channel.startsWith('presence-') ? user : undefined;
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify(sdk.authorizeChannel(socketId, channel, presence)));
    });
  });
  return new Promise((resolve, reject) => {
    httpServer.once('error', reject);
    httpServer.listen(0, '127.0.0.1', () => {
      const { port } = httpServer.address();
      resolve({ server: httpServer, url: `http://127.0.0.1:${port}/broadcasting/auth`, requests });
    });
  });
}
