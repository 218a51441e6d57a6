// Live updates over Socket.IO: connects with the access token, and after every (re)connect asks for what it
// missed since its last cursor; when the gateway cannot tell (restart, long absence) it reloads the job list.
// A connected socket can lose events too (a gateway whose send buffer to this page is full drops them, and its
// reset notice with them), so once the feed is quiet, and every few seconds, it asks again for everything since
// the last cursor it checked and applies what it had not received.

import { io } from 'socket.io-client';
import { parseCursor } from './cursor.js';

/** How long the feed must be quiet before checking for lost events, and the longest between checks (ms). */
const QUIET_MS = 1_000;
const CHECK_EVERY_MS = 10_000;


export class Live {
  /**
   * `handlers`: { job(event, data, mode), engine(data), drain(draining), reload() -> Promise, state(text),
   * connected(), lost(n) }. `mode` is 'live', 'replay' (missed while away), 'reloaded' (replayed over a list and
   * counts read after the cursor: they may already show it) or 'missed' (lost while connected, found by a check;
   * older than events already applied).
   */
  constructor(base, session, handlers) {
    this.session = session;
    this.handlers = handlers;
    this.cursor = null;
    this.catchingUp = false;
    this.reloadAfter = false;
    this.buffered = [];
    /** The cursor up to which every event is known to have been received, and the cursors received since. */
    this.checked = null;
    this.receivedSince = new Set();
    this.checkTimer = null;
    this.lastCheck = Date.now();
    this.socket = io(base || undefined, {
      auth: (send) => send({ token: session.accessToken ?? '' }),
      transports: ['websocket', 'polling'],
    });
    for (const event of ['job.created', 'job.updated', 'job.deleted']) {
      this.socket.on(event, (data) => this.received(event, data));
    }
    this.socket.on('engine.status', (data) => handlers.engine(data));
    this.socket.on('gateway.drain', (data) => handlers.drain(Boolean(data?.draining)));
    this.socket.on('connect', () => {
      handlers.connected?.();
      this.catchUp();
    });
    // The gateway says events may have been lost (another gateway of the fleet stopped without a goodbye, or an
    // event could not be published): reload the list.
    this.socket.on('live.reset', () => this.reload());
    this.socket.on('disconnect', (reason) => {
      handlers.state(`live updates paused (${reason}); reconnecting…`);
      // The gateway ends a connection when its token does: reconnect with a fresh one.
      if (reason === 'io server disconnect') this.reconnectFresh();
    });
    this.socket.on('connect_error', (error) => {
      handlers.state(`live updates unavailable: ${error.message}`);
      if (/^token_expired|^invalid_token/.test(error.message)) this.reconnectFresh();
    });
  }

  /** Connects again with a fresh access token; while the gateway is away, `resume()` does it once it is back. */
  async reconnectFresh() {
    try {
      if (await this.session.refresh()) this.socket.connect();
    } catch {
      // not answered: the page calls resume() when the gateway is back
    }
  }

  /** The gateway answers again: reconnect now if the socket gave up (a refused token) rather than waiting. */
  resume() {
    if (!this.socket.connected) this.reconnectFresh();
  }

  close() {
    clearTimeout(this.checkTimer);
    clearTimeout(this.catchUpTimer);
    this.socket.close();
  }

  /** Checks for lost events in `ms` (an earlier check already planned stays). */
  checkIn(ms) {
    if (this.checkTimer && ms >= this.checkDue - Date.now()) return;
    clearTimeout(this.checkTimer);
    this.checkDue = Date.now() + ms;
    this.checkTimer = setTimeout(() => this.check(), ms);
  }

