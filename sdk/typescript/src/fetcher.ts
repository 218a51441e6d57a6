/** The `fetch` the SDK calls the gateway with: the global one, or one that also trusts a private CA (`caFile`). */

import { readFileSync } from "node:fs";
import { rootCertificates } from "node:tls";

import { Agent, fetch as undiciFetch } from "undici";

/** What `call` needs of `fetch`. */
export type Fetch = (url: string, init: RequestInit) => Promise<Response>;

/**
 * The global `fetch` without `caFile`; with it, undici's `fetch` through an agent that trusts the usual public
 * authorities and the one(s) in `caFile` (PEM), for a gateway with a self-signed certificate. The file is read
 * once, here: a missing file is an error at construction, not at the first call.
 */
export function fetchTrusting(caFile?: string): Fetch {
  if (caFile === undefined) return (url, init) => fetch(url, init);
  const agent = new Agent({ connect: { ca: [...rootCertificates, readFileSync(caFile, "utf8")] } });
  return (url, init) =>
    undiciFetch(url, { ...(init as unknown as Parameters<typeof undiciFetch>[1]), dispatcher: agent }) as unknown as Promise<Response>;
}
