//! `jesse-mcp-worker`: pulls jobs from the queue and runs them in a pool of warm
//! Jesse runner processes. The same binary is the runner (`runner` subcommand,
//! started by the worker itself), so Python is initialised on a process's main
//! thread before any async runtime exists.

mod candle_cache;
mod config;
mod execute;
mod import;
mod job_events;
mod poll;
mod pool;
mod protocol;
mod runner;
mod sandbox;
mod wake;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use apalis::prelude::*;
use apalis_core::backend::ext::poll_strategy::PollWith;
use clap::{Parser, Subcommand};
use jesse_mcp_core::engine::Engine;
use jesse_mcp_core::jobs::QueuedJob;
use jesse_mcp_core::kinds::{Lane, find};
use jesse_mcp_core::queue::KindBackend;

use crate::config::WorkerConfig;

/// How often a worker woken by queue-file changes looks for work anyway.
const POLL_BACKSTOP: Duration = Duration::from_secs(1);
use crate::execute::Executor;
use crate::pool::{Pool, RunnerSpec};

#[derive(Parser)]
#[command(
    name = "jesse-mcp-worker",
    version,
    about = "Runs jesse-mcp jobs in warm Jesse runner processes"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: WorkerConfig,
}

#[derive(Subcommand)]
enum Command {
    /// Internal: one runner process, driven over stdin/stdout by a worker.
    #[command(hide = true)]
    Runner {
        #[arg(long)]
        python: PathBuf,
        #[arg(long)]
        scratch: PathBuf,
        #[arg(long, default_value_t = 0)]
        nice: i32,
        /// The sandbox settings, as JSON (`sandbox::SandboxSettings`).
        #[arg(long)]
        sandbox: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Runner {
        python,
        scratch,
        nice,
        sandbox,
    }) = cli.command
    {
        let sandbox = serde_json::from_str(&sandbox).context("--sandbox")?;
        return runner::main(runner::RunnerArgs {
            python,
            scratch,
            nice,
            sandbox,
        });
    }
    init_logging(&cli.config.log_format);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(cli.config))
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,apalis=warn"));
    // Colours only for a person at a terminal, never into files or pipes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve(config: WorkerConfig) -> anyhow::Result<()> {
    let (store, queue) = config
        .backends
        .open()
        .await
        .context("opening the store and the queue")?;
    let size = config.runner_count();
    let python = std::path::absolute(&config.python)?;
    let spec = RunnerSpec {
        exe: own_executable()?,
        python,
        scratch_root: std::path::absolute(config.backends.data_dir.join("runners"))?,
        startup_timeout: Duration::from_secs(120),
        grace: Duration::from_secs(config.kill_grace_secs),
        nice: config.runner_nice,
        sandbox: config.sandbox()?,
    };
    if !spec.sandbox.enabled {
        tracing::warn!(
            "JESSE_MCP_SANDBOX=off: STRATEGY CODE RUNS UNSANDBOXED, with this worker's uid, \
             environment, network and filesystem access (each job still gets a fresh process)"
        );
    }
    // Made now rather than at the first strategy write: the sandbox checks at
    // start that the runner uid can read it (a missing one would turn the
    // uid switch off).
    std::fs::create_dir_all(&config.strategies_dir).with_context(|| {
        format!(
            "creating the strategies directory {}",
            config.strategies_dir.display()
        )
    })?;
    tracing::info!(runners = size, strategies = %config.strategies_dir.display(), "starting runners");
    // Announced with no runner warm yet (for /ready's runners ready/total),
    // for as long as runners may take to start; the heartbeat below renews it.
    let owner = format!("worker-{}", ulid::Ulid::generate());
    let warming_ttl = (spec.startup_timeout + Duration::from_secs(10)).as_millis() as i64;
    if let Err(e) = store
        .announce_worker(&owner, 0, size as i64, warming_ttl)
        .await
    {
        tracing::warn!(error = %e, "could not announce this worker");
    }
    let pool = match Pool::start(
        spec,
        size,
        Duration::from_secs(config.runner_unavailable_secs),
    )
    .await
    {
        Ok(pool) => pool,
        Err(e) => {
            let _ = store.add_to_counter("runner_start_failures", 1).await;
            return Err(e);
        }
    };
    let sandbox = pool.sandbox_status().await.unwrap_or_default();
    sandbox::log_status(&sandbox);
    let candles = candle_cache::CandleCache::new(config.candle_cache_mb * 1024 * 1024);
    config
        .exchange_endpoints()
        .context("JESSE_MCP_EXCHANGE_ENDPOINTS")?;
    let heartbeat = Duration::from_secs(config.heartbeat_secs.max(1));
    let engine = Engine::new(store.clone(), queue.clone(), config.strategies_dir.clone());
    let executor = Arc::new(Executor {
        engine,
        owner,
        heartbeat,
        pacer: Default::default(),
        candles,
        pool: pool.clone(),
        config: config.clone(),
        running: Default::default(),
        draining: Default::default(),
    });

    let poll = Duration::from_millis(config.poll_ms);
    // On the SQLite queue, a watch on its file wakes idle workers the moment a job
    // is queued; the timer is then only a backstop.
    // On Redis, a subscription to the queue's announcements does the same.
    let wake = match queue.sqlite_file() {
        Some(file) => match wake::watch_file(&file) {
            Ok(notify) => Some(notify),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the queue file; polling every {poll:?}");
                None
            }
        },
        None => queue.watch(),
    };
    // One apalis worker per lane: the runner lane claims no more jobs than this
    // process has runners, whatever the number of kinds; the control lane
    // (parents planning children or combining results) has slots of its own.
    let mut monitor = Monitor::new();
    let mut names = Vec::new();
    for lane in Lane::ALL.iter().copied() {
        let name = format!("{}-{}", lane.queue_name(), ulid::Ulid::generate());
        let concurrency = match lane {
            Lane::Runner => size,
            Lane::Control => config.control_slots.max(1),
        };
        names.push((lane, name.clone()));
        let executor = executor.clone();
        // Idle, a worker looks for work when woken (queue file change, Redis
        // announcement) and every POLL_BACKSTOP; unwatched, every `poll`.
        let strategy = {
            let wake = wake.clone();
            move || match &wake {
                Some(notify) => poll::Every::new(POLL_BACKSTOP.max(poll)).or_when(notify.clone()),
                None => poll::Every::new(poll),
            }
        };
        monitor = match queue.backend(lane, heartbeat) {
            KindBackend::Sqlite(storage) => monitor.register(move |_| {
                WorkerBuilder::new(name.clone())
                    .backend(PollWith::new(storage.clone(), strategy()))
                    .data(executor.clone())
                    .concurrency(concurrency)
                    .build(run_job)
            }),
            KindBackend::Redis(storage) => monitor.register(move |_| {
                WorkerBuilder::new(name.clone())
                    .backend(PollWith::new(storage.clone(), strategy()))
                    .data(executor.clone())
                    .concurrency(concurrency)
                    .build(run_job)
            }),
        };
    }
    let monitor = monitor
        .shutdown_timeout(Duration::from_secs(config.shutdown_grace_secs))
        .run_with_signal(shutdown_signal());
    // The fleet's runners (a parent's default in-flight cap) count this
    // process's while it renews its entry. Only live runners count as ready
    // (/health, /ready): a change is announced within a second, not a heartbeat.
    {
        let (store, id, runners, pool) = (
            executor.engine.store().clone(),
            executor.owner.clone(),
            size as i64,
            pool.clone(),
        );
        let ttl = (heartbeat * 3).as_millis() as i64;
        tokio::spawn(async move {
            let mut announced: Option<(usize, std::time::Instant)> = None;
            loop {
                let live = pool.live();
                let due =
                    announced.is_none_or(|(last, at)| last != live || at.elapsed() >= heartbeat);
                if due {
                    match store.announce_worker(&id, live as i64, runners, ttl).await {
                        Ok(()) => announced = Some((live, std::time::Instant::now())),
                        Err(e) => {
                            tracing::warn!(error = %e, "could not renew this worker's entry")
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(1).min(heartbeat)).await;
            }
        });
    }
    // What runners enforce, for the API's /ready.
    if let Err(e) = sandbox::publish(executor.engine.store(), &sandbox).await {
        tracing::warn!(error = %e, "could not publish the sandbox status");
    }
    // Runner restarts and start failures are reported through the store, for
    // the API's /metrics.
    {
        let (pool, store) = (pool.clone(), executor.engine.store().clone());
        tokio::spawn(async move {
            let mut reported = [0, 0];
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let counts = [&pool.restarts, &pool.start_failures]
                    .map(|c| c.load(std::sync::atomic::Ordering::Relaxed));
                for (i, name) in ["runner_restarts", "runner_start_failures"]
                    .into_iter()
                    .enumerate()
                {
                    if counts[i] > reported[i]
                        && store
                            .add_to_counter(name, (counts[i] - reported[i]) as i64)
                            .await
                            .is_ok()
                    {
                        reported[i] = counts[i];
                    }
                }
            }
        });
    }
    tracing::info!(
        store = executor.engine.store().engine(),
        queue = queue.engine(),
        "worker ready; waiting for jobs"
    );
    let stopped = monitor.await;
    // Jobs still running after the grace period go back to the queue for a live
    // worker, before the runners (and the jobs in them) are stopped.
    executor.hand_back_running(&queue, &names).await;
    let _ = executor.engine.store().remove_worker(&executor.owner).await;
    tracing::info!("shutting down runners");
    pool.shutdown().await;
    stopped.context("worker monitor failed")?;
    // Detached job tasks may still wait on killed runners; they record nothing now.
    std::process::exit(0)
}

