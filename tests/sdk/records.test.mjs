// Collections and records through PocketBase's official JavaScript SDK: list queries,
// pagination helpers, rules, errors and batches. Every case passes against the real
// PocketBase too (tests/sdk/against-pocketbase.sh).
import test, { before } from 'node:test';
import assert from 'node:assert/strict';
import { ClientResponseError } from 'pocketbase';

import { client, newUser, superuser } from './helpers.mjs';

const suffix = Math.random().toString(36).slice(2, 8);
const AUTHORS = `sdk_authors_${suffix}`;
const POSTS = `sdk_posts_${suffix}`;
const NOTES = `sdk_notes_${suffix}`;
const SEEDED = 250;

let admin;
let authors;

before(async () => {
  admin = await superuser();
  const authorsCollection = await admin.collections.create({
    name: AUTHORS,
    type: 'base',
    listRule: '',
    viewRule: '',
    fields: [{ name: 'name', type: 'text', required: true }],
  });
  assert.equal(authorsCollection.name, AUTHORS);
  await admin.collections.create({
    name: POSTS,
    type: 'base',
    listRule: '',
    viewRule: '',
    createRule: '',
    updateRule: '',
    deleteRule: '',
    fields: [
      { name: 'title', type: 'text', required: true },
      { name: 'rank', type: 'number' },
      { name: 'author', type: 'relation', collectionId: authorsCollection.id, maxSelect: 1 },
    ],
    indexes: [`CREATE INDEX idx_${POSTS}_rank ON ${POSTS} (rank)`],
  });
  await admin.collections.create({
    name: NOTES,
    type: 'base',
    listRule: 'owner = @request.auth.id',
    viewRule: 'owner = @request.auth.id',
    createRule: "@request.auth.id != '' && owner = @request.auth.id",
    updateRule: 'owner = @request.auth.id',
    deleteRule: 'owner = @request.auth.id',
    fields: [
      { name: 'text', type: 'text', max: 20 },
      { name: 'owner', type: 'relation', collectionId: '_pb_users_auth_', maxSelect: 1 },
    ],
  });

  authors = await Promise.all(
    ['Ada', 'Grace'].map((name) => admin.collection(AUTHORS).create({ name })),
  );
  for (let start = 0; start < SEEDED; start += 50) {
    const batch = admin.createBatch();
    for (let rank = start; rank < Math.min(start + 50, SEEDED); rank += 1) {
      batch.collection(POSTS).create({
        title: `post ${String(rank).padStart(3, '0')}`,
        rank,
        author: authors[rank % 2].id,
      });
    }
    await batch.send();
  }
});

test('collections.create made the collections with their fields and rules', async () => {
  const posts = await admin.collections.getOne(POSTS);
  assert.equal(posts.type, 'base');
  assert.equal(posts.listRule, '');
  const fields = Object.fromEntries(posts.fields.map((field) => [field.name, field.type]));
  assert.equal(fields.id, 'text');
  assert.equal(fields.title, 'text');
  assert.equal(fields.rank, 'number');
  assert.equal(fields.author, 'relation');
  const notes = await admin.collections.getOne(NOTES);
  assert.equal(notes.createRule, "@request.auth.id != '' && owner = @request.auth.id");
});

test('getList filters, sorts, expands and reports totals', async () => {
  const pb = client();
  const page = await pb.collection(POSTS).getList(2, 10, {
    filter: 'rank >= 100 && rank < 200',
    sort: '-rank',
    expand: 'author',
  });
  assert.equal(page.page, 2);
  assert.equal(page.perPage, 10);
  assert.equal(page.totalItems, 100);
  assert.equal(page.totalPages, 10);
  assert.deepEqual(
    page.items.map((item) => item.rank),
    [189, 188, 187, 186, 185, 184, 183, 182, 181, 180],
  );
  assert.equal(page.items[0].expand.author.name, 'Grace');
  assert.equal(page.items[1].expand.author.name, 'Ada');

  const skipped = await pb.collection(POSTS).getList(1, 5, { filter: 'rank < 20', skipTotal: true });
  assert.equal(skipped.totalItems, -1);
  assert.equal(skipped.totalPages, -1);
  assert.equal(skipped.items.length, 5);

  const filtered = await pb.collection(POSTS).getList(1, 50, {
    filter: pb.filter('author = {:author} && title ~ {:text}', { author: authors[0].id, text: 'post 01' }),
    sort: 'rank',
  });
  assert.deepEqual(
    filtered.items.map((item) => item.rank),
    [10, 12, 14, 16, 18],
  );
});

test('getFullList walks every page', async () => {
  const pb = client();
  const all = await pb.collection(POSTS).getFullList({ batch: 60, sort: 'rank', fields: 'id,rank' });
  assert.equal(all.length, SEEDED);
  assert.deepEqual(
    all.map((item) => item.rank),
    Array.from({ length: SEEDED }, (_, rank) => rank),
  );
  assert.deepEqual(Object.keys(all[0]).sort(), ['id', 'rank']);
});

