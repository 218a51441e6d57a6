//! The command line of `flowork-gateway` (clap), every flag with a `FLOWORK_*` environment fallback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;

use crate::http::client_ip::ClientIpHeader;
use crate::http::rate_limit::Rate;
use flowork_common::logging::LogFormat;

/// Flowork gateway: authenticates users, stores jobs in per-engine SQLite shards and hands them to engines.
#[derive(Debug, Parser)]
#[command(name = "flowork-gateway", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format: `json` (one object per line) or `pretty`; default: pretty on a terminal, json otherwise.
    #[arg(long, global = true, env = "FLOWORK_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(Box<ServeArgs>),
    /// Register and manage engines.
    #[command(subcommand)]
    Engine(EngineCommand),
    /// Mint user access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage the JWT signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Mint admin tokens.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Inspect the tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Take a consistent online copy of the data directory (databases and signing keys) into a new folder.
    Backup {
        #[command(flatten)]
        data: DataArgs,
        /// The new folder to write the backup into.
        #[arg(long)]
        to: PathBuf,
    },
    /// Copy a data directory's SQLite data (engines, users, keys, jobs, schedules, audit) into PostgreSQL, and check
    /// the copy; safe to run again. Drain and stop the SQLite gateway first.
    MigrateStore {
        /// The data directory to read.
        #[arg(long, env = "FLOWORK_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// The PostgreSQL store to fill (`postgres://USER@HOST:PORT/DB`).
        #[arg(long)]
        to: String,
    },
    /// Bring a backup back into the data directory (with the gateway stopped).
    Restore {
        #[command(flatten)]
        data: DataArgs,
        /// The backup folder (with its manifest.json).
        #[arg(long)]
        from: PathBuf,
        /// Restore over an existing data directory, which is first moved aside (never deleted).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit log (the hash chain, every row's signature, the signed head); lists every problem found
    /// and exits non-zero if a row was edited, rewritten or deleted.
    Verify {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Print the audit log, oldest first.
    Show {
        /// Only rows from this time on: RFC 3339 (`2026-01-31T00:00:00Z`) or a duration back from now (`1h`, `7d`);
        /// default: every row kept (90 days).
        #[arg(long)]
        since: Option<String>,
        /// Print one JSON object per line (the rows of `GET /admin/audit`).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataArgs,
    },
}

/// Where the data lives.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Folder of the control database, the per-engine shards and the signing keys.
    #[arg(long, env = "FLOWORK_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The shared PostgreSQL store of a gateway fleet (`postgres://USER@HOST:PORT/DB`); without it, the SQLite
    /// shards under `--data-dir`.
    #[arg(long, env = "FLOWORK_STORE")]
    pub store: Option<String>,
}

/// `flowork-gateway serve`: its options, in the sections `--help` shows.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten, next_help_heading = "HTTP")]
    pub http: HttpArgs,
    #[command(flatten, next_help_heading = "Sign-in and tokens")]
    pub auth: AuthArgs,
    #[command(flatten, next_help_heading = "Rate limits and networks")]
    pub network: NetworkArgs,
    #[command(flatten, next_help_heading = "Jobs")]
    pub jobs: JobArgs,
    #[command(flatten, next_help_heading = "Admission")]
    pub admission: AdmissionArgs,
    #[command(flatten, next_help_heading = "Alerts")]
    pub alerts: AlertArgs,
    #[command(flatten, next_help_heading = "Upkeep")]
    pub upkeep: UpkeepArgs,
}