/// The binary runners are started from: this very process's executable
/// (`/proc/self/exe`, which a child execs as the inode this worker runs, even
/// after a rebuild replaced or deleted the file at its path), never the path
/// in a build directory another checkout may have rebuilt against another venv.
fn own_executable() -> anyhow::Result<PathBuf> {
    let own = PathBuf::from("/proc/self/exe");
    if own.exists() {
        return Ok(own);
    }
    tracing::warn!("/proc/self/exe is unavailable; runners start from this binary's path");
    Ok(std::env::current_exe()?)
}

async fn run_job(
    job: QueuedJob,
    executor: Data<Arc<Executor>>,
    worker: WorkerContext,
) -> Result<(), BoxDynError> {
    let executor = Arc::clone(&executor);
    let id = job.job_id.clone();
    let lane = find(&job.kind).map_or(Lane::Runner, |k| k.lane);
    let outcome = run_once(job, lane, &executor).await;
    // Done with the task, whatever the outcome: the store holds the job's state, and
    // the lost-job sweep puts back a job that still needs a run. Redis tasks are
    // acknowledged here, never by apalis (whose acknowledgement fails and stops the
    // worker when a stall already cost it the task).
    if !matches!(&outcome, Err(e) if e.is::<execute::Draining>())
        && let Err(e) = executor
            .engine
            .queue()
            .acknowledge(lane, &id, worker.name())
            .await
    {
        tracing::warn!(job.id = id, error = %e, "could not acknowledge the task");
    }
    outcome
}

