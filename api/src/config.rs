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
    /// Strategies in Jesse's layout: `<dir>/<Name>/__init__.py`.
    #[arg(long, env = "JESSE_MCP_STRATEGIES_DIR", default_value = "strategies")]
    pub strategies_dir: PathBuf,
    /// Host headers the MCP endpoint accepts, comma-separated (loopback names by default).
    #[arg(
        long,
        env = "JESSE_MCP_ALLOWED_HOSTS",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1,::1"
    )]
    pub allowed_hosts: Vec<String>,
    /// Bearer tokens and their scopes: `token=read+run,othertoken=admin` (scopes: read,
    /// run, strategies:write, admin). Required to listen on a non-loopback address.
    #[arg(
        long,
        env = "JESSE_MCP_TOKENS",
        default_value = "",
        hide_env_values = true
    )]
    pub tokens: String,
    /// Origins the MCP endpoint accepts (comma-separated; empty: not checked).
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
