//! How many MCP sessions (streamable HTTP, `/mcp`) the API keeps, and whose.
//!
//! rmcp's `LocalSessionManager` keeps every session until it has been idle for
//! its keep-alive, whatever their number: a client that initializes in a loop
//! and never ends its sessions fills the API's memory. [`BoundedSessions`]
//! wraps it with two caps, all sessions and each owner's (the token's name
//! when tokens are configured, the client's IP address otherwise). When a cap
//! is reached, a new session ends the oldest idle session in its way; a
//! session is idle when no request or stream of it is open. When every
//! session in the way is busy, the `initialize` is refused with
//! `mcp_sessions_exhausted` ([`admit`](BoundedSessions::admit) decides it
//! before rmcp creates anything; `app::mcp_protocol_errors` calls it).
//!
//! It never reads messages; it only counts sessions, their owners and their
//! open streams.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use futures::Stream;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::WorkerTransport;
use rmcp::transport::streamable_http_server::SessionManager;
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError, LocalSessionWorker, SessionConfig,
};
use rmcp::transport::streamable_http_server::session::{
    EventStore, RestoreOutcome, ServerSseMessage, SessionId,
};
use serde_json::json;

use crate::error::ApiError;

/// The caps and timings of MCP sessions (`ApiConfig::mcp_sessions`).
#[derive(clap::Args, Debug, Clone)]
pub struct SessionLimits {
    /// Most MCP sessions (streamable HTTP) open at once. When all are taken, a new
    /// session ends the oldest idle one; when none is idle, `initialize` gets 503
    /// `mcp_sessions_exhausted`. A session costs about 60 KB.
    #[arg(long, env = "JESSE_MCP_MAX_SESSIONS", default_value_t = 1000)]
    pub max_sessions: usize,
    /// Most MCP sessions of one token (or, without tokens, one client IP address).
    /// Beyond it, a new session ends that owner's oldest idle one; when none is
    /// idle, `initialize` gets 429 `mcp_sessions_exhausted`.
    #[arg(long, env = "JESSE_MCP_MAX_SESSIONS_PER_CLIENT", default_value_t = 100)]
    pub max_sessions_per_client: usize,
    /// An MCP session with no request for this long is ended (its client gets 404
    /// and initializes again).
    #[arg(long, env = "JESSE_MCP_SESSION_IDLE_SECS", default_value_t = 300)]
    pub session_idle_secs: u64,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_sessions: 1000,
            max_sessions_per_client: 100,
            session_idle_secs: 300,
        }
    }
}

/// Messages buffered per session channel. rmcp's default is 16; a response is
/// one message and a progress notification another, so 8 keeps a tool call's
/// progress flowing while a session costs less.
const CHANNEL_CAPACITY: usize = 8;

struct Entry {
    owner: Arc<str>,
    last_used: Instant,
    /// Requests and streams of the session that are open now.
    busy: usize,
}

#[derive(Default)]
struct State {
    sessions: HashMap<SessionId, Entry>,
    /// Sessions and admissions (admitted, not yet created) per owner.
    per_owner: HashMap<Arc<str>, usize>,
    /// Admissions not yet turned into sessions.
    admitted: usize,
}

impl State {
    fn total(&self) -> usize {
        self.sessions.len() + self.admitted
    }

    fn owned(&self, owner: &str) -> usize {
        self.per_owner.get(owner).copied().unwrap_or(0)
    }

    fn release_owner(&mut self, owner: &Arc<str>) {
        if let Some(count) = self.per_owner.get_mut(owner) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_owner.remove(owner);
            }
        }
    }

    /// The least recently used idle session (of `owner`, if given).
    fn oldest_idle(&self, owner: Option<&str>) -> Option<SessionId> {
        self.sessions
            .iter()
            .filter(|(_, e)| e.busy == 0 && owner.is_none_or(|o| *e.owner == *o))
            .min_by_key(|(_, e)| e.last_used)
            .map(|(id, _)| id.clone())
    }

    fn remove(&mut self, id: &SessionId) -> bool {
        match self.sessions.remove(id) {
            Some(entry) => {
                self.release_owner(&entry.owner);
                true
            }
            None => false,
        }
    }
}

