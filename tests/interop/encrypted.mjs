// End-to-end encrypted channels (`private-encrypted-`) with the real libraries: the
// `pusher` Node SDK, given a master key, encrypts what it triggers and hands each
// client the channel's key (`shared_secret`) in its authorization; pusher-js (Node
// build, which bundles tweetnacl) decrypts. Herald only checks the private-channel
// signature and relays the ciphertext.
//
// Run: INTEROP_PORT=6001 node tests/interop/encrypted.mjs

import { randomBytes } from 'node:crypto';

import {
  assert, assertEqual, connected, pusherClient, Recorder, run, serverSdk, step, subscribed,
  unique,
} from './lib.mjs';
import { expectStatus, sleep } from './extras.mjs';

const masterKey = () => randomBytes(32).toString('base64');

run('encrypted channels', async () => {
  const sdk = serverSdk({ encryptionMasterKeyBase64: masterKey() });
  const name = unique('private-encrypted-interop');

  step('the SDK includes shared_secret in an encrypted channel authorization');
  const authorization = sdk.authorizeChannel('123.456', name);
  assert(typeof authorization.shared_secret === 'string' && authorization.shared_secret.length > 0,
    `no shared_secret in ${JSON.stringify(authorization)}`);

  const client = pusherClient({ sdk });
  const wire = [];
  client.connection.bind('message', (message) => wire.push(message));
  await connected(client);

  step(`pusher-js subscribes to ${name} with the SDK's authorization`);
  const { recorder } = await subscribed(client, name);

  step('an event triggered by the SDK arrives decrypted');
  const secret = { secret: 'only the client can read this', n: 42 };
  await sdk.trigger(name, 'sealed', secret);
  assertEqual(await recorder.next('sealed'), secret, 'decrypted data');

  step('on the wire it was ciphertext: {nonce, ciphertext}, without the plain text');
  const sealed = wire.find((m) => m.event === 'sealed' && m.channel === name);
  assert(sealed, 'the sealed event was not seen on the wire');
  const raw = typeof sealed.data === 'string' ? JSON.parse(sealed.data) : sealed.data;
  assertEqual(Object.keys(raw).sort(), ['ciphertext', 'nonce'], 'fields of the encrypted data');
  assert(!JSON.stringify(sealed).includes('only the client'), 'plain text on the wire');

  step('a batch with an encrypted event and a plain one: both arrive');
  const plainName = unique('interop-plain');
  const { recorder: plain } = await subscribed(client, plainName);
  await sdk.triggerBatch([
    { channel: name, name: 'sealed-batch', data: { part: 1 } },
    { channel: plainName, name: 'plain-batch', data: { part: 2 } },
  ]);
  assertEqual(await recorder.next('sealed-batch'), { part: 1 }, 'encrypted batch item');
  assertEqual(await plain.next('plain-batch'), { part: 2 }, 'plain batch item');

  step('a client whose key comes from another master key gets nothing it can read');
  const stranger = pusherClient({ sdk: serverSdk({ encryptionMasterKeyBase64: masterKey() }) });
  await connected(stranger);
  const { recorder: atStranger } = await subscribed(stranger, name);
  await sdk.trigger(name, 'sealed-again', { n: 2 });
  assertEqual(await recorder.next('sealed-again'), { n: 2 }, 'the right key still decrypts');
  await sleep(300);
  assertEqual(atStranger.count('sealed-again'), 0, 'events decrypted with the wrong key');

  step('one trigger naming an encrypted channel and another: the SDK refuses it itself');
  let thrown = null;
  try {
    await sdk.trigger([name, plainName], 'leak', { n: 3 });
  } catch (error) {
    thrown = error;
  }
  assert(thrown && /encrypted/.test(String(thrown.message)), `SDK did not refuse: ${thrown}`);

  step('and Herald answers such a request, made by hand, with 400');
  const body = await expectStatus(
    sdk.post({ path: '/events', body: { name: 'leak', channels: [name, plainName], data: '{}' } }),
    400, 'an event for an encrypted channel and another');
  assert(String(body).includes('encrypted_channel_with_others'), `400 body: ${body}`);
  await sdk.trigger(plainName, 'after', { n: 4 });
  assertEqual(await plain.next('after'), { n: 4 }, 'the next plain event');
  assertEqual(plain.count('leak'), 0, 'the refused event reached the plain channel');

  step('subscribing without a valid signature is refused');
  const forger = pusherClient({ sdk: serverSdk({ secret: 'not-the-secret', encryptionMasterKeyBase64: masterKey() }) });
  await connected(forger);
  const forged = new Recorder(forger.subscribe(name));
  const error = await forged.next('pusher:subscription_error');
  assertEqual(error.type, 'AuthError', 'subscription error type');

  for (const c of [client, stranger, forger]) c.disconnect();
});
