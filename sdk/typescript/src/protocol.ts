/** What every request names about the engine protocol and this SDK (docs/engine-protocol.md). */

/** The engine protocol version this SDK speaks (`MAJOR.MINOR`); the gateway refuses a major it does not know. */
export const PROTOCOL_VERSION = "1.1";

/** The header that carries `PROTOCOL_VERSION` on every `/internal/*` call. */
export const PROTOCOL_HEADER = "Flowork-Protocol";

/** Sent as `User-Agent`, so operators can tell SDK workers from the Rust engine in request logs. */
export const USER_AGENT = "flowork-sdk-typescript/0.1.0";
