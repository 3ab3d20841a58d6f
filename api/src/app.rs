//! Builds and runs the HTTP application: REST under `/v1`, MCP at `/mcp`, on one
//! listener. `Application::build` binds (port 0 works for tests), `port()` tells
//! where, `run_until_stopped` serves until the shutdown future resolves.

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
        let service = open_service(config).await?;
        let shutdown = CancellationToken::new();
        let mcp_service = {
            let service = service.clone();
            StreamableHttpService::new(
                move || Ok(JesseMcp::new(service.clone())),
                Arc::new(LocalSessionManager::default()),
                StreamableHttpServerConfig::default()
                    .with_allowed_hosts(config.allowed_hosts.clone())
                    .with_allowed_origins(
                        config
                            .allowed_origins
                            .iter()
                            .filter(|o| !o.is_empty())
                            .cloned()
                            .collect::<Vec<_>>(),
                    )
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
        let tokens = crate::auth::Tokens::parse(&config.tokens)?;
        let router = crate::rest::router(service)
            .nest_service("/mcp", mcp_service)
            .layer(axum::middleware::from_fn_with_state(
                tokens.clone(),
                crate::auth::require_token,
            ))
            .layer(tower_http::trace::TraceLayer::new_for_http());
        let listener = TcpListener::bind(&config.addr)
            .await
            .with_context(|| format!("binding {} (JESSE_MCP_ADDR)", config.addr))?;
        let bound = listener.local_addr()?;
        if !bound.ip().is_loopback() && !tokens.enabled() {
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
