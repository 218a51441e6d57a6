//! The administrative sub-commands: engines, tokens, keys. They work while `serve` runs (WAL, busy timeout).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use flowork_common::clock::{Clock, SystemClock};
use flowork_common::ids::{validate_engine_id, validate_user_id};
use serde_json::json;

use crate::audit::AuditEntry;
use crate::auth::engine_token;
use crate::auth::scope::parse_scopes;
use crate::config::{AdminCommand, AuditCommand, DataArgs, EngineCommand, KeysCommand, TokenCommand};
use crate::secure_fs::write_private_file;
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
            store.control.add_engine(&name, owner.as_deref(), &engine_token::hash(&token)).await?;
            audit_cli(&store, "engine.add", &name).await?;
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
            store.control.set_engine_token(&name, &engine_token::hash(&token), grace.as_millis() as u64).await?;
            audit_cli(&store, "engine.rotate_token", &name).await?;
            deliver_token(&name, &token, json, token_file.as_deref(), "has a new token")?;
        }
        EngineCommand::Revoke { name, data } => {
            let store = open_store(&data).await?;
            store.control.revoke_engine(&name).await?;
            audit_cli(&store, "engine.revoke", &name).await?;
            println!("engine {name} revoked");
        }
        EngineCommand::Allow { name, user, data } => {
            validate_user_id(&user)?;
            let store = open_store(&data).await?;
            let changed = store.jobs.allow_user(&name, &user, false).await?;
            audit_cli(&store, "engine.allow", &format!("{name}/{user}")).await?;
            println!("{user} {} on the whitelist of {name}", if changed { "is now" } else { "was already" });
        }
        EngineCommand::Disallow { name, user, data } => {
            let store = open_store(&data).await?;
            let changed = store.jobs.disallow_user(&name, &user).await?;
            audit_cli(&store, "engine.disallow", &format!("{name}/{user}")).await?;
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

/// `flowork-gateway token mint ...`
pub async fn token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Mint { user, ttl, json, data } => {
            validate_user_id(&user)?;
            // Opening creates the data directory on a fresh machine.
            let keys = open_store(&data).await?.key_ring(&data).await?;
            let token = keys.mint(&user, ttl, SystemClock.now_ms())?;
            if json {
                println!("{}", json!({ "access_token": token, "token_type": "Bearer", "expires_in": ttl.as_secs() }));
            } else {
                println!("{token}");
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
            let kid = store.rotate_key(&ring).await?;
            let pruned = ring.prune(SystemClock.now_ms())?;
            audit_cli(&store, "keys.rotate", &kid).await?;
            println!("new signing key {kid} is now used for new tokens; {pruned} retired key(s) pruned");
        }
    }
    Ok(())
}

/// The longest an admin token may live.
const MAX_ADMIN_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// `flowork-gateway admin ...`
pub async fn admin(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Token { scope, ttl, data } => {
            let scopes = parse_scopes(&scope).map_err(anyhow::Error::msg)?;
            if ttl > MAX_ADMIN_TTL {
                anyhow::bail!("an admin token may live at most 15 minutes");
            }
            let store = open_store(&data).await?;
            let token = store.key_ring(&data).await?.mint_admin(&scopes, ttl, SystemClock.now_ms())?;
            audit_cli(&store, "admin.token", &scopes.join(",")).await?;
            println!("{}", flowork_common::secret::wrap(flowork_common::secret::ADMIN_PREFIX, &token));
        }
    }
    Ok(())
}

/// `flowork-gateway audit ...`
pub async fn audit(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify { data } => match open_store(&data).await?.control.verify_audit().await? {
            Ok(rows) => println!("audit chain intact: {rows} rows verified"),
            Err(broken) => anyhow::bail!("{broken}"),
        },
    }
    Ok(())
}

/// `backup --to DIR`: an online copy while the gateway serves.
pub async fn backup(data: &DataArgs, to: &Path) -> anyhow::Result<()> {
    sqlite_only(data, "backup", "pg_dump")?;
    let (dir, target) = (data.data_dir.clone(), to.to_path_buf());
    let report = tokio::task::spawn_blocking(move || crate::backup::backup(&dir, &target)).await??;
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
    let (report, aside) = tokio::task::spawn_blocking(move || crate::backup::restore(&source, &dir, force)).await??;
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

/// Records an operator action taken on the command line.
async fn audit_cli(store: &Stores, action: &str, target: &str) -> anyhow::Result<()> {
    store.control.append_audit(AuditEntry::new("cli", action, "ok").target(target)).await?;
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
    let report = crate::migrate_store::migrate(data_dir, to).await?;
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
