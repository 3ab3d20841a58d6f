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
    /// How long a claimed job waits for a runner while none of this worker's
    /// runners is alive (every respawn failing, e.g. a broken venv) before it
    /// fails with `runner_unavailable`. Busy runners are waited for without bound.
    #[arg(long, env = "JESSE_MCP_RUNNER_UNAVAILABLE_SECS", default_value_t = 120)]
    pub runner_unavailable_secs: u64,
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
    /// `off` runs strategy code without the sandbox (no Landlock, network
    /// namespace, uid switch, clean environment or rlimits; logged loudly).
    /// Each job still runs in a fresh process. Anything else: on.
    #[arg(long, env = "JESSE_MCP_SANDBOX", default_value = "on")]
    pub sandbox: String,
    /// The uid jobs run as when the service runs as root (`off`: keep uid 0,
    /// with every capability dropped). Its gid is JESSE_MCP_RUNNER_GID.
    #[arg(long, env = "JESSE_MCP_RUNNER_UID", default_value = "65534")]
    pub runner_uid: String,
    /// The gid jobs run as with JESSE_MCP_RUNNER_UID (default: the same number).
    #[arg(long, env = "JESSE_MCP_RUNNER_GID")]
    pub runner_gid: Option<u32>,
    /// Address space of a job's process (RLIMIT_AS), in MiB. A job going over
    /// it fails with `memory_limit_exceeded`.
    #[arg(long, env = "JESSE_MCP_RUNNER_MEMORY_MB", default_value_t = 4096)]
    pub runner_memory_mb: u64,
    /// CPU seconds of a job's process (RLIMIT_CPU): `cpu_limit_exceeded`.
    #[arg(long, env = "JESSE_MCP_RUNNER_CPU_SECS", default_value_t = 3600)]
    pub runner_cpu_secs: u64,
    /// Largest file a job may write (RLIMIT_FSIZE), in MiB: `file_size_limit_exceeded`.
    #[arg(long, env = "JESSE_MCP_RUNNER_FILE_SIZE_MB", default_value_t = 64)]
    pub runner_file_size_mb: u64,
    /// Processes (and threads) of the runner uid (RLIMIT_NPROC).
    #[arg(long, env = "JESSE_MCP_RUNNER_MAX_PROCS", default_value_t = 256)]
    pub runner_max_procs: u64,
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
    /// The runners' sandbox, from `JESSE_MCP_SANDBOX` and the `JESSE_MCP_RUNNER_*` limits.
    pub fn sandbox(&self) -> anyhow::Result<crate::sandbox::SandboxSettings> {
        let uid = match self.runner_uid.trim() {
            "off" | "" => None,
            text => Some(text.parse::<u32>().map_err(|_| {
                anyhow::anyhow!("JESSE_MCP_RUNNER_UID must be a numeric uid or `off`, not {text:?}")
            })?),
        };
        Ok(crate::sandbox::SandboxSettings {
            enabled: !self.sandbox.trim().eq_ignore_ascii_case("off"),
            uid,
            gid: self.runner_gid.or(uid),
            memory_mb: self.runner_memory_mb.max(256),
            cpu_secs: self.runner_cpu_secs.max(1),
            file_size_mb: self.runner_file_size_mb.max(1),
            max_procs: self.runner_max_procs.max(16),
            strategies_dir: std::path::absolute(&self.strategies_dir)?,
        })
    }

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
