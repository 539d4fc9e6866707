// Helpers shared by the scripts for the later parts of the protocol (encrypted.mjs,
// users.mjs, cache.mjs, whisper.mjs, subscription_count.mjs): bounded waits on a
// condition, on a connection state, and on calls of a callback.

import { inspect } from 'node:util';

import { assertEqual, pusherClient } from './lib.mjs';

/** Resolves once `condition()` is true; rejects after `ms` saying `what` did not happen. */
export function waitFor(condition, what, ms = 5000) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const check = () => {
      if (condition()) return resolve();
      if (Date.now() - started >= ms) return reject(new Error(`${what}: not within ${ms} ms`));
      setTimeout(check, 20);
    };
    check();
  });
}

/** Resolves after `ms`. */
export function sleep(ms) {
  return new Promise((resolve) => { setTimeout(resolve, ms); });
}

/** Resolves when `client`'s connection reaches `state`; rejects after `ms`. */
export function reachesState(client, state, ms = 5000) {
  return waitFor(() => client.connection.state === state,
    `connection state ${state} (now ${client.connection.state})`, ms);
}

/**
 * Records the calls of callbacks made with `add(label)`, and waits on them:
 * `next(label, index)` resolves with the argument of the `index`th call (from 0).
 */
export class Calls {
  constructor() {
    this.calls = {};
  }

  add(label) {
    this.calls[label] = this.calls[label] || [];
    return (value) => { this.calls[label].push(value); };
  }

  count(label) {
    return (this.calls[label] || []).length;
  }

  async next(label, index = 0, ms = 5000) {
    await waitFor(() => this.count(label) > index,
      `call ${index + 1} of ${label} (calls so far: ${inspect(this.calls, { depth: 4 })})`, ms);
    return this.calls[label][index];
  }
}

/** Awaits `request` (a `pusher` SDK promise) and requires it to fail with `status`. */
export async function expectStatus(request, status, what) {
  let response;
  try {
    response = await request;
  } catch (error) {
    if (error.status === undefined) throw error;
    assertEqual(error.status, status, `${what} (body: ${error.body})`);
    return error.body;
  }
  throw new Error(`${what}: expected ${status}, got ${response.status}`);
}

/**
 * A pusher-js client that signs in as `user` ({id, user_info?, watchlist?}) through
 * `userAuthentication.customHandler`, with the `pusher` SDK's `authenticateUser` as an
 * app's user-auth endpoint would do it.
 */
export function userClient(sdk, user, signer = sdk) {
  return pusherClient({
    sdk,
    options: {
      userAuthentication: {
        customHandler: ({ socketId }, callback) => {
          try {
            callback(null, signer.authenticateUser(socketId, user));
          } catch (error) {
            callback(error, null);
          }
        },
      },
    },
  });
}

/** Signs `client` in and waits until its `#server-to-user-` channel is subscribed. */
export async function signedIn(client, id) {
  client.signin();
  await waitFor(() => client.user.user_data && client.user.user_data.id === id,
    `pusher:signin_success for ${id}`);
  await waitFor(() => client.user.serverToUserChannel && client.user.serverToUserChannel.subscribed,
    `subscription to #server-to-user-${id}`);
}