/// rmcp's in-memory session manager under caps (see the module docs).
pub struct BoundedSessions {
    inner: LocalSessionManager,
    limits: SessionLimits,
    state: Arc<Mutex<State>>,
}

/// A slot `admit` reserved for one new session: turned into the session by
/// `create_session`, or given back when dropped unused (the initialize failed
/// before rmcp created a session).
pub struct Admission {
    owner: Arc<str>,
    state: Arc<Mutex<State>>,
    used: bool,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if !self.used {
            let mut state = self.state.lock().expect("session state");
            state.admitted -= 1;
            state.release_owner(&self.owner);
        }
    }
}

tokio::task_local! {
    /// The admission of the `initialize` being handled in this task: rmcp's
    /// `create_session` takes no request, so the HTTP layer hands it over here.
    static ADMISSION: Mutex<Option<Admission>>;
}

/// Why a new session cannot be had, as the API's error envelope.
#[derive(Debug)]
pub struct Exhausted {
    per_client: bool,
    limit: usize,
}

impl Exhausted {
    pub fn into_api_error(self) -> ApiError {
        let retry = "end sessions you no longer use (DELETE /mcp with their Mcp-Session-Id), or retry once one has been idle";
        if self.per_client {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "mcp_sessions_exhausted",
                format!(
                    "this client already has {} MCP sessions open and every one is in use; {retry}; the operator sets the cap in JESSE_MCP_MAX_SESSIONS_PER_CLIENT",
                    self.limit
                ),
            )
            .with_details(json!({"scope": "client", "limit": self.limit}))
        } else {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "mcp_sessions_exhausted",
                format!(
                    "the service has its {} MCP sessions open and every one is in use; {retry}; the operator sets the cap in JESSE_MCP_MAX_SESSIONS",
                    self.limit
                ),
            )
            .with_details(json!({"scope": "service", "limit": self.limit}))
        }
    }
}

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MCP sessions exhausted (limit {})", self.limit)
    }
}

impl std::error::Error for Exhausted {}

#[derive(Debug, thiserror::Error)]
pub enum BoundedSessionsError {
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
    #[error(transparent)]
    Exhausted(#[from] Exhausted),
}

impl BoundedSessions {
    pub fn new(limits: SessionLimits) -> Self {
        let mut inner = LocalSessionManager::default();
        let mut config = SessionConfig::default();
        config.channel_capacity = CHANNEL_CAPACITY;
        config.keep_alive = Some(Duration::from_secs(limits.session_idle_secs.max(1)));
        inner.session_config = config;
        Self {
            inner,
            limits,
            state: Arc::default(),
        }
    }

    /// Sessions open now.
    pub fn len(&self) -> usize {
        self.state.lock().expect("session state").sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reserves a slot for a new session of `owner`, ending the oldest idle
    /// session in its way (the owner's own first); refuses when every session
    /// in its way is busy.
    pub async fn admit(&self, owner: &str) -> Result<Admission, Exhausted> {
        let expired = self.expire();
        for id in expired {
            // rmcp's worker ended itself after the idle timeout; this drops
            // its handle too.
            if let Err(e) = self.inner.close_session(&id).await {
                tracing::debug!(session_id = %id, error = %e, "ending an expired MCP session");
            }
        }
        let (admission, evicted) = self.reserve(owner)?;
        for id in evicted {
            tracing::info!(session_id = %id, owner, "MCP session cap reached: ending the oldest idle session");
            if let Err(e) = self.inner.close_session(&id).await {
                tracing::warn!(session_id = %id, error = %e, "ending an evicted MCP session failed");
            }
        }
        Ok(admission)
    }

    /// Forgets the sessions idle for longer than the idle timeout (rmcp has
    /// ended them), so they count against no cap; answers their ids.
    fn expire(&self) -> Vec<SessionId> {
        let idle = Duration::from_secs(self.limits.session_idle_secs.max(1));
        let mut state = self.state.lock().expect("session state");
        let expired: Vec<SessionId> = state
            .sessions
            .iter()
            .filter(|(_, e)| e.busy == 0 && e.last_used.elapsed() >= idle)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            state.remove(id);
        }
        expired
    }