async fn run_once(job: QueuedJob, lane: Lane, executor: &Arc<Executor>) -> Result<(), BoxDynError> {
    // The job runs on its own task so heartbeats and polling never stall behind it.
    let id = job.job_id.clone();
    let already = executor
        .running
        .lock()
        .expect("running jobs lock")
        .insert(id.clone(), lane);
    if already.is_some() {
        tracing::info!(
            job.id = id,
            "job delivered again while running here; skipping"
        );
        return Ok(());
    }
    let handle = {
        let executor = executor.clone();
        tokio::spawn(async move { executor.run_job(&job.job_id).await })
    };
    let outcome = handle.await;
    executor
        .running
        .lock()
        .expect("running jobs lock")
        .remove(&id);
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if e.is::<execute::Draining>() => {
            // Handed back at shutdown: leave the task to the queue (never acknowledged).
            std::future::pending::<()>().await;
            unreachable!("pending never resolves")
        }
        Ok(Err(e)) if e.is::<execute::HeldElsewhere>() => {
            // Its holder is alive; should it die, the lost-job sweep puts the job back
            // once the lease has been expired JESSE_MCP_REQUEUE_AFTER_SECS.
            tracing::info!(
                job.id = id,
                "job is leased by another live worker; leaving it there"
            );
            Ok(())
        }
        Ok(Err(e)) => {
            tracing::error!(job.id = id, error = %format!("{e:#}"), "job failed in the worker");
            Err(AbortError::new(format!("{e:#}")).into())
        }
        Err(e) => Err(AbortError::new(format!("job task panicked: {e}")).into()),
    }
}

async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {},
        r = tokio::signal::ctrl_c() => r?,
    }
    tracing::info!("signal received; finishing running jobs");
    Ok(())
}
