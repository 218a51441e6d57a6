//! Live updates over Socket.IO at `/socket.io/`: a connection must present a valid access JWT in its handshake
//! `auth` (`{"token"}`) and joins its user's private room; job events come from the store's change feed, engine
//! status (to the users allowed on the engine only) and drain notices from the gateway. `sync` (with a cursor)
//! replays what a reconnecting client missed.

pub mod fleet;
pub mod journal;
pub mod payload;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

use crate::auth::AuthError;
use crate::state::AppState;
use crate::store::changes::JobChange;
use fleet::{Heartbeat, PeerWatch, ResetReason};
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

    /// Sends to this gateway's own sockets in `rooms`.
    async fn emit_local_to(&self, rooms: Vec<String>, name: &'static str, data: &Value) -> Result<(), String> {
        if rooms.is_empty() {
            return Ok(());
        }
        match self {
            Self::Local(io) => io.local().to(rooms).emit(name, data).await.map_err(|e| e.to_string()),
            Self::Redis(io) => io.local().to(rooms).emit(name, data).await.map_err(|e| e.to_string()),
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
    /// This process's name in cursors and in the fleet's heartbeats.
    boot: String,
    /// The fleet's Redis, for heartbeats (`None` without `--redis`), and the connection to it once made.
    redis: Option<redis::Client>,
    redis_connection: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    /// Job events this gateway could not publish (told to the fleet in its heartbeat).
    lost: AtomicU64,
    /// Cancelled by `close`: job changes committed until then (a drain's last finishes) are still sent.
    closing: CancellationToken,
    /// The task forwarding job changes, awaited by `close` so nothing committed stays unsent.
    forwarder: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
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
        let mut heartbeat_client = None;
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
                heartbeat_client = Some(client);
                let (layer, io) = SocketIo::builder().with_adapter::<RedisAdapter<_>>(adapter).build_layer();
                (LiveLayer::Redis(layer), LiveIo::Redis(io))
            }
        };
        let live = Arc::new(Live {
            io: io.clone(),
            fleet: redis.is_some(),
            journal: Mutex::new(Journal::new(boot.clone())),
            sockets: Mutex::new(0),
            state: state.clone(),
            boot,
            redis: heartbeat_client,
            redis_connection: tokio::sync::Mutex::new(None),
            lost: AtomicU64::new(0),
            closing: CancellationToken::new(),
            forwarder: tokio::sync::Mutex::new(None),
        });
        match &io {
            LiveIo::Local(io) => live.register(io),
            LiveIo::Redis(io) => {
                live.register(io).await?;
                // Other gateways' sockets may want this gateway's events: publish whether or not one is here.
                state.jobs.changes().set_live(true);
            }
        }
        *live.forwarder.lock().await = Some(tokio::spawn(live.clone().forward_job_changes()));
        tokio::spawn(live.clone().announce_gateway());
        if live.redis.is_some() {
            tokio::spawn(live.clone().watch_fleet());
        }
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

    /// At shutdown, once no job runs: sends what was committed until now, says goodbye to the fleet (so no other
    /// gateway takes this stop for a crash), then disconnects every socket so the HTTP server can finish.
    pub async fn close(&self) {
        self.closing.cancel();
        if let Some(forwarder) = self.forwarder.lock().await.take()
            && let Err(error) = forwarder.await
        {
            tracing::warn!(%error, "the live event forwarder failed");
        }
        if self.redis.is_some() {
            let goodbye = Heartbeat { beat: u64::MAX, lost: self.lost.load(Ordering::Relaxed), stopped: true };
            if let Err(error) = self.write_heartbeat(goodbye).await {
                tracing::warn!(%error, "could not say goodbye to the fleet; other gateways will ask their clients to reload");
            }
        }
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
            code: match error {
                AuthError::ExpiredToken => "token_expired",
                AuthError::Refused { code, .. } => code,
                _ => "invalid_token",
            },
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
        if self.state.admission.drain.is_draining() {
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

    /// Journals and sends every committed job change to its user's room, until `close` (whatever was committed by
    /// then is sent before it ends).
    async fn forward_job_changes(self: Arc<Self>) {
        let mut feed = self.state.jobs.changes().subscribe();
        loop {
            let changes = tokio::select! {
                () = self.closing.cancelled() => {
                    loop {
                        match feed.try_recv() {
                            Ok(changes) => self.send_changes(&changes).await,
                            Err(TryRecvError::Lagged(_)) => continue,
                            Err(_) => return,
                        }
                    }
                }
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
                match payload::render(change, &cursor) {
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
                // Lost for every gateway's sockets: the fleet learns it from the heartbeat, this gateway's own
                // sockets at once.
                tracing::warn!(%error, "could not send a job event; clients will be asked to reload");
                self.lost.fetch_add(1, Ordering::Relaxed);
                self.reset_clients(&ResetReason::EventsLost(self.boot.clone())).await;
            }
        }
    }

    /// Tells this gateway's clients to reload their lists: events may have been lost.
    async fn reset_clients(&self, reason: &ResetReason) {
        tracing::warn!(reason = reason.code(), "live clients may have missed events; asking them to reload");
        let notice = serde_json::json!({"reason": reason.code()});
        if let Err(error) = self.io.emit_local("live.reset", &notice).await {
            tracing::debug!(%error, "could not send live.reset");
        }
    }

    /// In a fleet: beats each second in Redis and watches the other gateways' beats; a gateway gone without a
    /// goodbye, events another gateway failed to publish, or an unreadable Redis ask this gateway's clients to
    /// reload (`live.reset`).
    async fn watch_fleet(self: Arc<Self>) {
        let mut watch = PeerWatch::new(self.boot.clone());
        let mut tick = tokio::time::interval(fleet::EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let started = std::time::Instant::now();
        let mut beat = 0u64;
        loop {
            tokio::select! {
                () = self.closing.cancelled() => return,
                _ = tick.tick() => {}
            }
            beat += 1;
            let heartbeat = Heartbeat { beat, lost: self.lost.load(Ordering::Relaxed), stopped: false };
            let seen = match self.write_heartbeat(heartbeat).await {
                Ok(()) => self.read_heartbeats().await,
                Err(error) => Err(error),
            };
            let now_ms = started.elapsed().as_millis() as i64;
            let seen = match seen {
                Ok(seen) => Some(seen),
                Err(error) => {
                    tracing::warn!(%error, "could not read the fleet's heartbeats from Redis");
                    None
                }
            };
            for reason in watch.observe(now_ms, seen.as_ref()) {
                self.reset_clients(&reason).await;
            }
            if let Some(seen) = &seen {
                let forget = fleet::forgettable(seen, &watch, now_ms);
                if !forget.is_empty()
                    && let Err(error) = self.redis_command(redis::cmd("HDEL").arg(fleet::KEY).arg(forget)).await
                {
                    tracing::debug!(%error, "could not forget old heartbeats");
                }
            }
        }
    }

    async fn write_heartbeat(&self, heartbeat: Heartbeat) -> redis::RedisResult<()> {
        self.redis_command(redis::cmd("HSET").arg(fleet::KEY).arg(&self.boot).arg(heartbeat.encode())).await
    }

    async fn read_heartbeats(&self) -> redis::RedisResult<HashMap<String, Heartbeat>> {
        let raw: HashMap<String, String> = self.redis_query(redis::cmd("HGETALL").arg(fleet::KEY)).await?;
        Ok(raw.into_iter().filter_map(|(boot, text)| Heartbeat::decode(&text).map(|h| (boot, h))).collect())
    }

    async fn redis_command(&self, command: &redis::Cmd) -> redis::RedisResult<()> {
        self.redis_query::<()>(command).await
    }

    /// Runs a command on the kept connection (made on first use, made again after a failure).
    async fn redis_query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> redis::RedisResult<T> {
        let Some(client) = &self.redis else {
            return Err(redis::RedisError::from((redis::ErrorKind::Client, "no Redis")));
        };
        let mut kept = self.redis_connection.lock().await;
        let mut connection = match kept.as_ref() {
            Some(connection) => connection.clone(),
            None => client.get_multiplexed_async_connection().await?,
        };
        let answer = command.query_async(&mut connection).await;
        *kept = if answer.is_ok() { Some(connection) } else { None };
        answer
    }

    /// `gateway.drain` when draining starts or ends; `engine.status` for each engine whose status changed.
    async fn announce_gateway(self: Arc<Self>) {
        let mut last_draining = self.state.admission.drain.is_draining();
        let mut last_status: std::collections::HashMap<String, Value> = Default::default();
        let mut tick = tokio::time::interval(ENGINE_STATUS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.state.shutdown.cancelled() => return,
                () = self.state.admission.drain.changed() => {}
                _ = tick.tick() => {}
            }
            let draining = self.state.admission.drain.is_draining();
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

    /// `engine.status` of each engine whose status changed, only to the users allowed on it: its owner gets the
    /// operators' view (breakers with their last errors), the other whitelisted users the public one.
    async fn announce_engines(&self, last: &mut std::collections::HashMap<String, Value>) {
        let engines = match self.state.control.list_engines().await {
            Ok(engines) => engines,
            Err(error) => {
                tracing::debug!(%error, "could not list engines for engine.status");
                return;
            }
        };
        for engine in engines {
            let Ok(status) = crate::api::status::engine_status(&self.state, &engine).await else { continue };
            let mut operators = status.for_operators();
            // Only what a watcher would notice: the contact time moves at every engine call.
            let mut compared = operators.clone();
            if let Some(fields) = compared.as_object_mut() {
                fields.remove("last_contact");
            }
            if last.get(&engine.id) == Some(&compared) {
                continue;
            }
            last.insert(engine.id.clone(), compared);
            let at = Value::String(flowork_common::timefmt::format_ms(self.state.clock.now_ms()));
            let mut public = status.public;
            for view in [&mut operators, &mut public] {
                if let Some(fields) = view.as_object_mut() {
                    fields.insert("at".into(), at.clone());
                }
            }
            // A whitelist that cannot be read (a quarantined shard) leaves the owner alone told.
            let users = self.state.jobs.allowed_users(&engine.id).await.unwrap_or_default();
            let owner = engine.owner.as_deref();
            let others: Vec<String> =
                users.iter().filter(|u| Some(u.user.as_str()) != owner).map(|u| user_room(&u.user)).collect();
            let owners: Vec<String> = owner.map(user_room).into_iter().collect();
            for (rooms, view) in [(owners, &operators), (others, &public)] {
                if let Err(error) = self.io.emit_local_to(rooms, "engine.status", view).await {
                    tracing::debug!(%error, "could not send engine.status");
                }
            }
        }
    }
}