    fn reserve(&self, owner: &str) -> Result<(Admission, Vec<SessionId>), Exhausted> {
        let mut state = self.state.lock().expect("session state");
        let mut evicted = Vec::new();
        let per_client = self.limits.max_sessions_per_client.max(1);
        let max = self.limits.max_sessions.max(1);
        if state.owned(owner) >= per_client {
            let id = state.oldest_idle(Some(owner)).ok_or(Exhausted {
                per_client: true,
                limit: per_client,
            })?;
            state.remove(&id);
            evicted.push(id);
        }
        if state.total() >= max {
            // The owner's own idle sessions go first, so one client's flood
            // ends its own sessions before anyone else's.
            let id = state
                .oldest_idle(Some(owner))
                .or_else(|| state.oldest_idle(None))
                .ok_or(Exhausted {
                    per_client: false,
                    limit: max,
                })?;
            state.remove(&id);
            evicted.push(id);
        }
        let owner: Arc<str> = owner.into();
        state.admitted += 1;
        *state.per_owner.entry(owner.clone()).or_default() += 1;
        Ok((
            Admission {
                owner,
                state: self.state.clone(),
                used: false,
            },
            evicted,
        ))
    }

    /// Runs `handle` (rmcp handling an `initialize`) with `admission` for the
    /// session it creates.
    pub async fn with_admission<F: Future>(admission: Admission, handle: F) -> F::Output {
        ADMISSION.scope(Mutex::new(Some(admission)), handle).await
    }

    /// Marks a session used now; with `open`, one more of its requests or
    /// streams is open until the guard is dropped.
    fn touch(&self, id: &SessionId, open: bool) -> Option<BusyGuard> {
        let mut state = self.state.lock().expect("session state");
        let entry = state.sessions.get_mut(id)?;
        entry.last_used = Instant::now();
        if !open {
            return None;
        }
        entry.busy += 1;
        Some(BusyGuard {
            id: id.clone(),
            state: self.state.clone(),
        })
    }
}

/// One open request or stream of a session: the session is not idle (and not
/// evicted) while it lives.
struct BusyGuard {
    id: SessionId,
    state: Arc<Mutex<State>>,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let mut state = self.state.lock().expect("session state");
        if let Some(entry) = state.sessions.get_mut(&self.id) {
            entry.busy = entry.busy.saturating_sub(1);
            entry.last_used = Instant::now();
        }
    }
}

/// A session's stream that keeps the session busy while it is open.
pub struct Tracked<S> {
    inner: Pin<Box<S>>,
    _busy: Option<BusyGuard>,
}

