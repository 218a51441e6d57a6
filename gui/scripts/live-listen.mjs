// Prints every Socket.IO event a user's connection receives, one JSON line each, with the official
// socket.io-client: `node scripts/live-listen.mjs <gateway URL> <access token>`. The Rust fleet test
// (tests/tests/fleet.rs) reads these lines to see events cross gateways.

import { io } from 'socket.io-client';

const [base, token] = process.argv.slice(2);
if (!base || !token) {
  console.error('usage: node scripts/live-listen.mjs <gateway URL> <access token>');
  process.exit(2);
}
const socket = io(base, { auth: { token }, transports: ['websocket'], reconnection: true });
const print = (event, data) => process.stdout.write(`${JSON.stringify({ event, data })}\n`);
socket.on('connect', () => print('connected', { id: socket.id }));
socket.on('connect_error', (error) => print('connect_error', { message: error.message }));
socket.onAny((event, data) => print(event, data));
process.on('SIGTERM', () => {
  socket.close();
  process.exit(0);
});
