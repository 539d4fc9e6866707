// What every interop script needs: the server's address and credentials from the
// environment, a hard deadline, clients of the real libraries pointed at Herald, and
// waits that fail with a message saying what did not happen.
//
// Environment (defaults are those of the shipped config.toml):
//   INTEROP_HOST (127.0.0.1), INTEROP_PORT (6001), INTEROP_APP_ID (demo-app),
//   INTEROP_KEY (demo-key), INTEROP_SECRET (demo-secret).
// INTEROP_DEBUG=1 prints pusher-js's own log as it happens; otherwise the log is kept
// and printed only when the script fails.

import { randomBytes } from 'node:crypto';
import { isDeepStrictEqual, inspect } from 'node:util';

import PusherJs from 'pusher-js';
import Pusher from 'pusher';

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

/** The server under test, read from the environment. */
export const server = (() => {
  const host = process.env.INTEROP_HOST || '127.0.0.1';
  const port = Number(process.env.INTEROP_PORT || '6001');
  // These scripts only ever talk to a server on this machine.
  if (!LOOPBACK.has(host)) fail(`INTEROP_HOST must be a loopback address, not ${host}`);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    fail(`INTEROP_PORT is not a port: ${process.env.INTEROP_PORT}`);
  }
  return {
    host,
    port,
    appId: process.env.INTEROP_APP_ID || 'demo-app',
    key: process.env.INTEROP_KEY || 'demo-key',
    secret: process.env.INTEROP_SECRET || 'demo-secret',
  };
})();

/** `http://host:port`, with brackets around an IPv6 host. */
export const origin = `http://${server.host.includes(':') ? `[${server.host}]` : server.host}:${server.port}`;

const clientLog = [];
PusherJs.log = (message) => {
  if (process.env.INTEROP_DEBUG === '1') console.log(`[pusher-js] ${message}`);
  clientLog.push(message);
  if (clientLog.length > 200) clientLog.shift();
};

/** Prints `message` (and pusher-js's recent log) and exits non-zero. */
export function fail(message) {
  console.error(`FAIL: ${message}`);
  if (clientLog.length > 0) {
    console.error('--- last pusher-js log lines ---');
    for (const line of clientLog.slice(-60)) console.error(line);
  }
  process.exit(1);
}

/**
 * Runs `main` under a hard deadline and turns its outcome into the exit status:
 * 0 when it resolves, 1 with a message when it throws or the deadline passes.
 */
export function run(name, main, { seconds = 20 } = {}) {
  const deadline = setTimeout(
    () => fail(`${name}: did not finish within ${seconds} s (last step: ${currentStep})`),
    seconds * 1000,
  );
  main().then(
    () => {
      clearTimeout(deadline);
      console.log(`ok: ${name}`);
      process.exit(0);
    },
    (error) => fail(`${name}: ${error && error.stack ? error.stack : inspect(error)}`),
  );
}

let currentStep = 'start';

/** Logs the step being run, so that a failure says how far the script got. */
export function step(text) {
  currentStep = text;
  console.log(`- ${text}`);
}

/** A short random suffix, so that runs never share channels. */
export function unique(prefix) {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}

/** Throws unless `actual` deep-equals `expected`. */
export function assertEqual(actual, expected, what) {
  if (!isDeepStrictEqual(actual, expected)) {
    throw new Error(`${what}: expected ${inspect(expected, { depth: 5 })}, got ${inspect(actual, { depth: 5 })}`);
  }
}

/** Throws with `message` unless `condition` holds. */
export function assert(condition, message) {
  if (!condition) throw new Error(message);
}

/** The official `pusher` server SDK, pointed at Herald over plain HTTP. */
export function serverSdk({ secret = server.secret, encryptionMasterKeyBase64 } = {}) {
  return new Pusher({
    appId: server.appId,
    key: server.key,
    secret,
    host: server.host,
    port: String(server.port),
    useTLS: false,
    encryptionMasterKeyBase64,
  });
}

/**
 * A pusher-js client pointed at Herald. Channel authorization is done in-process by
 * the `pusher` SDK through `channelAuthorization.customHandler`, as an app's auth
 * endpoint would do it; `user` becomes the presence identity.
 */
export function pusherClient({ sdk, user, options = {} } = {}) {
  const authorizer = sdk || serverSdk();
  return new PusherJs(server.key, {
    ...clientOptions(),
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        try {
          const presence = channelName.startsWith('presence-') ? user : undefined;
          callback(null, authorizer.authorizeChannel(socketId, channelName, presence));
        } catch (error) {
          callback(error, null);
        }
      },
    },
    ...options,
  });
}

/** The pusher-js options that point a client at Herald (no cluster host, no TLS). */
export function clientOptions() {
  return {
    cluster: 'herald', // pusher-js insists on one; Herald ignores it
    wsHost: server.host,
    wsPort: server.port,
    wssPort: server.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    enableStats: false,
  };
}

/** Resolves with the socket id once `client` is connected; fails if it gives up. */
export function connected(client, ms = 5000) {
  if (client.connection.state === 'connected') return Promise.resolve(client.connection.socket_id);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`not connected within ${ms} ms (state ${client.connection.state})`)),
      ms,
    );
    client.connection.bind('state_change', ({ current }) => {
      if (current === 'connected') {
        clearTimeout(timer);
        resolve(client.connection.socket_id);
      } else if (current === 'failed' || current === 'unavailable') {
        clearTimeout(timer);
        reject(new Error(`connection ${current}`));
      }
    });
  });
}

/**
 * Records every event a channel emits, in order, so that a test can wait for one and
 * later check which others did or did not arrive.
 */
export class Recorder {
  constructor(channel) {
    this.channel = channel;
    this.events = [];
    this.waiters = [];
    channel.bind_global((event, data) => {
      this.events.push({ event, data });
      for (const waiter of [...this.waiters]) waiter();
    });
  }

  /** Resolves with the data of the first event named `event` that matches `test`. */
  next(event, { test = () => true, ms = 5000, from = 0 } = {}) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const hit = this.events.slice(from).find((e) => e.event === event && test(e.data));
        if (!hit) return false;
        this.waiters = this.waiters.filter((w) => w !== check);
        clearTimeout(timer);
        resolve(hit.data);
        return true;
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== check);
        const seen = this.events.map((e) => e.event).join(', ') || 'nothing';
        reject(new Error(`${this.channel.name}: no ${event} within ${ms} ms (saw: ${seen})`));
      }, ms);
      if (!check()) this.waiters.push(check);
    });
  }

  /** How many events named `event` arrived. */
  count(event) {
    return this.events.filter((e) => e.event === event).length;
  }
}

/** Subscribes `client` to `name` and waits for the subscription to succeed. */
export async function subscribed(client, name, ms = 5000) {
  const channel = client.subscribe(name);
  const recorder = new Recorder(channel);
  const error = recorder.next('pusher:subscription_error', { ms }).then(
    (data) => { throw new Error(`subscription to ${name} failed: ${inspect(data)}`); },
    () => new Promise(() => {}),
  );
  const members = await Promise.race([recorder.next('pusher:subscription_succeeded', { ms }), error]);
  return { channel, recorder, members };
}

/** Reads the JSON body of a `pusher` SDK response. */
export async function json(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`expected a JSON body, got ${response.status}: ${text}`);
  }
}
