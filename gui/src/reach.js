// Whether the gateway can be reached, and if not, why: this page's Content-Security-Policy blocking its address,
// the gateway refusing this page's origin (CORS), or the gateway being down. One banner says it, once, retries
// with backoff, and tells the page when the gateway is back.

const FIRST_RETRY_MS = 1_000;
const MOST_RETRY_MS = 30_000;

export class Reachability {
  /** `base`: the gateway URL ('' = this page's origin); `onBack()` runs each time the gateway answers again. */
  constructor(banner, { base, onBack }) {
    this.banner = banner;
    this.base = base.replace(/\/+$/, '');
    this.onBack = onBack;
    this.gateway = this.base ? new URL(this.base, window.location.href).origin : window.location.origin;
    this.down = false;
    this.delay = FIRST_RETRY_MS;
    this.timer = null;
    this.ticker = null;
    this.reason = null;
    this.blocked = null;
    this.retryText = document.createElement('span');
    document.addEventListener('securitypolicyviolation', (event) => {
      if (!/^connect-src/.test(event.effectiveDirective ?? event.violatedDirective)) return;
      const sameHost = event.blockedURI.replace(/^ws/, 'http').startsWith(this.gateway);
      if (sameHost) this.blocked = event;
    });
  }

  /** A call failed without an answer: say so (once) and start trying again. */
  unreachable() {
    if (this.down) return;
    this.down = true;
    this.delay = FIRST_RETRY_MS;
    this.show('down', `The gateway at ${this.gateway} cannot be reached; retrying…`);
    this.diagnose();
    this.plan();
  }

  /** A call got an answer. */
  reached() {
    if (!this.down) return;
    this.down = false;
    clearTimeout(this.timer);
    clearInterval(this.ticker);
    this.timer = null;
    this.reason = null;
    this.banner.hidden = true;
    delete this.banner.dataset.reason;
    this.onBack();
  }

  plan() {
    clearTimeout(this.timer);
    clearInterval(this.ticker);
    const due = Date.now() + this.delay;
    const tick = () => {
      const left = Math.max(0, Math.ceil((due - Date.now()) / 1000));
      this.retryText.textContent = left > 0 ? ` Next try in ${left} s.` : ' Trying…';
    };
    tick();
    this.ticker = setInterval(tick, 1_000);
    this.timer = setTimeout(() => this.probe(), this.delay);
    this.delay = Math.min(this.delay * 2, MOST_RETRY_MS);
  }

  async probe() {
    try {
      const response = await fetch(`${this.base}/healthz`, { cache: 'no-store' });
      if (response.ok) {
        this.reached();
        return;
      }
    } catch {
      // still away
    }
    if (!this.down) return;
    await this.diagnose();
    this.plan();
  }

  /** Tells a blocked address, a refused origin and a gateway that is away apart, and says what to change. */
  async diagnose() {
    // The violation event is queued as a task of its own: let it arrive.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const page = window.location.origin;
    if (this.blocked) {
      return this.show(
        'csp',
        `This page's Content-Security-Policy (connect-src) does not allow connections to the gateway at ${this.gateway}: ` +
          `a GUI served from ${page} may only reach its own origin and https:/wss: addresses. Serve the gateway over ` +
          `HTTPS (\`flowork-gateway serve --tls-cert … --tls-key …\`) and put its https:// URL in config.json, or add ` +
          `${this.gateway} to connect-src in the _headers file.`,
      );
    }
    if (this.gateway !== page) {
      let answers = false;
      try {
        // An opaque answer needs no CORS: it proves the gateway is up, so the readable call was refused by CORS.
        await fetch(`${this.base}/healthz`, { mode: 'no-cors', cache: 'no-store' });
        answers = true;
      } catch {
        answers = false;
      }
      if (!this.down) return;
      if (answers) {
        return this.show(
          'cors',
          `The gateway at ${this.gateway} answers, but does not allow this page's origin (${page}) to read its answers ` +
            `(CORS). Start it with \`--allowed-origin ${page}\` (or add it to FLOWORK_ALLOWED_ORIGINS).`,
        );
      }
    }
    this.show(
      'down',
      `The gateway at ${this.gateway} cannot be reached: it may be stopped or restarting, or its address ` +
        `(config.json) or TLS certificate may be wrong. Gateway unreachable, retrying; you stay signed in.`,
    );
  }

  show(reason, text) {
    if (!this.down) return;
    if (this.reason === reason && this.banner.dataset.text === text) return;
    this.reason = reason;
    this.banner.dataset.reason = reason;
    this.banner.dataset.text = text;
    // `…` marks a command or flag: shown as code, never broken at its hyphens.
    const message = document.createElement('span');
    text.split('`').forEach((part, i) => {
      message.append(i % 2 ? Object.assign(document.createElement('code'), { textContent: part }) : part);
    });
    this.banner.replaceChildren(message, this.retryText);
    this.banner.hidden = false;
  }
}
