// Accounts and auth through PocketBase's official JavaScript SDK.
import test from 'node:test';
import assert from 'node:assert/strict';
import { ClientResponseError } from 'pocketbase';

import { client, newUser, superuser, uniqueEmail, TARGET } from './helpers.mjs';

test('register, then authWithPassword makes the auth store valid', async () => {
  const pb = client();
  const email = uniqueEmail('register');
  const record = await pb.collection('users').create({
    email,
    password: 'password-123',
    passwordConfirm: 'password-123',
    name: 'From the SDK',
  });
  assert.match(record.id, /^[a-z0-9]{15}$/);
  assert.equal(record.name, 'From the SDK');
  assert.equal(record.password, undefined);
  assert.equal(record.tokenKey, undefined);

  const auth = await pb.collection('users').authWithPassword(email, 'password-123');
  assert.equal(typeof auth.token, 'string');
  assert.equal(auth.record.id, record.id);
  assert.equal(auth.record.email, email);
  assert.ok(pb.authStore.isValid, 'the SDK can decode the token and sees it unexpired');
  assert.equal(pb.authStore.isSuperuser, false);
  assert.equal(pb.authStore.record.id, record.id);
});

test('a superuser is recognised as one by the SDK', async () => {
  const pb = await superuser();
  assert.ok(pb.authStore.isValid);
  assert.ok(pb.authStore.isSuperuser);
  assert.equal(pb.authStore.record.collectionName, '_superusers');
});

test('authRefresh replaces the token and keeps the store valid', async () => {
  const { pb, record } = await newUser('refresh');
  const before = pb.authStore.token;
  await new Promise((resolve) => setTimeout(resolve, 5));
  const refreshed = await pb.collection('users').authRefresh();
  assert.equal(refreshed.record.id, record.id);
  assert.ok(pb.authStore.isValid);
  assert.equal(pb.authStore.token, refreshed.token);
  if (TARGET === 'gatehouse') {
    assert.notEqual(refreshed.token, before, 'Gatehouse issues a new token on refresh');
  }
});

test('a wrong password raises ClientResponseError 400 with the error envelope', async () => {
  const { email } = await newUser('wrong');
  const pb = client();
  await assert.rejects(pb.collection('users').authWithPassword(email, 'not-the-password'), (err) => {
    assert.ok(err instanceof ClientResponseError);
    assert.equal(err.status, 400);
    assert.equal(err.message, 'Failed to authenticate.');
    assert.deepEqual(err.response.data, {});
    return true;
  });
  assert.equal(pb.authStore.isValid, false);
});

test('registration errors arrive per field', async () => {
  const pb = client();
  await assert.rejects(
    pb.collection('users').create({ email: 'not-an-email', password: 'password-123', passwordConfirm: 'password-123' }),
    (err) => {
      assert.equal(err.status, 400);
      assert.equal(err.response.message, 'Failed to create record.');
      assert.equal(err.response.data.email.code, 'validation_is_email');
      return true;
    },
  );
  await assert.rejects(
    pb.collection('users').create({ email: uniqueEmail('mismatch'), password: 'password-123', passwordConfirm: 'other-pass-1' }),
    (err) => err.status === 400 && err.response.data.passwordConfirm.code === 'validation_values_mismatch',
  );
});

test('listAuthMethods reports password login', async () => {
  const methods = await client().collection('users').listAuthMethods();
  assert.equal(methods.password.enabled, true);
  assert.deepEqual(methods.password.identityFields, ['email']);
  assert.equal(typeof methods.oauth2.enabled, 'boolean');
  assert.ok(Array.isArray(methods.oauth2.providers));
});

test('logout through pb.send ends the session (Gatehouse)', { skip: TARGET !== 'gatehouse' && 'PocketBase has no logout endpoint' }, async () => {
  const { pb } = await newUser('logout');
  await pb.send('/api/collections/users/logout', { method: 'POST' });
  await assert.rejects(pb.collection('users').authRefresh(), (err) => err.status === 401);
});
