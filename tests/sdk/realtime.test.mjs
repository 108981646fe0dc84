// Realtime (server-sent events) through PocketBase's official JavaScript SDK.
import test from 'node:test';
import assert from 'node:assert/strict';
import { EventSource } from 'eventsource';

import { client, newUser, superuser } from './helpers.mjs';

// Node 20 has no EventSource; the SDK looks for the global one.
globalThis.EventSource = EventSource;

/** Collects events in arrival order; `next()` waits for the next one. */
function inbox() {
  const queued = [];
  const waiting = [];
  return {
    push(event) {
      const resolve = waiting.shift();
      if (resolve) resolve(event);
      else queued.push(event);
    },
    next() {
      if (queued.length) return Promise.resolve(queued.shift());
      return new Promise((resolve) => waiting.push(resolve));
    },
  };
}

function uniqueName(prefix) {
  return `${prefix}_${Date.now()}_${Math.random().toString(36).slice(2, 8)}`;
}

async function createCollection(su, name, rules) {
  return su.collections.create({
    name,
    type: 'base',
    listRule: '',
    viewRule: '',
    createRule: '',
    updateRule: '',
    deleteRule: '',
    ...rules,
    fields: [
      { name: 'title', type: 'text' },
      { name: 'owner', type: 'text' },
    ],
  });
}

test('subscribe to a collection and to a record: create, update and delete arrive', async () => {
  const su = await superuser();
  const posts = uniqueName('rt_posts');
  const marks = uniqueName('rt_marks');
  await createCollection(su, posts);
  await createCollection(su, marks);

  const pb = client();
  const all = inbox();
  const unsubscribeAll = await pb.collection(posts).subscribe('*', (e) => all.push(e));

  const created = await su.collection(posts).create({ title: 'hello' });
  let event = await all.next();
  assert.equal(event.action, 'create');
  assert.equal(event.record.id, created.id);
  assert.equal(event.record.title, 'hello');
  assert.equal(event.record.collectionName, posts);

  const one = inbox();
  await pb.collection(posts).subscribe(created.id, (e) => one.push(e));
  await su.collection(posts).update(created.id, { title: 'changed' });
  for (const box of [all, one]) {
    event = await box.next();
    assert.equal(event.action, 'update');
    assert.equal(event.record.id, created.id);
    assert.equal(event.record.title, 'changed');
  }

  await su.collection(posts).delete(created.id);
  for (const box of [all, one]) {
    event = await box.next();
    assert.equal(event.action, 'delete');
    assert.equal(event.record.id, created.id);
    assert.equal(event.record.title, 'changed');
  }

  // After unsubscribing, changes of the collection no longer arrive: the next event
  // on the client is a later change in another collection.
  await unsubscribeAll();
  await pb.collection(posts).unsubscribe();
  const marker = inbox();
  await pb.collection(marks).subscribe('*', (e) => marker.push(e));
  await pb.collection(posts).subscribe('*', (e) => marker.push(e));
  await pb.collection(posts).unsubscribe('*');
  await su.collection(posts).create({ title: 'unseen' });
  const mark = await su.collection(marks).create({ title: 'marker' });
  event = await marker.next();
  assert.equal(event.record.id, mark.id);
  await pb.realtime.unsubscribe();
});

test('a guest does not receive a record its list rule hides; the owner does', async () => {
  const su = await superuser();
  const notes = uniqueName('rt_notes');
  const marks = uniqueName('rt_marks');
  const ownerOnly = 'owner = @request.auth.id';
  await createCollection(su, notes, { listRule: ownerOnly, viewRule: ownerOnly });
  await createCollection(su, marks);

  const { pb: owner, record: user } = await newUser('realtime');
  const ownerInbox = inbox();
  await owner.collection(notes).subscribe('*', (e) => ownerInbox.push(e));

  const guest = client();
  const guestInbox = inbox();
  await guest.collection(notes).subscribe('*', (e) => guestInbox.push(e));
  await guest.collection(marks).subscribe('*', (e) => guestInbox.push(e));

  const note = await su.collection(notes).create({ title: 'private', owner: user.id });
  const mark = await su.collection(marks).create({ title: 'marker' });

  const seen = await ownerInbox.next();
  assert.equal(seen.action, 'create');
  assert.equal(seen.record.id, note.id);

  const first = await guestInbox.next();
  assert.equal(first.record.id, mark.id, 'the hidden note never reached the guest');

  await owner.realtime.unsubscribe();
  await guest.realtime.unsubscribe();
});
