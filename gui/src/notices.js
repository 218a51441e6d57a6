// What the user is told when a call fails: one message per status, with a Retry-After countdown.

const ADVICE = {
  401: 'You are not signed in any more. Sign in again.',
  403: 'You are not allowed to do this.',
  422: 'The gateway refused the request as invalid.',
  429: 'Too many jobs right now: the gateway asks you to wait before trying again.',
  503: 'The gateway cannot take this right now.',
};

export class Notice {
  constructor(element) {
    this.element = element;
    this.timer = null;
  }

  clear() {
    clearInterval(this.timer);
    this.timer = null;
    this.element.hidden = true;
    this.element.replaceChildren();
    delete this.element.dataset.status;
  }

  /** Shows a failed call (`ApiFailure`); counts Retry-After down to zero. A call that reached no gateway is left
   *  to the reachability banner, which says so once. */
  failure(failure) {
    if (failure.network) return;
    this.clear();
    const advice = ADVICE[failure.status] ?? 'The request failed.';
    const title = document.createElement('strong');
    title.textContent = failure.status ? `${failure.status} ${failure.code}` : failure.code;
    const text = document.createElement('span');
    text.textContent = ` — ${advice} ${failure.message}`;
    this.element.append(title, text);
    if (failure.hint) {
      const hint = document.createElement('code');
      hint.className = 'hint-command';
      hint.textContent = failure.hint;
      this.element.append(document.createElement('br'), hint);
    }
    this.element.dataset.status = String(failure.status);
    if (failure.retryAfter !== null && failure.retryAfter !== undefined) {
      const countdown = document.createElement('span');
      countdown.className = 'countdown';
      countdown.id = 'retry-countdown';
      this.element.append(' ', countdown);
      const until = Date.now() + failure.retryAfter * 1000;
      const tick = () => {
        const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
        countdown.textContent = left > 0 ? `Retry in ${left} s.` : 'You can retry now.';
        if (left === 0) clearInterval(this.timer);
      };
      tick();
      this.timer = setInterval(tick, 250);
    }
    this.element.hidden = false;
  }

  /** Shows a plain message. */
  message(text) {
    this.clear();
    this.element.textContent = text;
    this.element.hidden = false;
  }
}
