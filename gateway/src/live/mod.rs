//! Live updates over Socket.IO at `/socket.io/`: a connection must present a valid access JWT in its handshake
//! `auth` (`{"token"}`) and joins its user's private room; job events come from the store's change feed, engine
//! status and drain notices from the gateway. `sync` (with a cursor) replays what a reconnecting client missed.

pub mod journal;
pub mod payload;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use socketioxide::SocketIo;
use socketioxide::adapter::{Adapter, Emitter};
use socketioxide::extract::{AckSender, Data, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide_core::adapter::DefinedAdapter;
use socketioxide_redis::{RedisAdapter, RedisAdapterCtr};
use tokio::sync::broadcast::error::RecvError;

use crate::auth::AuthError;
use crate::server::AppState;
use crate::store::changes::JobChange;
use journal::Journal;

/// How often engine status is looked at (and sent when it changed).
const ENGINE_STATUS_EVERY: Duration = Duration::from_secs(1);

/// The handshake `auth` payload.
#[derive(Debug, Deserialize)]
struct Handshake {
    token: String,
}

/// Who a socket belongs to (kept in its extensions).
#[derive(Debug, Clone)]
struct SocketUser(Arc<str>);

/// The timer that closes a socket when its token expires; stopped when the socket goes first.
#[derive(Debug, Clone)]
struct ExpiryTimer(Arc<tokio::task::AbortHandle>);

/// A refused connection; the client's `connect_error` carries this text (`<code>: <message>`).
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
struct Refused {
    code: &'static str,
    message: String,
}

/// `sync` request: the last cursor the client saw, or none for the current one.
#[derive(Debug, Default, Deserialize)]
struct SyncRequest {
    cursor: Option<String>,
}

/// `sync` answer: the missed events in order, or `reset` when they cannot all be told (reload the list).
#[derive(Debug, Serialize)]
struct SyncAnswer {
    cursor: String,
    reset: bool,
    events: Vec<SyncEvent>,
}

#[derive(Debug, Serialize)]
struct SyncEvent {
    event: &'static str,
    data: Arc<RawValue>,
}

/// The Socket.IO server: rooms in this process only, or spanning a fleet's gateways through Redis.
#[derive(Clone)]
enum LiveIo {
    Local(SocketIo),
    Redis(SocketIo<RedisAdapter<Emitter>>),
}

/// The Socket.IO layer to put in front of the router.
pub enum LiveLayer {
    Local(SocketIoLayer),
    Redis(SocketIoLayer<RedisAdapter<Emitter>>),
}

impl LiveIo {
    /// Sends to a room; with Redis, to its sockets on every gateway.
    async fn emit_to(&self, room: String, name: &'static str, data: &Arc<RawValue>) -> Result<(), String> {
        match self {
            Self::Local(io) => io.to(room).emit(name, data).await.map_err(|e| e.to_string()),
            Self::Redis(io) => io.to(room).emit(name, data).await.map_err(|e| e.to_string()),
        }
    }

    /// Sends to this gateway's own sockets (drain and engine status are this gateway's view).
    async fn emit_local(&self, name: &'static str, data: &Value) -> Result<(), String> {
        match self {
            Self::Local(io) => io.local().emit(name, data).await.map_err(|e| e.to_string()),
            Self::Redis(io) => io.local().emit(name, data).await.map_err(|e| e.to_string()),
        }
    }

    async fn close(&self) {
        match self {
            Self::Local(io) => io.close().await,
            Self::Redis(io) => io.close().await,
        }
    }
}

/// The Socket.IO side of the gateway.
pub struct Live {
    io: LiveIo,
    /// Whether rooms span a fleet (Redis): events of other gateways' commits reach this gateway's sockets
    /// without passing its journal, so a replay cannot be complete and `sync` asks for a reload instead.
    fleet: bool,
    journal: Mutex<Journal>,
    /// Connected sockets; the change feed is live exactly while this is above zero (changed under the lock).
    sockets: Mutex<usize>,
    state: AppState,
}

/// The room of one user's sockets.
fn user_room(user: &str) -> String {
    format!("user:{user}")
}

impl Live {
    /// Builds the Socket.IO layer (rooms spanning gateways through Redis when `redis` names a server) and starts
    /// the tasks that feed it; they end with the gateway's shutdown.
    pub async fn start(state: &AppState, redis: Option<&str>) -> anyhow::Result<(LiveLayer, Arc<Live>)> {
        let boot = format!("{:08x}", rand::random::<u32>());
        let (layer, io) = match redis {
            None => {
                let (layer, io) = SocketIo::builder().build_layer();
                (LiveLayer::Local(layer), LiveIo::Local(io))
            }
            Some(url) => {
                // RESP3 is what the adapter's driver speaks (Redis 7 and later).
                let url = if url.contains("protocol=") {
                    url.to_string()
                } else {
                    format!("{url}{}protocol=resp3", if url.contains('?') { '&' } else { '?' })
                };
                let client = redis::Client::open(url.as_str())?;
                let adapter = RedisAdapterCtr::new_with_redis(&client).await.map_err(|error| {
                    anyhow::anyhow!(
                        "cannot reach Redis at {} for the Socket.IO adapter: {error}",
                        crate::connection_string::redact(&url)
                    )
                })?;
                let (layer, io) = SocketIo::builder().with_adapter::<RedisAdapter<_>>(adapter).build_layer();
                (LiveLayer::Redis(layer), LiveIo::Redis(io))
            }
        };
        let live = Arc::new(Live {
            io: io.clone(),
            fleet: redis.is_some(),
            journal: Mutex::new(Journal::new(boot)),
            sockets: Mutex::new(0),
            state: state.clone(),
        });
        match &io {
            LiveIo::Local(io) => live.register(io),
            LiveIo::Redis(io) => {
                live.register(io).await?;
                // Other gateways' sockets may want this gateway's events: publish whether or not one is here.
                state.jobs.changes().set_live(true);
            }
        }
        tokio::spawn(live.clone().forward_job_changes());
        tokio::spawn(live.clone().announce_gateway());
        Ok((layer, live))
    }

    /// Registers the default namespace's handlers (the adapter's initialisation, for Redis, is what it returns).
    fn register<A: Adapter + DefinedAdapter>(self: &Arc<Self>, io: &SocketIo<A>) -> A::InitRes {
        let on_connect = {
            let live = self.clone();
            async move |socket: SocketRef<A>| live.connected(socket)
        };
        let authenticate = {
            let live = self.clone();
            async move |socket: SocketRef<A>, TryData(auth): TryData<Handshake>| live.authenticate(&socket, auth.ok())
        };
        io.ns("/", on_connect.with(authenticate))
    }

    /// Disconnects every socket (at shutdown, so the HTTP server can finish).
    pub async fn close(&self) {
        self.io.close().await;
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn authenticate<A: Adapter>(&self, socket: &SocketRef<A>, auth: Option<Handshake>) -> Result<(), Refused> {
        let Some(auth) = auth else {
            return Err(Refused {
                code: "missing_token",
                message: "the handshake auth must be {\"token\": \"<access JWT>\"}".into(),
            });
        };
        let claims = self.state.keys.verify(&auth.token).map_err(|error| Refused {
            code: if matches!(error, AuthError::ExpiredToken) { "token_expired" } else { "invalid_token" },
            message: error.to_string(),
        })?;
        if flowork_common::ids::validate_user_id(&claims.sub).is_err() {
            return Err(Refused { code: "invalid_token", message: "the token names an invalid user".into() });
        }
        socket.extensions.insert(SocketUser(Arc::from(claims.sub.as_str())));
        // The connection ends when its token does; the client reconnects with a fresh one.
        let left_ms = (claims.exp * 1000 - self.state.clock.now_ms()).max(0) as u64;
        let expiring = socket.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(left_ms)).await;
            let _ = expiring.disconnect();
        });
        socket.extensions.insert(ExpiryTimer(Arc::new(timer.abort_handle())));
        Ok(())
    }

    fn connected<A: Adapter>(self: &Arc<Self>, socket: SocketRef<A>) {
        let Some(SocketUser(user)) = socket.extensions.get::<SocketUser>() else {
            let _ = socket.disconnect();
            return;
        };
        socket.join(user_room(&user));
        {
            let mut sockets = self.sockets.lock().unwrap_or_else(PoisonError::into_inner);
            if *sockets == 0 {
                // Nobody listened until now: whatever happened meanwhile was not journaled.
                self.journal().gap();
                self.state.jobs.changes().set_live(true);
            }
            *sockets += 1;
        }
        tracing::debug!(user = %user, sid = %socket.id, "live connection");
        let live = self.clone();
        socket.on("sync", async move |socket: SocketRef<A>, Data(request): Data<SyncRequest>, ack: AckSender<A>| {
            let _ = ack.send(&live.sync(&socket, request));
        });
        let live = self.clone();
        socket.on_disconnect(async move |socket: SocketRef<A>| {
            if let Some(ExpiryTimer(timer)) = socket.extensions.get::<ExpiryTimer>() {
                timer.abort();
            }
            let mut sockets = live.sockets.lock().unwrap_or_else(PoisonError::into_inner);
            *sockets = sockets.saturating_sub(1);
            if *sockets == 0 && !live.fleet {
                live.state.jobs.changes().set_live(false);
            }
        });
        if self.state.drain.is_draining() {
            let _ = socket.emit("gateway.drain", &serde_json::json!({"draining": true}));
        }
    }

    fn sync<A: Adapter>(&self, socket: &SocketRef<A>, request: SyncRequest) -> SyncAnswer {
        let user = socket.extensions.get::<SocketUser>().map(|u| u.0).unwrap_or_else(|| Arc::from(""));
        let journal = self.journal();
        let cursor = journal.cursor();
        let Some(since) = request.cursor else {
            return SyncAnswer { cursor, reset: false, events: Vec::new() };
        };
        if self.fleet {
            // Events committed through other gateways are not in this journal: never answer with a gap.
            return SyncAnswer { cursor, reset: true, events: Vec::new() };
        }
        match journal.since(&since, &user) {
            Some(entries) => SyncAnswer {
                cursor,
                reset: false,
                events: entries.into_iter().map(|e| SyncEvent { event: e.name, data: e.data }).collect(),
            },
            None => SyncAnswer { cursor, reset: true, events: Vec::new() },
        }
    }

    /// Journals and sends every committed job change to its user's room.
    async fn forward_job_changes(self: Arc<Self>) {
        let mut feed = self.state.jobs.changes().subscribe();
        loop {
            let changes = tokio::select! {
                () = self.state.shutdown.cancelled() => return,
                received = feed.recv() => received,
            };
            match changes {
                Ok(changes) => self.send_changes(&changes).await,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "live events fell behind; reconnecting clients will reload");
                    self.journal().gap();
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    async fn send_changes(&self, changes: &[JobChange]) {
        for change in changes {
            let user: Arc<str> = Arc::from(change.job.user.as_str());
            let (name, data) = {
                let mut journal = self.journal();
                let cursor = journal.next_cursor();
                match payload::render(&change.job, change.created, &cursor) {
                    Ok((name, data)) => {
                        let data: Arc<RawValue> = Arc::from(data);
                        journal.append(user.clone(), name, data.clone());
                        (name, data)
                    }
                    Err(error) => {
                        tracing::warn!(%error, job = %change.job.id, "could not render a job event");
                        continue;
                    }
                }
            };
            if let Err(error) = self.io.emit_to(user_room(&user), name, &data).await {
                tracing::debug!(%error, "could not send a job event");
            }
        }
    }

    /// `gateway.drain` when draining starts or ends; `engine.status` for each engine whose status changed.
    async fn announce_gateway(self: Arc<Self>) {
        let mut last_draining = self.state.drain.is_draining();
        let mut last_status: std::collections::HashMap<String, Value> = Default::default();
        let mut tick = tokio::time::interval(ENGINE_STATUS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.state.shutdown.cancelled() => return,
                () = self.state.drain.changed() => {}
                _ = tick.tick() => {}
            }
            let draining = self.state.drain.is_draining();
            if draining != last_draining {
                last_draining = draining;
                let notice = serde_json::json!({"draining": draining});
                if let Err(error) = self.io.emit_local("gateway.drain", &notice).await {
                    tracing::debug!(%error, "could not send gateway.drain");
                }
            }
            if *self.sockets.lock().unwrap_or_else(PoisonError::into_inner) == 0 {
                last_status.clear();
                continue;
            }
            self.announce_engines(&mut last_status).await;
        }
    }

    async fn announce_engines(&self, last: &mut std::collections::HashMap<String, Value>) {
        let engines = match self.state.control.list_engines().await {
            Ok(engines) => engines,
            Err(error) => {
                tracing::debug!(%error, "could not list engines for engine.status");
                return;
            }
        };
        for engine in engines {
            let Ok(mut status) = crate::api::status::engine_status(&self.state, &engine).await else { continue };
            // Only what a watcher would notice: the contact time moves at every engine call.
            let mut compared = status.clone();
            if let Some(fields) = compared.as_object_mut() {
                fields.remove("last_contact");
            }
            if last.get(&engine.id) == Some(&compared) {
                continue;
            }
            last.insert(engine.id.clone(), compared);
            if let Some(fields) = status.as_object_mut() {
                fields
                    .insert("at".into(), Value::String(flowork_common::timefmt::format_ms(self.state.clock.now_ms())));
            }
            if let Err(error) = self.io.emit_local("engine.status", &status).await {
                tracing::debug!(%error, "could not send engine.status");
            }
        }
    }
}
