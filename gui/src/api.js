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
  }

  url(path) {
    return `${this.base}${path}`;
  }

  async call(method, path, { body, headers = {}, auth = true, retried = false } = {}) {
    const request = { method, headers: { ...headers } };
    if (body !== undefined) {
      request.headers['Content-Type'] = 'application/json';
      request.body = JSON.stringify(body);
    }
    if (auth && this.session.accessToken) {
      request.headers.Authorization = `Bearer ${this.session.accessToken}`;
    }
    let response;
    try {
      response = await fetch(this.url(path), request);
    } catch (error) {
      throw new ApiFailure({
        status: 0,
        code: 'network_error',
        message: `The gateway could not be reached (${error.message}).`,
        network: true,
      });
    }
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
    if (response.status === 401 && auth && !retried && code === 'token_expired' && (await this.session.refresh())) {
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

  delete(path, options) {
    return this.call('DELETE', path, options);
  }
}
