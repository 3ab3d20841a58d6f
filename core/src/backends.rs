//! Where the store and the queue live, shared by every binary: the embedded
//! default (SQLite files in the data directory) or servers for a deployment
//! of many processes (Postgres and Redis).

use std::path::PathBuf;

use crate::error::StoreError;
use crate::queue::Queue;
use crate::store::Store;

#[derive(clap::Args, Debug, Clone)]
pub struct Backends {
    /// Directory holding the embedded store (`store.db`) and queue (`queue.db`),
    /// and the workers' runner scratch space.
    #[arg(long, env = "JESSE_MCP_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// The results store: `sqlite:<path>` or `postgres://user@host/db`
    /// (default: `store.db` in the data directory).
    #[arg(long, env = "JESSE_MCP_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The job queue: `redis://host:port` or `sqlite:<path>`
    /// (default: `queue.db` in the data directory).
    #[arg(long, env = "JESSE_MCP_QUEUE_URL", hide_env_values = true)]
    pub queue_url: Option<String>,
    /// Prefix of the queue's Redis keys, so deployments can share one Redis.
    #[arg(long, env = "JESSE_MCP_QUEUE_NAMESPACE", default_value = "jesse-mcp")]
    pub queue_namespace: String,
}

impl Backends {
    /// Opens the store (applying migrations) and then the queue. Errors name the
    /// side that failed (`database error: ...` or `queue error: ...`).
    pub async fn open(&self) -> Result<(Store, Queue), StoreError> {
        let store = Store::open(&self.data_dir, nonempty(&self.database_url)).await?;
        let queue = Queue::open(
            &self.data_dir,
            nonempty(&self.queue_url),
            &self.queue_namespace,
        )
        .await?;
        Ok((store, queue))
    }
}

fn nonempty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}
