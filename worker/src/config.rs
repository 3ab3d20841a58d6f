//! The worker's configuration, read once in `main` from flags and environment.

use std::path::PathBuf;

use jesse_mcp_core::backends::Backends;

#[derive(clap::Args, Debug, Clone)]
pub struct WorkerConfig {
    #[command(flatten)]
    pub backends: Backends,
    /// Strategies in Jesse's layout: `<dir>/<Name>/__init__.py`.
    #[arg(long, env = "JESSE_MCP_STRATEGIES_DIR", default_value = "strategies")]
    pub strategies_dir: PathBuf,
    /// The venv's python (made by `ops/python-env.sh`); runners embed its interpreter.
    #[arg(long, env = "JESSE_MCP_PYTHON", default_value = ".venv/bin/python")]
    pub python: PathBuf,
    /// Number of runner processes, i.e. jobs run at once (default: number of cores).
    #[arg(long, env = "JESSE_MCP_WORKERS")]
    pub runners: Option<usize>,
    /// A job running longer than this is interrupted and fails.
    #[arg(long, env = "JESSE_MCP_JOB_TIMEOUT_SECS", default_value_t = 1800)]
    pub job_timeout_secs: u64,
    /// Niceness of runner processes (0-19): Jesse is batch work, so requests to an
    /// API on the same machine are served first when every core runs a backtest.
    #[arg(long, env = "JESSE_MCP_RUNNER_NICE", default_value_t = 10)]
    pub runner_nice: i32,
    /// How long an interrupted runner may take to stop before it is killed.
    #[arg(long, env = "JESSE_MCP_KILL_GRACE_SECS", default_value_t = 5)]
    pub kill_grace_secs: u64,
    /// Attempts per job when runners die under it (crashes, not strategy errors).
    #[arg(long, env = "JESSE_MCP_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: i64,
    /// Control jobs (parents planning their children or combining their results;
    /// no Jesse call) this worker runs at once, besides its runner jobs.
    #[arg(long, env = "JESSE_MCP_CONTROL_SLOTS", default_value_t = 2)]
    pub control_slots: usize,
    /// On SIGTERM, how long running jobs may take to finish before they are
    /// handed back to the queue (lease released) for another worker.
    #[arg(long, env = "JESSE_MCP_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    /// Queue heartbeat: a worker silent for two of these is presumed dead and its
    /// jobs are handed to others; job leases are renewed at this pace.
    #[arg(long, env = "JESSE_MCP_HEARTBEAT_SECS", default_value_t = 10)]
    pub heartbeat_secs: u64,
    /// How often an idle worker looks for new jobs, in milliseconds. A watch on
    /// the queue file (SQLite) or a subscription to the queue's announcements
    /// (Redis) wakes idle workers as soon as a job is queued, and this is only a
    /// backstop (at least a second).
    #[arg(long, env = "JESSE_MCP_POLL_MS", default_value_t = 10)]
    pub poll_ms: u64,
    /// Memory for recently loaded candle ranges (a year of 1m candles is about 25 MB).
    #[arg(long, env = "JESSE_MCP_CANDLE_CACHE_MB", default_value_t = 512)]
    pub candle_cache_mb: usize,
    /// Per-exchange base URLs replacing the drivers' own, as JSON, e.g.
    /// `{"Binance Spot": "http://mirror.local/api"}` (mirrors, proxies, test servers).
    #[arg(long, env = "JESSE_MCP_EXCHANGE_ENDPOINTS")]
    pub exchange_endpoints: Option<String>,
    /// Log format: `pretty` or `json`.
    #[arg(long, env = "JESSE_MCP_LOG_FORMAT", default_value = "pretty")]
    pub log_format: String,
}

impl WorkerConfig {
    pub fn runner_count(&self) -> usize {
        self.runners.filter(|n| *n > 0).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }
}

impl WorkerConfig {
    /// `JESSE_MCP_EXCHANGE_ENDPOINTS` parsed: exchange name → base URL.
    pub fn exchange_endpoints(&self) -> anyhow::Result<std::collections::HashMap<String, String>> {
        match self.exchange_endpoints.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(Default::default()),
            Some(text) => serde_json::from_str(text).map_err(|e| {
                anyhow::anyhow!("JESSE_MCP_EXCHANGE_ENDPOINTS must be a JSON object of exchange name to base URL: {e}")
            }),
        }
    }
}
