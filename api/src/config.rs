//! The API's configuration, read once in `main` from flags and environment.

use std::path::PathBuf;

use jesse_mcp_core::backends::Backends;

#[derive(clap::Args, Debug, Clone)]
pub struct ApiConfig {
    /// Address to serve REST and MCP (streamable HTTP at /mcp) on.
    #[arg(long, env = "JESSE_MCP_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    #[command(flatten)]
    pub backends: Backends,
    #[command(flatten)]
    pub mcp_sessions: crate::mcp::sessions::SessionLimits,
    /// Strategies in Jesse's layout: `<dir>/<Name>/__init__.py`.
    #[arg(long, env = "JESSE_MCP_STRATEGIES_DIR", default_value = "strategies")]
    pub strategies_dir: PathBuf,
    /// Host headers the service answers (REST, MCP and the dashboard alike),
    /// comma-separated: `host` (any port) or `host:port`; `*` accepts any Host.
    /// Loopback names by default; another Host gets 421 `host_not_allowed`.
    #[arg(
        long,
        env = "JESSE_MCP_ALLOWED_HOSTS",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1,::1"
    )]
    pub allowed_hosts: Vec<String>,
    /// Bearer tokens and their scopes: `token=read+run,name:othertoken=admin` (scopes:
    /// read, run, strategies:write, admin; the optional name, else `token<N>` by
    /// position, is what logs and the audit trail show). Required to listen on a
    /// non-loopback address.
    #[arg(
        long,
        env = "JESSE_MCP_TOKENS",
        default_value = "",
        hide_env_values = true
    )]
    pub tokens: String,
    /// Web origins, besides the service's own, whose pages may call it from a
    /// browser (comma-separated `scheme://host[:port]`, `scheme://host:*`, `null`;
    /// a missing port is the scheme's default). Other origins get 403
    /// `origin_not_allowed`; requests without an Origin (not from a browser) pass.
    #[arg(
        long,
        env = "JESSE_MCP_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub allowed_origins: Vec<String>,
    /// How often the scheduler checks for due top-ups, in milliseconds.
    #[arg(long, env = "JESSE_MCP_SCHEDULER_TICK_MS", default_value_t = 5000)]
    pub scheduler_tick_ms: u64,
    /// A job queued this long is checked against the queue, and enqueued again if
    /// the queue lost it (a submit cut off mid-way, a queue restarted without data).
    #[arg(long, env = "JESSE_MCP_REQUEUE_AFTER_SECS", default_value_t = 60)]
    pub requeue_after_secs: u64,
    /// How long the queue keeps the bookkeeping of tasks that ended (the store
    /// keeps every job's history); older entries are vacuumed at least once a minute.
    #[arg(long, env = "JESSE_MCP_QUEUE_RETENTION_SECS", default_value_t = 3600)]
    pub queue_retention_secs: u64,
    /// Log format: `pretty` or `json`.
    #[arg(long, env = "JESSE_MCP_LOG_FORMAT", default_value = "pretty")]
    pub log_format: String,
}