/// The listener: address, TLS, HTTP/2, connection limits and timeouts, the GUI and its origins.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Address to listen on (port 0 picks a free one; the chosen address is logged as `listening`).
    #[arg(long, env = "FLOWORK_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Share the listen port with another `serve` that also sets it (SO_REUSEPORT; a canary beside the old build).
    /// Unix only.
    #[arg(long, env = "FLOWORK_REUSE_PORT")]
    pub reuse_port: bool,
    /// Serve HTTPS and WSS with this certificate chain (PEM, leaf first); needs --tls-key. Re-read when the file
    /// changes: new connections get the new certificate, open ones keep theirs. Plain HTTP when absent.
    #[arg(long, env = "FLOWORK_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1; keep it 0600), re-read with it.
    #[arg(long, env = "FLOWORK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Without TLS, also speak HTTP/2 in clear text (prior knowledge); off, plain connections are HTTP/1.1. With
    /// TLS, HTTP/2 is always offered by ALPN.
    #[arg(long, env = "FLOWORK_H2C")]
    pub h2c: bool,
    /// A new connection that has not sent its first request's headers within this is closed (slowloris).
    #[arg(long, env = "FLOWORK_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long, after its first request, is closed.
    #[arg(long, env = "FLOWORK_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Open connections at most (kept within 3/4 of the open-file limit); further ones wait in the listen backlog.
    #[arg(long, env = "FLOWORK_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// A built GUI folder (`gui/dist`) to serve at `/`, with the headers of its `_headers` file; none by default.
    #[arg(long, env = "FLOWORK_GUI_DIR")]
    pub gui_dir: Option<std::path::PathBuf>,
    /// GUI origins allowed by CORS and for wallet sign-in (repeatable; default: the gateway's own origin).
    /// Each is `http(s)://host[:port]` (what a browser sends as `Origin`); anything else is refused at start.
    #[arg(long = "allowed-origin", env = "FLOWORK_ALLOWED_ORIGINS", value_delimiter = ',',
          value_parser = crate::auth::signin::parse_origin)]
    pub allowed_origins: Vec<String>,
    /// A Redis server (`redis://HOST:PORT`, Redis 7+) through which Socket.IO rooms span every gateway of a fleet;
    /// without it, live events reach only this gateway's connections.
    #[arg(long, env = "FLOWORK_REDIS")]
    pub redis: Option<String>,
}

/// Wallet sign-in and the tokens it issues.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Chain ids accepted in sign-in messages (repeatable).
    #[arg(long = "chain-id", env = "FLOWORK_CHAIN_IDS", value_delimiter = ',', default_value = "1")]
    pub chain_ids: Vec<u64>,
    /// Lifetime of access tokens issued at sign-in.
    #[arg(long, env = "FLOWORK_ACCESS_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub access_ttl: Duration,
    /// Lifetime of refresh tokens.
    #[arg(long, env = "FLOWORK_REFRESH_TTL", default_value = "30d", value_parser = humantime::parse_duration)]
    pub refresh_ttl: Duration,
    /// Sign-in nonces (`GET /auth/nonce`) per client address (0 = off); beyond it 429 `rate_limited`.
    #[arg(long, env = "FLOWORK_RATE_NONCE", default_value = "30/m")]
    pub rate_nonce: Rate,
    /// How long a sign-in nonce may be used.
    #[arg(long, env = "FLOWORK_NONCE_TTL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub nonce_ttl: Duration,
    /// Unused, unexpired sign-in nonces kept at most, over all clients; beyond it 429 `too_many_nonces`.
    #[arg(long, env = "FLOWORK_MAX_NONCES", default_value_t = 10_000)]
    pub max_nonces: u64,
}

/// Who may call, how often, and which proxies are believed.
#[derive(Debug, Clone, Args)]
pub struct NetworkArgs {
    /// Requests per client address (`100/s`, `6000/m`; 0 = off), on every route but the probes.
    #[arg(long, env = "FLOWORK_RATE_IP", default_value = "2000/s")]
    pub rate_ip: Rate,
    /// IPv6 clients share one --rate-ip bucket per network of this many bits (a /64 is what one client is usually
    /// given, and it can use any address in it); 128 = one bucket per address.
    #[arg(long, env = "FLOWORK_RATE_IP_V6_PREFIX", default_value_t = 64,
          value_parser = clap::value_parser!(u8).range(1..=128))]
    pub rate_ip_v6_prefix: u8,
    /// Requests per signed-in user (0 = off).
    #[arg(long, env = "FLOWORK_RATE_USER", default_value = "1000/s")]
    pub rate_user: Rate,
    /// Peers whose client-address header (--client-ip-header) is believed (CIDR, repeatable or comma-separated).
    #[arg(long = "trusted-proxy", env = "FLOWORK_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpNet>,
    /// The one header a trusted proxy reports the client's address in: `x-forwarded-for` (nginx, HAProxy, most load
    /// balancers), or `cf-connecting-ip` only when the trusted proxies are Cloudflare's (others pass a client's
    /// own `CF-Connecting-IP` through).
    #[arg(long, env = "FLOWORK_CLIENT_IP_HEADER", value_enum, default_value = "x-forwarded-for")]
    pub client_ip_header: ClientIpHeader,
    /// Only these client networks may use the public API (CIDR; default: all).
    #[arg(long = "allow-cidr", env = "FLOWORK_ALLOW_CIDRS", value_delimiter = ',')]
    pub allow_cidrs: Vec<IpNet>,
    /// These client networks may not use the public API (CIDR).
    #[arg(long = "deny-cidr", env = "FLOWORK_DENY_CIDRS", value_delimiter = ',')]
    pub deny_cidrs: Vec<IpNet>,
    /// Only these networks may use the engine API under /internal/ (CIDR; default: all).
    #[arg(long = "engine-allow-cidr", env = "FLOWORK_ENGINE_ALLOW_CIDRS", value_delimiter = ',')]
    pub engine_allow_cidrs: Vec<IpNet>,
    /// These networks may not use the engine API (CIDR).
    #[arg(long = "engine-deny-cidr", env = "FLOWORK_ENGINE_DENY_CIDRS", value_delimiter = ',')]
    pub engine_deny_cidrs: Vec<IpNet>,
}

