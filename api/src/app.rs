//! Builds and runs the HTTP application: REST under `/v1`, MCP at `/mcp`, on one
//! listener, all of it behind `auth`'s two layers (and `/mcp` behind one more:
//! the JSON-RPC errors and session ends rmcp leaves to the HTTP layer).
//! `Application::build` binds (port 0 works for tests), `port()` tells where,
//! `run_until_stopped` serves until the shutdown future resolves.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ApiConfig;
use crate::mcp::JesseMcp;
use crate::mcp::sessions::BoundedSessions;
use crate::service::{Housekeeping, Service};

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
}

/// Opens the store and the queue and builds the service both frontends share.
pub async fn open_service(config: &ApiConfig) -> anyhow::Result<Service> {
    let (store, queue) = config
        .backends
        .open()
        .await
        .context("opening the store and the queue")?;
    Ok(Service::new(store, queue, config.strategies_dir.clone()))
}

impl Application {
    pub async fn build(config: &ApiConfig) -> anyhow::Result<Self> {
        // The whole app, MCP and whatever else is mounted, sits behind one gate
        // (Host, Origin, content type, then tokens): see `auth`.
        let gate = Arc::new(crate::auth::Gate::new(
            crate::auth::Tokens::parse(&config.tokens)?,
            crate::auth::RouteRules::from_routes(&crate::rest::routes()),
            &config.allowed_hosts,
            &config.allowed_origins,
        )?);
        let service = open_service(config).await?;
        let shutdown = CancellationToken::new();
        let sessions = Arc::new(BoundedSessions::new(config.mcp_sessions.clone()));
        let mcp_service = {
            let service = service.clone();
            StreamableHttpService::new(
                move || Ok(JesseMcp::new(service.clone())),
                sessions.clone(),
                // Host and Origin are checked by `auth::guard` for every route,
                // MCP included, so rmcp's own checks (one more copy of the same
                // rules) are off.
                StreamableHttpServerConfig::default()
                    .disable_allowed_hosts()
                    .disable_allowed_origins()
                    .with_max_request_body_bytes(MCP_BODY_LIMIT)
                    .with_cancellation_token(shutdown.child_token()),
            )
        };
        let mcp_service = tower::Layer::layer(
            &axum::middleware::from_fn_with_state(sessions, mcp_protocol_errors),
            mcp_service,
        );
        spawn_scheduler(
            service.clone(),
            config.scheduler_tick_ms,
            Housekeeping {
                requeue_after_ms: (config.requeue_after_secs.max(1) * 1000) as i64,
                queue_retention: std::time::Duration::from_secs(config.queue_retention_secs),
                next_vacuum_ms: 0,
            },
            shutdown.child_token(),
        );
        let router = crate::rest::router(service)
            .nest_service("/mcp", mcp_service)
            .layer(axum::middleware::map_response(label_untyped_errors))
            .layer(axum::middleware::from_fn_with_state(
                gate.clone(),
                crate::auth::require_token,
            ))
            // The dashboard's page and assets (no data: the page reads the API
            // with the visitor's token) load without a token, so the page can
            // ask for one; Host and Origin rules apply to them as to the API.
            .merge(crate::dashboard::router())
            .layer(axum::middleware::from_fn_with_state(
                gate.clone(),
                crate::auth::guard,
            ))
            // Spans carry method, URI (query values that could be a token
            // redacted) and version, never headers (tokens).
            .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(request_span));
        let listener = TcpListener::bind(&config.addr)
            .await
            .with_context(|| format!("binding {} (JESSE_MCP_ADDR)", config.addr))?;
        let bound = listener.local_addr()?;
        if !bound.ip().is_loopback() && !gate.tokens_enabled() {
            anyhow::bail!(
                "refusing to listen on {bound} without tokens: set JESSE_MCP_TOKENS (token=scopes) or bind to 127.0.0.1"
            );
        }
        Ok(Self {
            listener,
            router,
            shutdown,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub async fn run_until_stopped(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let token = self.shutdown.clone();
        tokio::spawn(async move {
            stop.await;
            token.cancel();
        });
        let token = self.shutdown.clone();
        // The client's address is the owner of its MCP sessions when no
        // tokens are configured (the per-client session cap).
        let app = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { token.cancelled_owned().await })
            .await
            .context("serving HTTP")
    }
}

/// Runs scheduler ticks (the lost-job sweep, queue vacuum, due top-ups) until
/// shutdown; only the lease holder among API instances acts.
fn spawn_scheduler(
    service: Service,
    tick_ms: u64,
    mut housekeeping: Housekeeping,
    stop: CancellationToken,
) {
    let holder = format!("api-{}", ulid::Ulid::generate());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(tick_ms.max(50)));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = service.scheduler_tick(&holder, &mut housekeeping).await {
                        tracing::warn!(error = %e, "scheduler tick failed");
                    }
                }
            }
        }
    });
}

