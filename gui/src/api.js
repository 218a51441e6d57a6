// The gateway's HTTP API: JSON in and out, errors as ApiFailure, one token refresh on an expired access token.

/** A failed call: the HTTP status, the gateway's machine code and message, and Retry-After (seconds) if sent. */
export class ApiFailure extends Error {
  constructor({ status, code, message, retryAfter = null, network = false }) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
    this.network = network;
  }
}

export class Api {
  /** `base`: the gateway URL ('' for this page's origin); `session`: holds the tokens and refreshes them. */
  constructor(base, session) {
    this.base = base.replace(/\/+$/, '');
    this.session = session;
    /** Told of every call that could not reach the gateway, and of every one that did. */
    this.reach = { unreachable() {}, reached() {} };
  }

  url(path) {
    return `${this.base}${path}`;
  }

  /**
   * `auth`: send the session's access token (refreshed first when there is none yet, as after a reload while the
   * gateway was away); `token`: send this bearer token instead (an operator's admin token), never refreshed.
   */
  async call(method, path, { body, headers = {}, auth = true, token = null, retried = false } = {}) {
    const request = { method, headers: { ...headers } };
    if (body !== undefined) {
      request.headers['Content-Type'] = 'application/json';
      request.body = JSON.stringify(body);
    }
    if (token) {
      request.headers.Authorization = `Bearer ${token}`;
    } else if (auth) {
      if (!this.session.accessToken && this.session.user) await this.session.refresh();
      if (this.session.accessToken) request.headers.Authorization = `Bearer ${this.session.accessToken}`;
    }
    let response;
    try {
      response = await fetch(this.url(path), request);
    } catch (error) {
      const failure = new ApiFailure({
        status: 0,
        code: 'network_error',
        message: `The gateway could not be reached (${error.message}).`,
        network: true,
      });
      this.reach.unreachable(failure);
      throw failure;
    }
    this.reach.reached();
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (response.ok) {
      return { status: response.status, data, headers: response.headers };
    }
    const code = data?.error ?? `http_${response.status}`;
    if (response.status === 401 && auth && !token && !retried && code === 'token_expired' && (await this.session.refresh())) {
      return this.call(method, path, { body, headers, auth, retried: true });
    }
    const retryAfter = Number.parseInt(response.headers.get('Retry-After') ?? '', 10);
    throw new ApiFailure({
      status: response.status,
      code,
      message: data?.message ?? `The gateway answered ${response.status}.`,
      retryAfter: Number.isFinite(retryAfter) ? retryAfter : null,
    });
  }

  get(path, options) {
    return this.call('GET', path, options);
  }

  post(path, body, options = {}) {
    return this.call('POST', path, { ...options, body });
  }

  put(path, body, options = {}) {
    return this.call('PUT', path, { ...options, body });
  }

  delete(path, options) {
    return this.call('DELETE', path, options);
  }
}