/// What a job may be and how its failures are retried and held back.
#[derive(Debug, Clone, Args)]
pub struct JobArgs {
    /// Largest job payload accepted, in bytes (JSON as stored).
    #[arg(long, env = "FLOWORK_MAX_PAYLOAD_BYTES", default_value_t = 256 * 1024)]
    pub max_payload_bytes: usize,
    /// Attempts a job gets when its request names none.
    #[arg(long, env = "FLOWORK_DEFAULT_MAX_ATTEMPTS", default_value_t = 5)]
    pub default_max_attempts: u32,
    /// Timeout of a job (ms) when its request names none.
    #[arg(long, env = "FLOWORK_DEFAULT_TIMEOUT_MS", default_value_t = 30_000)]
    pub default_timeout_ms: u64,
    /// Base of the retry backoff (ms): the n-th retry waits a random time up to base * 2^(n-1).
    #[arg(long, env = "FLOWORK_RETRY_BASE_MS", default_value_t = 1_000)]
    pub retry_base_ms: u64,
    /// Cap of the retry backoff (ms).
    #[arg(long, env = "FLOWORK_RETRY_CAP_MS", default_value_t = 3_600_000)]
    pub retry_cap_ms: u64,
    /// Retryable failed attempts of one user's jobs of one kind on one engine, within --breaker-window, that open
    /// that user's breaker of the kind (their jobs of it then wait instead of burning attempts); the kind's breaker
    /// for everyone opens only on failures from two users or more; 0 = never.
    #[arg(long, env = "FLOWORK_BREAKER_FAILURES", default_value_t = 20)]
    pub breaker_failures: u32,
    /// The window in which --breaker-failures are counted.
    #[arg(long, env = "FLOWORK_BREAKER_WINDOW", default_value = "60s", value_parser = humantime::parse_duration)]
    pub breaker_window: Duration,
    /// How long an open breaker waits before letting one probe job through.
    #[arg(long, env = "FLOWORK_BREAKER_COOLDOWN", default_value = "30s", value_parser = humantime::parse_duration)]
    pub breaker_cooldown: Duration,
}

/// The caps on queued work, and the drain on SIGTERM.
#[derive(Debug, Clone, Args)]
pub struct AdmissionArgs {
    /// Cap of queued jobs per engine shard (0 = none); beyond it POST /jobs answers 429 `queue_full`.
    #[arg(long, env = "FLOWORK_MAX_QUEUE_DEPTH", default_value_t = 100_000)]
    pub max_queue_depth: u64,
    /// Cap of queued jobs over all engines (0 = none); beyond it 429 `total_queue_full`.
    #[arg(long, env = "FLOWORK_MAX_TOTAL_DEPTH", default_value_t = 1_000_000)]
    pub max_total_depth: u64,
    /// Cap of queued + running jobs per user per engine (0 = none); beyond it 429 `user_inflight_limit`.
    #[arg(long, env = "FLOWORK_MAX_USER_INFLIGHT", default_value_t = 10_000)]
    pub max_user_inflight: u64,
    /// On SIGTERM, how long running jobs may take before the gateway exits anyway.
    #[arg(long, env = "FLOWORK_DRAIN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_grace: Duration,
}

/// Alert rules and where they are sent.
#[derive(Debug, Clone, Args)]
pub struct AlertArgs {
    /// Webhook URLs that receive alert notifications (repeatable; JSON with a Slack/Discord `text` field).
    #[arg(long = "alert-webhook", env = "FLOWORK_ALERT_WEBHOOKS", value_delimiter = ',')]
    pub alert_webhooks: Vec<String>,
    /// Alert when an engine's p95 queue latency (ms) goes above this.
    #[arg(long, env = "FLOWORK_ALERT_QUEUE_LATENCY_P95_MS")]
    pub alert_queue_latency_p95_ms: Option<f64>,
    /// Alert when an engine's queue holds more jobs than this.
    #[arg(long, env = "FLOWORK_ALERT_QUEUE_DEPTH")]
    pub alert_queue_depth: Option<f64>,
    /// Alert when failed attempts ÷ all attempts on an engine over --alert-error-window exceed this (e.g. 0.01).
    #[arg(long, env = "FLOWORK_ALERT_ERROR_RATE")]
    pub alert_error_rate: Option<f64>,
    /// The window of the error-rate alert.
    #[arg(long, env = "FLOWORK_ALERT_ERROR_WINDOW", default_value = "15m", value_parser = humantime::parse_duration)]
    pub alert_error_window: Duration,
    /// How often alert rules are evaluated.
    #[arg(long, env = "FLOWORK_ALERT_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub alert_interval: Duration,
}

