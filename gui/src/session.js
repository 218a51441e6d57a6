// The signed-in session: wallet sign-in (EIP-4361 message, EIP-191 signature), tokens, refresh and sign-out.
// The access token lives in memory; the refresh token in sessionStorage (this tab, until it closes). A gateway that
// cannot be reached never ends a session: only its 401 to a refresh does, and what the page gives up it revokes.

import { BrowserProvider, Wallet } from 'ethers';
import { buildSignInMessage } from './siwe.js';

const REFRESH_KEY = 'flowork.refresh';
const DEV_KEY = 'flowork.devKey';
/** Who the refresh token belongs to, so a reload while the gateway is away still knows who is signed in. */
const USER_KEY = 'flowork.user';
/** Refresh tokens given up on (signed out) whose revocation has not reached the gateway yet. */
const DISCARDED_KEY = 'flowork.discarded';

/** A wallet generated in this browser and kept in its local storage (for local development). */
export function developmentSigner() {
  let key = localStorage.getItem(DEV_KEY);
  if (!key) {
    key = Wallet.createRandom().privateKey;
    localStorage.setItem(DEV_KEY, key);
  }
  return new Wallet(key);
}

/** The injected browser wallet (`window.ethereum`), after the user allows this site. */
export async function browserWalletSigner() {
  if (!window.ethereum) {
    throw new Error('No browser wallet was found (window.ethereum). Install one, or use a development key.');
  }
  const provider = new BrowserProvider(window.ethereum);
  return provider.getSigner();
}

export class Session {
  constructor({ chainId }) {
    this.chainId = chainId;
    this.api = null;
    this.accessToken = null;
    this.user = null;
    this.refreshing = null;
    /** Why the session ended by itself (a refused refresh), for the user. */
    this.ended = null;
    this.listeners = new Set();
  }

  /** Called with the user (or null) whenever the session starts or ends. */
  onChange(listener) {
    this.listeners.add(listener);
  }

  changed() {
    for (const listener of this.listeners) listener(this.user);
  }

  accept(tokens) {
    this.ended = null;
    this.accessToken = tokens.access_token;
    this.user = userOf(tokens.access_token);
    sessionStorage.setItem(REFRESH_KEY, tokens.refresh_token);
    sessionStorage.setItem(USER_KEY, this.user);
  }

  /** Signs in with `signer`; `show` receives the message before it is signed. */
  async signIn(signer, show = () => {}) {
    const address = await signer.getAddress();
    const { data } = await this.api.get('/auth/nonce', { auth: false });
    const message = buildSignInMessage({ address, nonce: data.nonce, chainId: this.chainId, location: window.location });
    show(message);
    const signature = await signer.signMessage(message);
    const { data: tokens } = await this.api.post('/auth/verify', { message, signature }, { auth: false });
    // A sign-in of this tab that is being replaced is revoked, not just dropped.
    this.discard(sessionStorage.getItem(REFRESH_KEY));
    this.accept(tokens);
    this.changed();
  }

  /**
   * Resumes the session of this tab from its refresh token, if any; returns whether it did. A gateway that cannot
   * be reached does not end it: the user stays signed in (without an access token until the gateway is back).
   */
  async resume() {
    this.revokeDiscarded();
    if (!sessionStorage.getItem(REFRESH_KEY)) return false;
    try {
      if (!(await this.refresh())) return false;
    } catch {
      // Not refused, just not answered (unreachable, 5xx, 429): signed in still, with a token to come.
      this.user = sessionStorage.getItem(USER_KEY);
      if (!this.user) return false;
    }
    this.changed();
    return true;
  }

  /**
   * Trades the refresh token for new tokens (one exchange at a time: a reused refresh token ends the session).
   * Resolves true when it did, false when the gateway refused the token (the session has ended); rejects with the
   * failure when the gateway could not be asked (network, 5xx, 429), keeping the session.
   */
  refresh() {
    if (!this.refreshing) {
      this.refreshing = this.exchange().finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  async exchange() {
    const refreshToken = sessionStorage.getItem(REFRESH_KEY);
    if (!refreshToken) return false;
    try {
      const { data } = await this.api.post('/auth/refresh', { refresh_token: refreshToken }, { auth: false });
      this.accept(data);
      return true;
    } catch (failure) {
      // Only the gateway saying no (401) ends the session; anything else leaves it to be tried again.
      if (failure.status !== 401) throw failure;
      this.ended = failure;
      this.forget();
      return false;
    }
  }

  forget() {
    const wasSignedIn = this.user !== null;
    this.accessToken = null;
    this.user = null;
    sessionStorage.removeItem(REFRESH_KEY);
    sessionStorage.removeItem(USER_KEY);
    if (wasSignedIn) this.changed();
  }

  async signOut() {
    this.ended = null;
    this.discard(sessionStorage.getItem(REFRESH_KEY));
    this.forget();
  }

  /** Revokes a refresh token this tab no longer wants; kept to revoke later if the gateway cannot be reached now. */
  discard(refreshToken) {
    if (!refreshToken) return;
    const pending = new Set(JSON.parse(sessionStorage.getItem(DISCARDED_KEY) ?? '[]'));
    pending.add(refreshToken);
    sessionStorage.setItem(DISCARDED_KEY, JSON.stringify([...pending]));
    this.revokeDiscarded();
  }

  /** Revokes (`POST /auth/logout`) every discarded refresh token not revoked yet. */
  async revokeDiscarded() {
    const pending = JSON.parse(sessionStorage.getItem(DISCARDED_KEY) ?? '[]');
    for (const refreshToken of pending) {
      try {
        await this.api.post('/auth/logout', { refresh_token: refreshToken }, { auth: false });
      } catch (failure) {
        if (failure.network || failure.status >= 500) continue;
      }
      const left = JSON.parse(sessionStorage.getItem(DISCARDED_KEY) ?? '[]').filter((t) => t !== refreshToken);
      sessionStorage.setItem(DISCARDED_KEY, JSON.stringify(left));
    }
  }
}

/** The user id (`sub`) of an access token; the signature is the gateway's business, not the page's. */
function userOf(token) {
  const part = token.split('.')[1] ?? '';
  const json = atob(part.replace(/-/g, '+').replace(/_/g, '/'));
  return JSON.parse(json).sub;
}
