//! The administrative sub-commands: engines, tokens, keys. They work while `serve` runs (WAL, busy timeout).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use flowork_common::clock::{Clock, SystemClock};
use flowork_common::ids::{validate_engine_id, validate_user_id};
use serde_json::json;

use crate::audit::AuditEntry;
use crate::auth::engine_token;
use crate::auth::jwt::{ADMIN_AUDIENCE, MAX_ADMIN_TTL, MAX_TOKEN_TTL};
use crate::auth::scope::parse_scopes;
use crate::config::{AdminCommand, AuditCommand, DataArgs, EngineCommand, KeysCommand, TokenCommand};
use crate::secure_fs::write_private_file;
use crate::store::AuditQuery;
use crate::store::open::{Stores, open};

/// The store `data` names (the SQLite shards, or PostgreSQL with `--store`).
async fn open_store(data: &DataArgs) -> anyhow::Result<Stores> {
    Ok(open(data, Arc::new(SystemClock), Default::default()).await?)
}

/// Hands a new engine token to the operator: into a 0600 file, or once on stdout.
fn deliver_token(engine: &str, token: &str, json: bool, file: Option<&Path>, verb: &str) -> anyhow::Result<()> {
    if let Some(path) = file {
        write_private_file(path, format!("{token}\n").as_bytes())
            .with_context(|| format!("writing the token to {}", path.display()))?;
        if json {
            println!("{}", json!({ "engine_id": engine, "token_file": path }));
        } else {
            println!("engine {engine} {verb}; its token is in {} (0600)", path.display());
        }
    } else if json {
        println!("{}", json!({ "engine_id": engine, "token": token }));
    } else {
        println!("engine {engine} {verb}. Its token (shown only now; store it in a 0600 file):\n{token}");
    }
    Ok(())
}

