// Shared setup for the SDK suites: the server under test comes from the environment.
import PocketBase from 'pocketbase';

export const BASE_URL = process.env.BASE_URL;
export const TARGET = process.env.TARGET ?? 'gatehouse';
export const SUPERUSER_EMAIL = process.env.SUPERUSER_EMAIL;
export const SUPERUSER_PASSWORD = process.env.SUPERUSER_PASSWORD;

if (!BASE_URL || !SUPERUSER_EMAIL || !SUPERUSER_PASSWORD) {
  throw new Error('BASE_URL, SUPERUSER_EMAIL and SUPERUSER_PASSWORD must be set');
}

/** A client with auto-cancellation off, so parallel calls do not abort each other. */
export function client() {
  const pb = new PocketBase(BASE_URL);
  pb.autoCancellation(false);
  return pb;
}

/** A fresh lower-case email address, unique per call. */
export function uniqueEmail(prefix) {
  const random = Math.random().toString(36).slice(2, 10);
  return `${prefix}-${Date.now()}-${random}@example.com`;
}

/** A client logged in as the superuser. */
export async function superuser() {
  const pb = client();
  await pb.collection('_superusers').authWithPassword(SUPERUSER_EMAIL, SUPERUSER_PASSWORD);
  return pb;
}

/** Registers a user and returns a client logged in as them, with the record. */
export async function newUser(prefix = 'user', password = 'password-123') {
  const pb = client();
  const email = uniqueEmail(prefix);
  const record = await pb.collection('users').create({ email, password, passwordConfirm: password });
  await pb.collection('users').authWithPassword(email, password);
  return { pb, email, password, record };
}