/// The span of one HTTP request, as tower-http's default one (debug level:
/// method, URI, version) but with the query redacted by [`redacted_uri`].
fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %request.method(),
        uri = %redacted_uri(request.uri()),
        version = ?request.version(),
    )
}

/// A request's path and query for logs. A token is refused in the query
/// (only `Authorization` carries one), but a client may still send it there:
/// a value is logged only when it is shorter than a token can be (16
/// characters, `auth::Tokens::parse`) under a name that does not suggest a
/// secret; any other is `[redacted]`.
fn redacted_uri(uri: &axum::http::Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_string();
    };
    let secret_name = |name: &str| {
        let name = name.to_ascii_lowercase();
        [
            "token", "key", "secret", "auth", "pass", "bearer", "sig", "cred", "session",
        ]
        .iter()
        .any(|s| name.contains(s))
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if value.len() < 16 && !secret_name(name) => pair.to_string(),
            Some((name, _)) => format!("{name}=[redacted]"),
            None if pair.len() < 16 && !secret_name(pair) => pair.to_string(),
            None => "[redacted]".to_string(),
        })
        .collect();
    format!("{}?{}", uri.path(), pairs.join("&"))
}

/// The largest JSON-RPC message `/mcp` reads (rmcp's default).
const MCP_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// What the JSON-RPC and MCP specs ask of `/mcp` and rmcp leaves out. A POST
/// body that is no JSON is a parse error (-32700), JSON that is no JSON-RPC 2.0
/// message an invalid request (-32600), a known method whose params have the
/// wrong shape invalid params (-32602): HTTP 400 with the JSON-RPC error as
/// the body (rmcp answers all three with a 415 in plain text). An `initialize`
/// (a POST without a session id) first gets a slot among the capped sessions
/// (`mcp::sessions`), or 429/503 `mcp_sessions_exhausted`. A DELETE ends
/// its session with 204 and answers 404 for a session that is not (or no
/// longer) there, as a POST or GET naming it does.
async fn mcp_protocol_errors(
    axum::extract::State(sessions): axum::extract::State<Arc<BoundedSessions>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{Method, StatusCode, header};
    use axum::response::IntoResponse;
    use rmcp::transport::streamable_http_server::session::SessionManager;
    match *request.method() {
        Method::POST
            if request
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    v.trim_start()
                        .to_ascii_lowercase()
                        .starts_with("application/json")
                }) =>
        {
            let (parts, body) = request.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, MCP_BODY_LIMIT).await else {
                return (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("Payload Too Large: request body exceeds {MCP_BODY_LIMIT} bytes"),
                )
                    .into_response();
            };
            if let Some((code, id, message)) = jsonrpc_refusal(&bytes) {
                let error = serde_json::json!({
                    "jsonrpc": "2.0",
                    "id": id,
                    "error": {"code": code, "message": message},
                });
                return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
            }
            let initialize = !parts.headers.contains_key("mcp-session-id") && is_initialize(&bytes);
            let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
            if !initialize {
                return next.run(request).await;
            }
            let owner = crate::mcp::sessions::owner_of(&request);
            match sessions.admit(&owner).await {
                Ok(admission) => {
                    BoundedSessions::with_admission(admission, next.run(request)).await
                }
                Err(refused) => {
                    tracing::warn!(owner, "refused: MCP sessions exhausted");
                    let mut response = refused.into_api_error().into_response();
                    response.headers_mut().insert(
                        header::RETRY_AFTER,
                        axum::http::HeaderValue::from_static("5"),
                    );
                    response
                }
            }
        }
        Method::DELETE => {
            let session = request
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(Arc::<str>::from);
            if let Some(id) = &session
                && !sessions.has_session(id).await.unwrap_or(false)
            {
                return (StatusCode::NOT_FOUND, "Not Found: Session not found").into_response();
            }
            let response = next.run(request).await;
            if response.status() == StatusCode::ACCEPTED {
                return StatusCode::NO_CONTENT.into_response();
            }
            response
        }
        _ => next.run(request).await,
    }
}

/// Whether a POSTed body (already found to be a JSON-RPC message) is an
/// `initialize` request, the one message that creates a session.
fn is_initialize(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Message<'a> {
        #[serde(borrow, default)]
        method: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_slice::<Message>(body).is_ok_and(|m| m.method.as_deref() == Some("initialize"))
}

