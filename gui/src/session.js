// The signed-in session: wallet sign-in (EIP-4361 message, EIP-191 signature), tokens, refresh and sign-out.
// The access token lives in memory; the refresh token in sessionStorage (this tab, until it closes).

import { BrowserProvider, Wallet } from 'ethers';
import { buildSignInMessage } from './siwe.js';

const REFRESH_KEY = 'flowork.refresh';
const DEV_KEY = 'flowork.devKey';

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
    sessionStorage.setItem(REFRESH_KEY, tokens.refresh_token);
    this.user = userOf(tokens.access_token);
  }

  /** Signs in with `signer`; `show` receives the message before it is signed. */
  async signIn(signer, show = () => {}) {
    const address = await signer.getAddress();
    const { data } = await this.api.get('/auth/nonce', { auth: false });
    const message = buildSignInMessage({ address, nonce: data.nonce, chainId: this.chainId, location: window.location });
    show(message);
    const signature = await signer.signMessage(message);
    const { data: tokens } = await this.api.post('/auth/verify', { message, signature }, { auth: false });
    this.accept(tokens);
    this.changed();
  }

  /** Resumes the session of this tab from its refresh token, if any; returns whether it did. */
  async resume() {
    if (!sessionStorage.getItem(REFRESH_KEY)) return false;
    const resumed = await this.refresh();
    if (resumed) this.changed();
    return resumed;
  }

  /** Trades the refresh token for new tokens (one exchange at a time: a reused refresh token ends the session). */
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
    if (wasSignedIn) this.changed();
  }

  async signOut() {
    this.ended = null;
    const refreshToken = sessionStorage.getItem(REFRESH_KEY);
    if (refreshToken) {
      await this.api.post('/auth/logout', { refresh_token: refreshToken }, { auth: false }).catch(() => {});
    }
    this.forget();
  }
}

/** The user id (`sub`) of an access token; the signature is the gateway's business, not the page's. */
function userOf(token) {
  const part = token.split('.')[1] ?? '';
  const json = atob(part.replace(/-/g, '+').replace(/_/g, '/'));
  return JSON.parse(json).sub;
}