/// `flowork-gateway engine ...`
pub async fn engine(command: EngineCommand) -> anyhow::Result<()> {
    match command {
        EngineCommand::Add { name, owner, json, token_file, data } => {
            validate_engine_id(&name)?;
            if let Some(owner) = &owner {
                validate_user_id(owner)?;
            }
            let store = open_store(&data).await?;
            let token = engine_token::generate();
            let added = store.control.add_engine(&name, owner.as_deref(), &engine_token::hash(&token)).await;
            let detail = owner.as_deref().map(|o| format!("owner={o}"));
            audit_cli_outcome(&store, "engine.add", &name, detail, &added).await?;
            added?;
            deliver_token(&name, &token, json, token_file.as_deref(), "registered")?;
        }
        EngineCommand::List { json, data } => {
            let engines = open_store(&data).await?.control.list_engines().await?;
            if json {
                let list: Vec<_> = engines
                    .iter()
                    .map(|e| {
                        json!({
                            "engine_id": e.id,
                            "owner": e.owner,
                            "created_at": flowork_common::timefmt::format_ms(e.created_at_ms),
                            "revoked": !e.is_active(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                println!("{:<32} {:<24} {:<26} STATE", "ENGINE", "OWNER", "CREATED");
                for e in engines {
                    let state = if e.is_active() { "active" } else { "revoked" };
                    let created = flowork_common::timefmt::format_ms(e.created_at_ms);
                    println!("{:<32} {:<24} {:<26} {state}", e.id, e.owner.as_deref().unwrap_or("-"), created);
                }
            }
        }
        EngineCommand::RotateToken { name, json, token_file, grace, force, data } => {
            let store = open_store(&data).await?;
            let now = SystemClock.now_ms();
            if let Some(until) = store.control.engine(&name).await?.and_then(|e| e.grace_running(now))
                && !force
            {
                anyhow::bail!(
                    "engine {name}'s previous token still works until {} (the grace of its last rotation); rotating \
                     again now would stop that token at once. Wait until then, or pass --force if it must stop now",
                    flowork_common::timefmt::format_ms(until)
                );
            }
            let token = engine_token::generate();
            let set =
                store.control.set_engine_token(&name, &engine_token::hash(&token), grace.as_millis() as u64).await;
            let detail = format!("grace={}", humantime::format_duration(grace));
            audit_cli_outcome(&store, "engine.rotate_token", &name, Some(detail), &set).await?;
            set?;
            deliver_token(&name, &token, json, token_file.as_deref(), "has a new token")?;
        }
        EngineCommand::Revoke { name, data } => {
            let store = open_store(&data).await?;
            let revoked = store.control.revoke_engine(&name).await;
            audit_cli_outcome(&store, "engine.revoke", &name, None, &revoked).await?;
            revoked?;
            println!("engine {name} revoked");
        }
        EngineCommand::Allow { name, user, data } => {
            validate_user_id(&user)?;
            let store = open_store(&data).await?;
            let allowed = store.jobs.allow_user(&name, &user, false).await;
            audit_cli_outcome(&store, "engine.allow", &format!("{name}/{user}"), None, &allowed).await?;
            let changed = allowed?;
            println!("{user} {} on the whitelist of {name}", if changed { "is now" } else { "was already" });
        }
        EngineCommand::Disallow { name, user, data } => {
            let store = open_store(&data).await?;
            let removed = store.jobs.disallow_user(&name, &user).await;
            audit_cli_outcome(&store, "engine.disallow", &format!("{name}/{user}"), None, &removed).await?;
            let changed = removed?;
            println!("{user} {} the whitelist of {name}", if changed { "was removed from" } else { "was not on" });
        }
        EngineCommand::Users { name, data } => {
            for user in open_store(&data).await?.jobs.allowed_users(&name).await? {
                println!("{}{}", user.user, if user.is_owner { " (owner)" } else { "" });
            }
        }
    }
    Ok(())
}

/// `flowork-gateway token mint|revoke ...`
pub async fn token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Mint { user, ttl, json, data } => {
            validate_user_id(&user)?;
            // Opening creates the data directory on a fresh machine.
            let store = open_store(&data).await?;
            let keys = store.key_ring(&data).await?;
            let (token, claims) = keys.mint_with_claims(&user, ttl, SystemClock.now_ms())?;
            // The token's id and expiry, never the token: enough to revoke it later.
            let detail =
                format!("jti {} expires {}", claims.jti, flowork_common::timefmt::format_ms(claims.exp * 1000));
            store.control.append_audit(AuditEntry::new("cli", "token.mint", "ok").target(&user).detail(detail)).await?;
            if json {
                println!(
                    "{}",
                    json!({ "access_token": token, "token_type": "Bearer", "expires_in": ttl.as_secs(), "jti": claims.jti })
                );
            } else {
                println!("{token}");
            }
        }
        TokenCommand::Revoke { jti, user, data } => {
            let store = open_store(&data).await?;
            // Kept until every token it can name has expired: no token lives longer than MAX_TOKEN_TTL.
            let keep_until = SystemClock.now_ms() + MAX_TOKEN_TTL.as_millis() as i64;
            if let Some(jti) = jti {
                if jti.is_empty() || jti.len() > 64 || !jti.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    anyhow::bail!("--jti takes a token id as `token mint --json` prints it (32 hex digits)");
                }
                store.tokens.revoke_jti(&jti, keep_until).await?;
                audit_cli(&store, "token.revoke", &format!("jti:{jti}")).await?;
                println!("token {jti} revoked; every gateway refuses it within 5 seconds");
            } else if let Some(user) = user {
                // Wallet users are their lowercase address: a checksummed spelling must not revoke nobody.
                let user = if user.starts_with("0x") { user.to_ascii_lowercase() } else { user };
                validate_user_id(&user)?;
                let revoked = store.tokens.revoke_user(&user, keep_until).await?;
                let detail = format!("{} refresh tokens, {} API keys", revoked.refresh_tokens, revoked.api_keys);
                store
                    .control
                    .append_audit(
                        AuditEntry::new("cli", "token.revoke", "ok").target(format!("user:{user}")).detail(&detail),
                    )
                    .await?;
                println!(
                    "every token issued to {user} so far is revoked ({detail}); every gateway refuses them within 5 seconds"
                );
            }
        }
    }
    Ok(())
}

/// `flowork-gateway keys ...`
pub async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Rotate { data } => {
            let store = open_store(&data).await?;
            let ring = store.key_ring(&data).await?;
            let rotated = store.rotate_key(&ring).await;
            let target = rotated.as_deref().unwrap_or("-").to_string();
            audit_cli_outcome(&store, "keys.rotate", &target, None, &rotated).await?;
            let kid = rotated?;
            let pruned = ring.prune(SystemClock.now_ms())?;
            println!("new signing key {kid} is now used for new tokens; {pruned} retired key(s) pruned");
        }
    }
    Ok(())
}