test('getFirstListItem finds one match, or raises a 404', async () => {
  const pb = client();
  const found = await pb.collection(POSTS).getFirstListItem('rank = 42', { expand: 'author' });
  assert.equal(found.title, 'post 042');
  assert.equal(found.expand.author.name, 'Ada');
  await assert.rejects(pb.collection(POSTS).getFirstListItem('rank = 100000'), (err) => {
    assert.ok(err instanceof ClientResponseError);
    assert.equal(err.status, 404);
    return true;
  });
});

test('create, update and delete follow the rules', async () => {
  const alice = await newUser('notes-alice');
  const bob = await newUser('notes-bob');
  const guest = client();

  await assert.rejects(
    guest.collection(NOTES).create({ text: 'anonymous', owner: alice.record.id }),
    (err) => err.status === 400,
  );
  await assert.rejects(
    bob.pb.collection(NOTES).create({ text: 'as alice', owner: alice.record.id }),
    (err) => err.status === 400,
  );

  const note = await alice.pb.collection(NOTES).create({ text: 'mine', owner: alice.record.id });
  assert.equal(note.owner, alice.record.id);
  const updated = await alice.pb.collection(NOTES).update(note.id, { text: 'still mine' });
  assert.equal(updated.text, 'still mine');

  await assert.rejects(bob.pb.collection(NOTES).update(note.id, { text: 'taken' }), (err) => err.status === 404);
  await assert.rejects(bob.pb.collection(NOTES).delete(note.id), (err) => err.status === 404);
  await assert.rejects(bob.pb.collection(NOTES).getOne(note.id), (err) => err.status === 404);
  const bobsView = await bob.pb.collection(NOTES).getList(1, 10);
  assert.equal(bobsView.totalItems, 0, 'the list rule hides the note from bob');

  assert.equal(await alice.pb.collection(NOTES).delete(note.id), true);
  await assert.rejects(alice.pb.collection(NOTES).getOne(note.id), (err) => err.status === 404);
});

test('a validation failure raises ClientResponseError with per-field data', async () => {
  const { pb, record } = await newUser('invalid');
  await assert.rejects(
    pb.collection(NOTES).create({ text: 'far too long for twenty characters', owner: record.id }),
    (err) => {
      assert.ok(err instanceof ClientResponseError);
      assert.equal(err.status, 400);
      assert.equal(err.isAbort, false);
      assert.equal(err.url, `${pb.baseURL}/api/collections/${NOTES}/records`);
      assert.equal(err.response.status, 400);
      assert.equal(err.response.message, 'Failed to create record.');
      assert.equal(err.response.data.text.code, 'validation_max_text_constraint');
      assert.equal(err.message, 'Failed to create record.');
      return true;
    },
  );
  await assert.rejects(pb.collection(POSTS).create({ rank: 1 }), (err) => {
    assert.equal(err.status, 400);
    assert.equal(err.response.data.title.code, 'validation_required');
    return true;
  });
});

test('a batch runs every request, in order, with the caller', async () => {
  const { pb, record } = await newUser('batch');
  const batch = pb.createBatch();
  batch.collection(NOTES).create({ id: `batchnote${suffix}`, text: 'first', owner: record.id });
  batch.collection(NOTES).update(`batchnote${suffix}`, { text: 'changed' });
  batch.collection(NOTES).upsert({ id: `batchnewx${suffix}`, text: 'upserted', owner: record.id });
  batch.collection(NOTES).delete(`batchnewx${suffix}`);
  const results = await batch.send();
  assert.deepEqual(
    results.map((result) => result.status),
    [200, 200, 200, 204],
  );
  assert.equal(results[1].body.text, 'changed');
  assert.equal(results[2].body.id, `batchnewx${suffix}`);
  assert.equal(results[3].body, null);
  const kept = await pb.collection(NOTES).getFullList();
  assert.deepEqual(
    kept.map((note) => note.text),
    ['changed'],
  );
});

test('a failing batch request rolls back the whole batch', async () => {
  const { pb, record } = await newUser('batch-fail');
  const batch = pb.createBatch();
  batch.collection(NOTES).create({ text: 'kept?', owner: record.id });
  batch.collection(NOTES).create({ text: 'this text is longer than twenty', owner: record.id });
  await assert.rejects(batch.send(), (err) => {
    assert.ok(err instanceof ClientResponseError);
    assert.equal(err.status, 400);
    assert.equal(err.response.message, 'Batch transaction failed.');
    const failed = err.response.data.requests['1'];
    assert.equal(failed.code, 'batch_request_failed');
    assert.equal(failed.response.status, 400);
    assert.equal(failed.response.data.text.code, 'validation_max_text_constraint');
    assert.equal(err.response.data.requests['0'], undefined);
    return true;
  });
  const list = await pb.collection(NOTES).getList(1, 10);
  assert.equal(list.totalItems, 0, 'the first create was rolled back');

  const guestBatch = client().createBatch();
  guestBatch.collection(NOTES).create({ text: 'guest', owner: record.id });
  await assert.rejects(guestBatch.send(), (err) => {
    assert.equal(err.response.data.requests['0'].response.status, 400);
    return true;
  });
});
