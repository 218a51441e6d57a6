// Socket.IO on a real gateway, with the official socket.io-client: refused without a valid token, private
// rooms per user, and replay of missed events after a reconnect.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { io } from 'socket.io-client';
import { Workspace, eventually, postJob } from './harness.js';

let ws;
let gateway;
const sockets = [];

before(async () => {
  ws = new Workspace();
  const token = ws.addEngine('shared', 'alice');
  ws.allow('shared', 'bob');
  gateway = await ws.startGateway();
  ws.startEngine(gateway.base, 'shared', token, 2);
});

after(async () => {
  for (const socket of sockets) socket.close();
  await ws.close();
});

/** A client that records every event; resolves once connected, or rejects with the connect error. */
function connect(auth) {
  const socket = io(gateway.base, { auth, transports: ['websocket'], reconnection: false, forceNew: true });
  sockets.push(socket);
  socket.seen = [];
  socket.onAny((event, data) => socket.seen.push({ event, data }));
  return new Promise((resolve, reject) => {
    socket.on('connect', () => resolve(socket));
    socket.on('connect_error', (error) => reject(error));
  });
}

async function refusal(auth) {
  try {
    const socket = await connect(auth);
    socket.close();
  } catch (error) {
    return error.message;
  }
  return null;
}

test('a connection without a valid access token is refused', async () => {
  assert.match(await refusal(undefined), /^missing_token:/);
  assert.match(await refusal({ token: '' }), /^invalid_token:/);
  assert.match(await refusal({ token: 'not.a.jwt' }), /^invalid_token:/);
  // Signed by the gateway's key, but tampered with: the signature no longer matches.
  const real = ws.mintToken('alice');
  const [header, , signature] = real.split('.');
  const forged = Buffer.from(JSON.stringify({ sub: 'mallory', exp: 4102444800 })).toString('base64url');
  assert.match(await refusal({ token: `${header}.${forged}.${signature}` }), /^invalid_token:/);
  const expired = ws.mintToken('alice', '1s');
  await new Promise((resolve) => setTimeout(resolve, 2_100));
  assert.match(await refusal({ token: expired }), /^token_expired:/);
});

test('each user receives only the events of their own jobs, live, up to the final state', async () => {
  const alice = ws.mintToken('alice');
  const bob = ws.mintToken('bob');
  const aliceSocket = await connect({ token: alice });
  const bobSocket = await connect({ token: bob });
  const arrivals = new Map();
  aliceSocket.onAny((event, data) => arrivals.set(`${event}:${data?.status}`, performance.now()));
  const sent = performance.now();
  const a = await postJob(gateway.base, alice, { engine: 'shared', kind: 'echo', payload: { who: 'alice' } }, 'a-1');
  const answered = performance.now();
  const b = await postJob(gateway.base, bob, { engine: 'shared', kind: 'sleep', payload: { ms: 50 } }, 'b-1');
  assert.equal(a.status, 201);
  assert.equal(b.status, 201);
  const finalOf = (socket, id) =>
    socket.seen.find((e) => e.event === 'job.updated' && e.data.id === id && e.data.status === 'succeeded');
  const aliceFinal = await eventually('alice sees her job succeed', () => finalOf(aliceSocket, a.body.id));
  await eventually('bob sees his job succeed', () => finalOf(bobSocket, b.body.id));
  assert.deepEqual(aliceFinal.data.result, { who: 'alice' }, 'the final event carries the result');
  const ms = (key) => (arrivals.has(key) ? `${(arrivals.get(key) - sent).toFixed(1)} ms` : 'not seen');
  console.log(
    `live: POST answered after ${(answered - sent).toFixed(1)} ms; job.created after ${ms('job.created:queued')},` +
      ` succeeded after ${ms('job.updated:succeeded')} (debug build)`,
  );
  assert.equal(aliceFinal.data.payload, undefined, 'an update carries only what changed');
  assert.deepEqual(
    [aliceFinal.data.kind, aliceFinal.data.enqueued_at],
    ['echo', a.body.enqueued_at],
    'an update carries what filters and counts need: the kind and when the job was stored',
  );
  const created = aliceSocket.seen.find((e) => e.event === 'job.created' && e.data.id === a.body.id);
  assert.ok(created, 'job.created was sent');
  assert.equal(created.data.kind, 'echo');
  // Events tell committed states: a claim that reached the writer with bob's enqueue shares its commit, and then
  // the job is first seen (created) already running, never queued.
  const running = bobSocket.seen.find(
    (e) => ['job.created', 'job.updated'].includes(e.event) && e.data.id === b.body.id && e.data.status === 'running',
  );
  assert.ok(running, 'bob saw his job running');
  const jobIds = (socket) => new Set(socket.seen.filter((e) => e.event.startsWith('job.')).map((e) => e.data.id));
  assert.deepEqual([...jobIds(aliceSocket)], [a.body.id], 'alice saw nothing of bob');
  assert.deepEqual([...jobIds(bobSocket)], [b.body.id], 'bob saw nothing of alice');
  aliceSocket.close();
  bobSocket.close();
});