/// `flowork-gateway admin ...`
pub async fn admin(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Token { scope, ttl, data } => {
            let scopes = parse_scopes(&scope).map_err(anyhow::Error::msg)?;
            if ttl > MAX_ADMIN_TTL {
                anyhow::bail!("an admin token may live at most 15 minutes");
            }
            let store = open_store(&data).await?;
            let ring = store.key_ring(&data).await?;
            let minted = ring.mint_admin(&scopes, ttl, SystemClock.now_ms());
            // The token's id, so the rows of its calls (actor `admin:<id>`) can be traced to this command.
            let jti = minted.as_ref().ok().and_then(|t| ring.verify_for(t, ADMIN_AUDIENCE).ok()).map(|c| c.jti);
            let detail = format!("ttl={} id={}", humantime::format_duration(ttl), jti.as_deref().unwrap_or("-"));
            audit_cli_outcome(&store, "admin.token", &scopes.join(","), Some(detail), &minted).await?;
            let token = minted?;
            println!("{}", flowork_common::secret::wrap(flowork_common::secret::ADMIN_PREFIX, &token));
        }
    }
    Ok(())
}

/// `flowork-gateway audit ...`
pub async fn audit(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify { json, data } => {
            let report = open_store(&data).await?.control.verify_audit().await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{report}");
                if report.is_intact() {
                    println!();
                }
            }
            if !report.is_intact() {
                let first = report.problems.first().map(|p| format!(", the first: {p}")).unwrap_or_default();
                anyhow::bail!("the audit log does not verify: {} problem(s){first}", report.problems.len());
            }
        }
        AuditCommand::Show { since, json, data } => {
            let since_ms = since
                .as_deref()
                .map(|s| crate::audit::parse_since(s, SystemClock.now_ms()))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let store = open_store(&data).await?;
            let mut query = AuditQuery { since_ms, after_id: None, limit: crate::api::audit::MAX_PAGE };
            loop {
                let page = store.control.list_audit(query).await?;
                let next = page.next_after_id;
                for record in crate::api::audit::AuditLogPage::from(page).entries {
                    if json {
                        println!("{}", serde_json::to_string(&record)?);
                    } else {
                        print_record(&record);
                    }
                }
                match next {
                    Some(after) => query.after_id = Some(after),
                    None => break,
                }
            }
        }
    }
    Ok(())
}

/// `backup --to DIR`: an online copy while the gateway serves.
pub async fn backup(data: &DataArgs, to: &Path) -> anyhow::Result<()> {
    sqlite_only(data, "backup", "pg_dump")?;
    let (dir, target) = (data.data_dir.clone(), to.to_path_buf());
    let report = tokio::task::spawn_blocking(move || crate::ops::backup::backup(&dir, &target)).await??;
    println!(
        "backed up {} databases ({} jobs, {} bytes) and the signing keys to {} in {} ms",
        report.databases,
        report.jobs,
        report.bytes,
        to.display(),
        report.elapsed.as_millis()
    );
    Ok(())
}