/// The background loops: reaping, retention, cron ticks.
#[derive(Debug, Clone, Args)]
pub struct UpkeepArgs {
    /// How often expired leases are put back in the queue (ms); claims also do it as they go.
    #[arg(long, env = "FLOWORK_REAP_INTERVAL_MS", default_value_t = 1_000)]
    pub reap_interval_ms: u64,
    /// Finished jobs (and with them their idempotency keys) are deleted this long after they finished; at least
    /// 24h, so a client retrying within a day always gets its original job; `0s` keeps them forever.
    #[arg(long, env = "FLOWORK_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub retention: Duration,
    /// Audit rows are deleted this long after they were recorded (hourly, the rest of the log staying
    /// verifiable); `0s` keeps them forever.
    #[arg(long, env = "FLOWORK_AUDIT_RETENTION", default_value = "90d", value_parser = humantime::parse_duration)]
    pub audit_retention: Duration,
    /// How often retention runs.
    #[arg(long, env = "FLOWORK_RETENTION_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub retention_interval: Duration,
    /// How often due cron ticks are turned into jobs (ms).
    #[arg(long, env = "FLOWORK_SCHEDULE_INTERVAL_MS", default_value_t = 250)]
    pub schedule_interval_ms: u64,
    /// A cron tick found later than this (say, after the gateway was down) counts as missed and follows its
    /// schedule's policy (`skip` or `catch_up_one`).
    #[arg(long, env = "FLOWORK_SCHEDULE_GRACE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub schedule_grace: Duration,
}

#[derive(Debug, Subcommand)]
pub enum EngineCommand {
    /// Register an engine and create its shard; prints its token once.
    Add {
        /// Engine id: lowercase letters, digits and '-'.
        name: String,
        /// User id of the engine's owner.
        #[arg(long)]
        owner: Option<String>,
        /// Print `{"engine_id", "token"}` as JSON.
        #[arg(long)]
        json: bool,
        /// Write the token to this file (created 0600) instead of printing it.
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        data: DataArgs,
    },
    /// List registered engines.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Replace an engine's token; prints the new token once. The old token keeps working for --grace (default 5m)
    /// so the engine can be switched over; `--grace 0s` stops it at once. While that grace runs, another rotation
    /// is refused: it would stop the old token at once, cutting off an engine not switched over yet (--force does).
    RotateToken {
        name: String,
        /// Print `{"engine_id", "token"}` as JSON.
        #[arg(long)]
        json: bool,
        /// Write the token to this file (0600) instead of printing it.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// How long the previous token keeps working, so the engine can be switched over without downtime.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        grace: Duration,
        /// Rotate even while the last rotation's grace runs: the token that grace was for stops at once (say,
        /// because it leaked); the current one gets the new --grace.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Revoke an engine's token; its queued jobs stay in its shard.
    Revoke {
        name: String,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Add a user to an engine's whitelist (takes effect at once, also on a running gateway).
    Allow {
        name: String,
        user: String,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Remove a user from an engine's whitelist.
    Disallow {
        name: String,
        user: String,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Show an engine's owner and whitelist.
    Users {
        name: String,
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a user access JWT (for scripts and local use).
    Mint {
        /// The user id the token is for.
        #[arg(long)]
        user: String,
        /// Lifetime, e.g. `15m`, `12h`, `30d`.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Print `{"access_token", "token_type", "expires_in", "jti"}` as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Revoke user tokens before they expire: one token by its id, or every token issued to a user so far (with
    /// their sign-ins' refresh tokens and their API keys). Every gateway refuses them within 5 seconds.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["jti", "user"])))]
    Revoke {
        /// The id (`jti` claim) of the token to revoke, as `token mint --json` prints it.
        #[arg(long)]
        jti: Option<String>,
        /// The user whose every token issued up to now is revoked.
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Mint a short-lived admin token (at most 15 minutes) carrying the given scopes.
    Token {
        /// Capabilities, comma-separated: drain, engines:read, engines:write, audit:read.
        #[arg(long)]
        scope: String,
        /// Lifetime, at most 15m.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new JWT signing key; tokens signed by older keys stay valid until they expire.
    Rotate {
        #[command(flatten)]
        data: DataArgs,
    },
}