  /** Asks for every event since the last checked cursor and applies those this page never received. */
  async check() {
    this.checkTimer = null;
    this.lastCheck = Date.now();
    if (!this.socket.connected || this.catchingUp || !this.checked) {
      this.checkIn(CHECK_EVERY_MS);
      return;
    }
    const from = this.checked;
    const seen = this.receivedSince;
    this.receivedSince = new Set();
    try {
      const answer = await this.sync(from);
      if (answer.reset) {
        this.reload();
        return;
      }
      const missed = answer.events.filter((e) => !seen.has(e.data.cursor) && !this.receivedSince.has(e.data.cursor));
      for (const { event, data } of missed) this.handlers.job(event, data, 'missed');
      if (missed.length > 0) this.handlers.lost?.(missed.length);
      this.checked = answer.cursor;
    } catch {
      for (const cursor of seen) this.receivedSince.add(cursor);
    }
    this.checkIn(CHECK_EVERY_MS);
  }

  /** Whether `cursor` is newer than the last one applied. */
  isNew(cursor) {
    if (!this.cursor || !cursor) return true;
    const last = parseCursor(this.cursor);
    const next = parseCursor(cursor);
    return next.boot !== last.boot || next.seq > last.seq;
  }

  apply(event, data, mode = 'live') {
    if (!this.isNew(data.cursor)) return;
    this.cursor = data.cursor;
    this.handlers.job(event, data, mode);
  }

  received(event, data) {
    this.receivedSince.add(data.cursor);
    // Check nothing was lost once the feed is quiet for a second, and at least every CHECK_EVERY_MS meanwhile.
    clearTimeout(this.checkTimer);
    this.checkTimer = null;
    this.checkIn(Math.max(0, Math.min(QUIET_MS, this.lastCheck + CHECK_EVERY_MS - Date.now())));
    if (this.catchingUp) this.buffered.push([event, data]);
    else this.apply(event, data);
  }

  /** The feed's current cursor, parsed (null when not connected). */
  async cursorNow() {
    if (!this.socket.connected) return null;
    const { cursor } = await this.sync(null);
    return cursor ? parseCursor(cursor) : null;
  }

  sync(cursor) {
    return this.socket.timeout(10_000).emitWithAck('sync', cursor ? { cursor } : {});
  }

  /** Forgets the cursor and reloads the list (after the current catch-up, if one runs). */
  reload() {
    this.cursor = null;
    if (this.catchingUp) this.reloadAfter = true;
    else this.catchUp();
  }

  /** Replays what was missed (or reloads the list), then what arrived meanwhile, in order. */
  async catchUp() {
    this.catchingUp = true;
    this.handlers.state('catching up…');
    try {
      let answer = this.cursor ? await this.sync(this.cursor) : { reset: true };
      let mode = 'replay';
      if (answer.reset) {
        mode = 'reloaded';
        // Take a cursor first, then the list: every change after the cursor is replayed over the list.
        const { cursor } = await this.sync(null);
        await this.handlers.reload();
        this.cursor = cursor;
        answer = await this.sync(cursor);
        if (answer.reset) answer = { events: [] };
      }
      for (const { event, data } of answer.events) this.apply(event, data, mode);
      for (const [event, data] of this.buffered) this.apply(event, data, mode);
      this.checked = this.cursor;
      this.receivedSince = new Set();
      this.checkIn(CHECK_EVERY_MS);
      this.handlers.state('live');
      this.catchUpFailures = 0;
    } catch (error) {
      // A busy or restarting gateway may not answer in time: try again, backing off, while connected.
      this.catchUpFailures = (this.catchUpFailures ?? 0) + 1;
      const retryMs = Math.min(10_000, 500 * 2 ** this.catchUpFailures);
      this.handlers.state(`could not catch up (${error.message}); trying again in ${Math.round(retryMs / 1_000)} s`);
      clearTimeout(this.catchUpTimer);
      this.catchUpTimer = setTimeout(() => {
        if (this.socket.connected && !this.catchingUp) this.catchUp();
      }, retryMs);
    } finally {
      this.buffered = [];
      this.catchingUp = false;
      if (this.reloadAfter) {
        this.reloadAfter = false;
        this.reload();
      }
    }
  }
}