/// `restore --from DIR [--force]`: with the gateway stopped.
pub async fn restore(data: &DataArgs, from: &Path, force: bool) -> anyhow::Result<()> {
    sqlite_only(data, "restore", "pg_restore")?;
    let (dir, source) = (data.data_dir.clone(), from.to_path_buf());
    let (report, aside) =
        tokio::task::spawn_blocking(move || crate::ops::backup::restore(&source, &dir, force)).await??;
    if let Some(aside) = aside {
        println!("moved the previous data directory aside to {}", aside.display());
    }
    println!(
        "restored {} databases ({} jobs, {} bytes) into {} in {} ms",
        report.databases,
        report.jobs,
        report.bytes,
        data.data_dir.display(),
        report.elapsed.as_millis()
    );
    Ok(())
}

/// One row of `audit show`: time, actor, action, outcome, target, then ip and detail when there are.
fn print_record(record: &crate::api::audit::AuditRecord) {
    let mut line = format!(
        "{:>6} {} {} {} {} {}",
        record.id,
        record.at,
        record.actor,
        record.action,
        record.outcome,
        record.target.as_deref().unwrap_or("-")
    );
    if let Some(ip) = &record.ip {
        line.push_str(&format!(" ip={ip}"));
    }
    if let Some(detail) = &record.detail {
        line.push_str(&format!(" detail={detail:?}"));
    }
    println!("{line}");
}

/// Who runs this command, for the audit log: `cli:<OS user>` as the environment names them (the user behind
/// `sudo` first), or `cli` when it names none. It is what the machine says, not a proof of identity.
fn cli_actor() -> String {
    ["SUDO_USER", "USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|user| !user.trim().is_empty()))
        .map_or_else(|| "cli".to_string(), |user| format!("cli:{user}"))
}

/// Records a successful operator action taken on the command line (see `audit_cli_outcome`).
async fn audit_cli(store: &Stores, action: &str, target: &str) -> anyhow::Result<()> {
    audit_cli_outcome(store, action, target, None, &Ok::<(), String>(())).await
}

/// Records an operator action taken on the command line, and checkpoints the head of the log so it covers the
/// action. `outcome` is what the action did: a failed one is recorded with its error (never a secret: actions
/// pass names, ids and settings only).
async fn audit_cli_outcome<T, E: std::fmt::Display>(
    store: &Stores,
    action: &str,
    target: &str,
    detail: Option<String>,
    outcome: &Result<T, E>,
) -> anyhow::Result<()> {
    let mut entry = AuditEntry::new(cli_actor(), action, if outcome.is_ok() { "ok" } else { "error" }).target(target);
    entry.detail = match (detail, outcome) {
        (detail, Ok(_)) => detail,
        (Some(detail), Err(error)) => Some(format!("{detail}; {error}")),
        (None, Err(error)) => Some(error.to_string()),
    };
    store.control.append_audit(entry).await?;
    store.control.checkpoint_audit().await?;
    Ok(())
}

/// Refuses a SQLite-only command on the PostgreSQL store, naming PostgreSQL's own tool.
fn sqlite_only(data: &DataArgs, command: &str, instead: &str) -> anyhow::Result<()> {
    if data.store.as_deref().is_some_and(|s| !s.is_empty()) {
        anyhow::bail!("`{command}` copies the SQLite data directory; for the PostgreSQL store use `{instead}`");
    }
    Ok(())
}

/// `migrate-store --data-dir DIR --to postgres://...`: moves the SQLite data into PostgreSQL, checked.
pub async fn migrate_store(data_dir: &Path, to: &str) -> anyhow::Result<()> {
    let report = crate::ops::migrate_store::migrate(data_dir, to).await?;
    let target = DataArgs { data_dir: data_dir.to_path_buf(), store: Some(to.to_string()) };
    audit_cli(&open_store(&target).await?, "store.migrate", &data_dir.display().to_string()).await?;
    println!(
        "moved {} engines: {} jobs ({} new this run), {} other rows new this run, {} signing keys, {} audit rows; \
         job counts and checksums match on both sides; {} ms",
        report.engines,
        report.jobs,
        report.jobs_inserted,
        report.other_rows_inserted,
        report.keys,
        report.audit_rows,
        report.elapsed_ms
    );
    Ok(())
}