/// Why a POSTed body is no acceptable JSON-RPC message, as (code, id, message);
/// None when it is one (rmcp then handles it, unknown methods included).
fn jsonrpc_refusal(body: &[u8]) -> Option<(i32, serde_json::Value, String)> {
    use rmcp::model::ClientJsonRpcMessage;
    use serde_json::Value;
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(e) => {
            return Some((
                -32700,
                Value::Null,
                format!("Parse error: the body is not JSON: {e}"),
            ));
        }
    };
    let invalid = |id: Value, why: &str| Some((-32600, id, format!("Invalid Request: {why}")));
    let Value::Object(message) = &value else {
        let why = if value.is_array() {
            "batches are not supported; send one JSON-RPC message per request"
        } else {
            "a JSON-RPC message is a JSON object"
        };
        return invalid(Value::Null, why);
    };
    // An id that is itself invalid is not echoed (JSON-RPC: null when unknown).
    let id = message.get("id").cloned();
    let echo = match &id {
        Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
        _ => Value::Null,
    };
    if message.get("jsonrpc") != Some(&Value::from("2.0")) {
        return invalid(echo, "\"jsonrpc\" must be \"2.0\"");
    }
    if let Some(id) = &id
        && !(id.is_string() || id.as_i64().is_some())
    {
        return invalid(Value::Null, "\"id\" must be a string or an integer");
    }
    match message.get("method") {
        Some(Value::String(method)) => {
            match message.get("params") {
                None | Some(Value::Object(_)) => {}
                Some(_) => {
                    return Some((
                        -32602,
                        echo,
                        format!("Invalid params: the params of {method} must be an object"),
                    ));
                }
            }
            if serde_json::from_value::<ClientJsonRpcMessage>(value.clone()).is_err()
                || known_method_as_custom(&value)
            {
                return Some((
                    -32602,
                    echo,
                    format!("Invalid params: the params do not match what {method} takes"),
                ));
            }
            None
        }
        Some(_) => invalid(echo, "\"method\" must be a string"),
        // A response or an error from the client (to a server request).
        None if message.contains_key("result") || message.contains_key("error") => {
            if id.is_none() {
                return invalid(
                    Value::Null,
                    "a response needs the id of the request it answers",
                );
            }
            serde_json::from_value::<ClientJsonRpcMessage>(value.clone())
                .is_err()
                .then(|| {
                    (
                        -32600,
                        echo,
                        "Invalid Request: not a JSON-RPC response".into(),
                    )
                })
        }
        None => invalid(
            echo,
            "no \"method\" (a request or notification) and no \"result\" or \"error\" (a response)",
        ),
    }
}

/// rmcp reads a message with a known method but params it cannot take as a
/// custom request or notification: that is invalid params, not an unknown method.
fn known_method_as_custom(value: &serde_json::Value) -> bool {
    use rmcp::model::{ClientJsonRpcMessage, ClientNotification, ClientRequest};
    let method = value["method"].as_str().unwrap_or_default();
    let custom = match serde_json::from_value::<ClientJsonRpcMessage>(value.clone()) {
        Ok(ClientJsonRpcMessage::Request(r)) => {
            matches!(r.request, ClientRequest::CustomRequest(_))
        }
        Ok(ClientJsonRpcMessage::Notification(n)) => {
            matches!(n.notification, ClientNotification::CustomNotification(_))
        }
        _ => false,
    };
    custom && KNOWN_METHODS.contains(&method)
}

/// The methods of the MCP revisions rmcp speaks that a client sends.
const KNOWN_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "tasks/get",
    "tasks/cancel",
    "tasks/list",
    "tasks/result",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

/// The MCP transport (rmcp) answers its own refusals (406 without a usable
/// Accept header, 400 without a session id, 404 for an ended session) as text
/// without a Content-Type; they are labelled `text/plain`, as documented.
async fn label_untyped_errors(mut response: axum::response::Response) -> axum::response::Response {
    use axum::body::HttpBody;
    let status = response.status();
    if (status.is_client_error() || status.is_server_error())
        && !response
            .headers()
            .contains_key(axum::http::header::CONTENT_TYPE)
        && response.body().size_hint().exact() != Some(0)
    {
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_that_could_be_tokens_are_redacted() {
        let uri = |u: &str| axum::http::Uri::try_from(u).unwrap();
        assert_eq!(redacted_uri(&uri("/v1/jobs")), "/v1/jobs");
        assert_eq!(
            redacted_uri(&uri("/v1/jobs?status=running&limit=5")),
            "/v1/jobs?status=running&limit=5"
        );
        for leak in [
            "/v1/jobs?token=s3cr3t-t0ken-0123456789",
            "/v1/jobs?access_token=short",
            "/v1/jobs?limit=5&x=s3cr3t-t0ken-0123456789",
            "/v1/jobs?s3cr3t-t0ken-0123456789",
        ] {
            let logged = redacted_uri(&uri(leak));
            assert!(
                !logged.contains("s3cr3t") && !logged.contains("short"),
                "{leak} -> {logged}"
            );
            assert!(logged.contains("[redacted]"), "{logged}");
        }
    }
}