impl<S: Stream> Stream for Tracked<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl SessionManager for BoundedSessions {
    type Error = BoundedSessionsError;
    type Transport = WorkerTransport<LocalSessionWorker>;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let admission = ADMISSION
            .try_with(|slot| slot.lock().expect("admission").take())
            .ok()
            .flatten();
        // Every initialize passes `app::mcp_protocol_errors`; one that did not is
        // held to the caps all the same, as nobody's.
        let mut admission = match admission {
            Some(admission) => admission,
            None => self.admit("unattributed").await?,
        };
        let (id, transport) = self.inner.create_session().await?;
        let mut state = self.state.lock().expect("session state");
        state.admitted -= 1;
        admission.used = true;
        state.sessions.insert(
            id.clone(),
            Entry {
                owner: admission.owner.clone(),
                last_used: Instant::now(),
                busy: 0,
            },
        );
        Ok((id, transport))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        let _busy = self.touch(id, true);
        Ok(self.inner.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        Ok(self.inner.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.state.lock().expect("session state").remove(id);
        Ok(self.inner.close_session(id).await?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let busy = self.touch(id, true);
        let stream = self.inner.create_stream(id, message).await?;
        Ok(Tracked {
            inner: Box::pin(stream),
            _busy: busy,
        })
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.touch(id, false);
        Ok(self.inner.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let busy = self.touch(id, true);
        let stream = self.inner.create_standalone_stream(id).await?;
        Ok(Tracked {
            inner: Box::pin(stream),
            _busy: busy,
        })
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let busy = self.touch(id, true);
        let stream = self.inner.resume(id, last_event_id).await?;
        Ok(Tracked {
            inner: Box::pin(stream),
            _busy: busy,
        })
    }

    async fn restore_session(
        &self,
        _id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        // No session store is configured: a session lives in one API process.
        Ok(RestoreOutcome::NotSupported)
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        None
    }
}

/// Who a new MCP session belongs to, for the per-client cap: the token's name,
/// or the client's IP address when no tokens are configured.
pub fn owner_of(request: &axum::extract::Request) -> String {
    if let Some(granted) = request.extensions().get::<crate::auth::Granted>() {
        return format!("token:{}", granted.name);
    }
    match request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        Some(axum::extract::ConnectInfo(addr)) => format!("ip:{}", addr.ip()),
        None => "unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per: usize) -> BoundedSessions {
        BoundedSessions::new(SessionLimits {
            max_sessions: max,
            max_sessions_per_client: per,
            session_idle_secs: 300,
        })
    }

    fn open(sessions: &BoundedSessions, id: &str, owner: &str) {
        let (mut admission, evicted) = sessions.reserve(owner).unwrap();
        let mut state = sessions.state.lock().unwrap();
        for id in evicted {
            assert!(!state.sessions.contains_key(&id));
        }
        state.admitted -= 1;
        admission.used = true;
        state.sessions.insert(
            id.into(),
            Entry {
                owner: owner.into(),
                last_used: Instant::now(),
                busy: 0,
            },
        );
    }

    fn ids(sessions: &BoundedSessions) -> Vec<String> {
        let mut ids: Vec<String> = sessions
            .state
            .lock()
            .unwrap()
            .sessions
            .keys()
            .map(|k| k.to_string())
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn sessions_past_the_idle_timeout_count_against_no_cap() {
        let sessions = BoundedSessions::new(SessionLimits {
            max_sessions: 2,
            max_sessions_per_client: 2,
            session_idle_secs: 60,
        });
        open(&sessions, "old", "a");
        std::thread::sleep(Duration::from_millis(2));
        open(&sessions, "busy", "a");
        std::thread::sleep(Duration::from_millis(2));
        open(&sessions, "new", "b");
        assert_eq!(ids(&sessions), ["busy", "new"]);
        let _busy = sessions.touch(&SessionId::from("busy"), true).unwrap();
        {
            let mut state = sessions.state.lock().unwrap();
            for entry in state.sessions.values_mut() {
                entry.last_used -= Duration::from_secs(61);
            }
        }
        // An open stream keeps its session, however old its last request.
        assert_eq!(sessions.expire(), [SessionId::from("new")]);
        assert_eq!(ids(&sessions), ["busy"]);
        assert_eq!(sessions.state.lock().unwrap().owned("b"), 0);
    }

    #[test]
    fn the_oldest_idle_session_goes_and_busy_ones_stay() {
        let sessions = limits(3, 2);
        open(&sessions, "a1", "a");
        std::thread::sleep(Duration::from_millis(2));
        open(&sessions, "a2", "a");
        // a's third session ends a's oldest (a1).
        std::thread::sleep(Duration::from_millis(2));
        open(&sessions, "a3", "a");
        assert_eq!(ids(&sessions), ["a2", "a3"]);
        // b fills the service; c's session then ends the oldest idle (a2).
        open(&sessions, "b1", "b");
        open(&sessions, "c1", "c");
        assert_eq!(ids(&sessions), ["a3", "b1", "c1"]);
        // Busy sessions are never ended: with all three busy, d is refused (503).
        let guards: Vec<_> = ["a3", "b1", "c1"]
            .iter()
            .map(|id| sessions.touch(&SessionId::from(*id), true).unwrap())
            .collect();
        let refused = sessions.reserve("d").err().unwrap();
        assert!(!refused.per_client);
        assert_eq!(
            refused.into_api_error().status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        drop(guards);
        open(&sessions, "d1", "d");
        assert_eq!(ids(&sessions).len(), 3);
        // An unused admission gives its slot back.
        let sessions = limits(1, 1);
        drop(sessions.reserve("a").unwrap());
        assert_eq!(sessions.state.lock().unwrap().total(), 0);
        open(&sessions, "a1", "a");
        let _busy = sessions.touch(&SessionId::from("a1"), true).unwrap();
        let refused = sessions.reserve("a").err().unwrap();
        assert!(refused.per_client);
        assert_eq!(
            refused.into_api_error().status,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}
