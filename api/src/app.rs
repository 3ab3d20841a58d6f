//! Builds and runs the HTTP application: REST under `/v1`, MCP at `/mcp`, on one
//! listener, all of it behind `auth`'s two layers. `Application::build` binds
//! (port 0 works for tests), `port()` tells where, `run_until_stopped` serves
//! until the shutdown future resolves.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ApiConfig;
use crate::mcp::JesseMcp;
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
        let mcp_service = {
            let service = service.clone();
            StreamableHttpService::new(
                move || Ok(JesseMcp::new(service.clone())),
                Arc::new(LocalSessionManager::default()),
                // Host and Origin are checked by `auth::guard` for every route,
                // MCP included, so rmcp's own checks (one more copy of the same
                // rules) are off.
                StreamableHttpServerConfig::default()
                    .disable_allowed_hosts()
                    .disable_allowed_origins()
                    .with_cancellation_token(shutdown.child_token()),
            )
        };
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
            // Spans carry method, URI and version, never headers (tokens).
            .layer(tower_http::trace::TraceLayer::new_for_http());
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
        axum::serve(self.listener, self.router)
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
