// Live updates over Socket.IO: connects with the access token, and after every (re)connect asks for what it
// missed since its last cursor; when the gateway cannot tell (restart, long absence) it reloads the job list.

import { io } from 'socket.io-client';

/** Splits a cursor `<boot>.<seq>`. */
function parseCursor(cursor) {
  const at = cursor.lastIndexOf('.');
  return { boot: cursor.slice(0, at), seq: Number(cursor.slice(at + 1)) };
}

export class Live {
  /**
   * `handlers`: { job(event, data, mode), engine(data), drain(draining), reload() -> Promise, state(text),
   * connected() }. `mode` is 'live', 'replay' (missed while away) or 'reloaded' (replayed over a list and
   * counts read after the cursor: they may already show it).
   */
  constructor(base, session, handlers) {
    this.session = session;
    this.handlers = handlers;
    this.cursor = null;
    this.catchingUp = false;
    this.reloadAfter = false;
    this.buffered = [];
    this.socket = io(base || undefined, {
      auth: (send) => send({ token: session.accessToken ?? '' }),
      transports: ['websocket', 'polling'],
    });
    for (const event of ['job.created', 'job.updated']) {
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

  async reconnectFresh() {
    if (await this.session.refresh()) this.socket.connect();
  }

  close() {
    this.socket.close();
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
    if (this.catchingUp) this.buffered.push([event, data]);
    else this.apply(event, data);
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
      this.handlers.state('live');
    } catch (error) {
      this.handlers.state(`could not catch up: ${error.message}`);
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