test('a retried job comes back live and a deleted one is announced to its user only', async () => {
  const alice = ws.mintToken('alice');
  const bob = ws.mintToken('bob');
  const aliceSocket = await connect({ token: alice });
  const bobSocket = await connect({ token: bob });
  const later = { engine: 'shared', kind: 'echo', run_at: '2999-01-01T00:00:00Z' };
  const job = await postJob(gateway.base, alice, later, 'del-1');
  assert.equal(job.status, 201);
  const call = (method, path) =>
    fetch(`${gateway.base}${path}`, { method, headers: { authorization: `Bearer ${alice}` } });
  assert.equal((await call('POST', `/jobs/${job.body.id}/cancel`)).status, 200);
  assert.equal((await call('POST', `/jobs/${job.body.id}/retry`)).status, 200);
  // A retry runs it now: the engine picks it up and it succeeds, all of it seen live after the cancel.
  await eventually('alice sees the retried job run to success', () =>
    aliceSocket.seen.find(
      (e, i) =>
        e.event === 'job.updated' &&
        e.data.id === job.body.id &&
        e.data.status === 'succeeded' &&
        aliceSocket.seen.slice(0, i).some((p) => p.data?.id === job.body.id && p.data?.status === 'cancelled'),
    ),
  );
  assert.equal((await call('DELETE', `/jobs/${job.body.id}`)).status, 204);
  const deleted = await eventually('alice hears the deletion', () =>
    aliceSocket.seen.find((e) => e.event === 'job.deleted' && e.data.id === job.body.id),
  );
  assert.deepEqual(
    { engine: deleted.data.engine, status: deleted.data.status, cursor: typeof deleted.data.cursor },
    { engine: 'shared', status: 'succeeded', cursor: 'string' },
  );
  assert.ok(!bobSocket.seen.some((e) => e.data?.id === job.body.id), 'bob hears nothing of it');
  aliceSocket.close();
  bobSocket.close();
});

test('a reconnecting client gets what it missed since its cursor, and a reset for a cursor it cannot serve', async () => {
  const token = ws.mintToken('bob');
  const watcher = await connect({ token: ws.mintToken('alice') }); // keeps the feed live while bob is away
  const first = await connect({ token });
  const { cursor } = await first.emitWithAck('sync', {});
  assert.match(cursor, /^[0-9a-f]{8}\.\d+$/);
  first.close();
  const missed = await postJob(gateway.base, token, { engine: 'shared', kind: 'echo', payload: { n: 1 } }, 'b-missed');
  assert.equal(missed.status, 201);
  const other = await postJob(gateway.base, ws.mintToken('alice'), { engine: 'shared', kind: 'echo', payload: {} }, 'a-other');
  assert.equal(other.status, 201);
  await eventually('the missed job finishes', () =>
    watcher.seen.find((e) => e.data?.id === other.body.id && e.data.status === 'succeeded'),
  );
  const again = await connect({ token });
  const replay = await eventually('bob’s missed job to reach its final state in the replay', async () => {
    const answer = await again.emitWithAck('sync', { cursor });
    return (answer.reset || answer.events.at(-1)?.data.status === 'succeeded') && answer;
  });
  assert.equal(replay.reset, false);
  const ids = new Set(replay.events.map((e) => e.data.id));
  assert.deepEqual([...ids], [missed.body.id], 'only bob’s missed job, nothing of alice');
  assert.equal(replay.events[0].event, 'job.created');
  assert.equal(replay.events.at(-1).data.status, 'succeeded');
  const seqs = replay.events.map((e) => Number(e.data.cursor.split('.')[1]));
  assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y), 'in order');
  const foreign = await again.emitWithAck('sync', { cursor: '00000000.1' });
  assert.equal(foreign.reset, true, 'a cursor of another gateway process cannot be replayed');
  watcher.close();
  again.close();
});

test('every client hears when the gateway starts and stops draining', async () => {
  const socket = await connect({ token: ws.mintToken('bob') });
  const admin = ws.cli('admin', 'token', '--scope', 'drain', '--ttl', '5m');
  const call = (method) => fetch(`${gateway.base}/admin/drain`, { method, headers: { Authorization: `Bearer ${admin}` } });
  assert.equal((await call('POST')).status, 200);
  await eventually('gateway.drain true', () => socket.seen.find((e) => e.event === 'gateway.drain' && e.data.draining === true));
  assert.equal((await call('DELETE')).status, 200);
  await eventually('gateway.drain false', () => socket.seen.find((e) => e.event === 'gateway.drain' && e.data.draining === false));
  await eventually('an engine.status event', () => socket.seen.find((e) => e.event === 'engine.status' && e.data.id === 'shared'));
  socket.close();
});
