//! Runner processes and the pool that hands them to jobs.
//!
//! A runner is a child process (`jesse-mcp-worker runner`) with a warm Jesse.
//! A job that runs strategy code runs in a process the runner forks for it; to
//! stop it (cancel, timeout) the worker sends the runner a cancel frame and the
//! runner kills that process at once and answers, staying warm. The runner's own
//! entries (candle imports, samplers) are stopped with SIGINT (KeyboardInterrupt).
//! Whatever does not answer within the grace period is killed with its process
//! group (SIGKILL) and the runner replaced.
//!
//! Runners start with a clean environment (unless JESSE_MCP_SANDBOX=off): no
//! tokens, database or queue URLs reach a process that runs strategy code.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Mutex, Semaphore};

use crate::protocol::{CANCEL, EVENT_KEY, MAX_FRAME, Ready, RunRequest};
use crate::sandbox::{SandboxSettings, SandboxStatus};

/// Variables a runner keeps from the worker's environment (besides `LC_*`):
/// the locale, the search path, where the venv's libraries are, and the proxy
/// and certificate settings exchange imports may need. Job processes keep less
/// (see `enter_job_environment` in the runner module).
const RUNNER_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LANGUAGE",
    "TZ",
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONHASHSEED",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
];

#[derive(Clone, Debug)]
pub struct RunnerSpec {
    pub exe: PathBuf,
    pub python: PathBuf,
    pub scratch_root: PathBuf,
    pub startup_timeout: Duration,
    pub grace: Duration,
    pub nice: i32,
    pub sandbox: SandboxSettings,
}

pub struct Runner {
    child: Child,
    stdin: BufWriter<ChildStdin>,
    stdout: FrameReader,
    pub slot: usize,
    pub jesse_version: String,
    /// What this runner's jobs are held to.
    pub sandbox: SandboxStatus,
}

/// Why a run did not produce a response from Python.
#[derive(Debug)]
pub enum RunError {
    /// The deadline passed; the runner was interrupted (and replaced if it did not stop).
    TimedOut,
    /// Cancelled by request; same handling as a timeout.
    Cancelled,
    /// The runner process died or broke the protocol; it must be replaced.
    Lost(String),
    /// The runner answered with something unusable (too large, not JSON); the
    /// job fails, it is not retried.
    BadResponse(String),
}

/// What a finished run returned: the runner's timings and Python's JSON answer.
#[derive(Debug)]
pub struct RunResponse {
    pub timings: Value,
    pub result: Value,
}

impl Runner {
    pub async fn spawn(spec: &RunnerSpec, slot: usize) -> anyhow::Result<Runner> {
        let scratch = spec.scratch_root.join(format!("runner-{slot}"));
        let mut command = Command::new(&spec.exe);
        command
            .arg("runner")
            .arg("--python")
            .arg(&spec.python)
            .arg("--scratch")
            .arg(&scratch)
            .arg("--nice")
            .arg(spec.nice.to_string())
            .arg("--sandbox")
            .arg(serde_json::to_string(&spec.sandbox)?)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if spec.sandbox.enabled {
            command.env_clear();
            for (key, value) in std::env::vars_os() {
                let name = key.to_string_lossy();
                if RUNNER_ENV.contains(&name.as_ref()) || name.starts_with("LC_") {
                    command.env(key, value);
                }
            }
            command
                .env("HOME", &scratch)
                .env("TMPDIR", scratch.join("job"));
        }
        // Job processes are forked from the runner: BLAS and OpenMP pools stay
        // single-threaded, so the runner has no thread but its own at fork time.
        for key in [
            "OPENBLAS_NUM_THREADS",
            "OMP_NUM_THREADS",
            "MKL_NUM_THREADS",
            "NUMEXPR_NUM_THREADS",
            "VECLIB_MAXIMUM_THREADS",
        ] {
            command.env(key, "1");
        }
        // Its own session (and so process group): a Ctrl-C or service-manager signal
        // aimed at the worker must not interrupt running jobs; the worker stops
        // runners itself. Its own session is also its own scheduler autogroup, where
        // the runner's niceness can rank it below the API and the databases.
        // SAFETY: setsid is async-signal-safe and touches no memory.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting runner {}", spec.exe.display()))?;
        let stdin = child.stdin.take().expect("piped");
        widen_pipe(&stdin);
        let stdin = BufWriter::with_capacity(1 << 20, stdin);
        let mut stdout = FrameReader {
            input: child.stdout.take().expect("piped"),
            buf: Vec::new(),
        };
        let ready = match tokio::time::timeout(spec.startup_timeout, read_frame(&mut stdout)).await
        {
            Err(_) => bail!(
                "runner did not become ready within {:?}",
                spec.startup_timeout
            ),
            Ok(Err(_)) => bail!("runner exited during start-up; see its log above"),
            Ok(Ok(frame)) => frame,
        };
        let ready: Ready =
            serde_json::from_slice(&ready).context("runner sent a malformed ready frame")?;
        if !ready.ok {
            bail!(
                "runner failed to start: {}",
                ready.error.unwrap_or_default()
            );
        }
        let jesse_version = ready.jesse_version.unwrap_or_default();
        let sandbox: SandboxStatus = ready
            .sandbox
            .map(serde_json::from_value)
            .transpose()
            .context("runner sent a malformed sandbox status")?
            .unwrap_or_default();
        tracing::info!(slot, pid = child.id(), jesse_version, "runner ready");
        Ok(Runner {
            child,
            stdin,
            stdout,
            slot,
            jesse_version,
            sandbox,
        })
    }

    /// Runs one request. On timeout or cancellation the runner is interrupted; if
    /// it does not answer within the grace period it is killed, and the pool
    /// replaces it at check-in.
    pub async fn run(
        &mut self,
        spec: &RunnerSpec,
        request: &RunRequest,
        payload: &[&[f64]],
        deadline: Instant,
        cancelled: impl std::future::Future<Output = ()>,
    ) -> Result<RunResponse, RunError> {
        self.run_with_events(spec, request, payload, deadline, cancelled, &mut |_| {})
            .await
    }

    /// [`Runner::run`], handing each event the job sends while it runs (its
    /// progress, its log lines: see [`crate::protocol::EVENT_KEY`]) to `on_event`.
    pub async fn run_with_events(
        &mut self,
        spec: &RunnerSpec,
        request: &RunRequest,
        payload: &[&[f64]],
        deadline: Instant,
        cancelled: impl std::future::Future<Output = ()>,
        on_event: &mut (dyn FnMut(Value) + Send),
    ) -> Result<RunResponse, RunError> {
        // Whether the whole request reached the pipe: a cancel frame must not land
        // in the middle of a payload.
        let mut sent = false;
        let exchange = async {
            let header =
                serde_json::to_vec(request).map_err(|e| RunError::BadResponse(e.to_string()))?;
            let lost = |e: std::io::Error| RunError::Lost(format!("runner pipe broke: {e}"));
            self.stdin
                .write_all(&(header.len() as u32).to_le_bytes())
                .await
                .map_err(lost)?;
            self.stdin.write_all(&header).await.map_err(lost)?;
            for part in payload {
                self.stdin
                    .write_all(bytemuck::cast_slice(part))
                    .await
                    .map_err(lost)?;
            }
            self.stdin.flush().await.map_err(lost)?;
            sent = true;
            Ok::<_, RunError>(read_answer(&mut self.stdout, on_event).await)
        };
        // `biased`: an answer that is already there wins over a deadline or cancel
        // that became ready at the same moment.
        let stop = tokio::select! {
            biased;
            frame = exchange => {
                return match frame? {
                    Ok(frame) => decode(frame),
                    Err(FrameError::TooLarge(len)) => {
                        self.kill().await;
                        Err(RunError::BadResponse(format!("the result is too large ({len} bytes)")))
                    }
                    Err(FrameError::Io(e)) => Err(RunError::Lost(format!("runner pipe broke: {e}"))),
                };
            }
            _ = tokio::time::sleep_until(deadline.into()) => RunError::TimedOut,
            _ = cancelled => RunError::Cancelled,
        };
        let forked = !crate::runner::TRUSTED_ENTRIES.contains(&request.entry.as_str());
        self.interrupt(spec, sent, forked, on_event).await;
        Err(stop)
    }

    /// Stops the running request and waits for its answer: a job in its own
    /// process is killed by the runner on a cancel frame (within milliseconds);
    /// the runner's own entries get SIGINT. SIGKILL to the whole process group
    /// after the grace period, or at once when the request was cut off half-sent
    /// (the runner is only reading, and its stream is no longer in step).
    async fn interrupt(
        &mut self,
        spec: &RunnerSpec,
        sent: bool,
        forked: bool,
        on_event: &mut (dyn FnMut(Value) + Send),
    ) {
        if !sent {
            tracing::info!(
                slot = self.slot,
                "stopped while the request was being sent; replacing the runner"
            );
            self.kill().await;
            return;
        }
        if forked {
            let cancel = async {
                self.stdin
                    .write_all(&(CANCEL.len() as u32).to_le_bytes())
                    .await?;
                self.stdin.write_all(CANCEL).await?;
                self.stdin.flush().await
            };
            if tokio::time::timeout(spec.grace, cancel).await.is_err() {
                tracing::warn!(
                    slot = self.slot,
                    "runner did not take the cancel; killing it"
                );
                self.kill().await;
                return;
            }
        } else if let Some(pid) = self.child.id() {
            // The runner leads its process group.
            // SAFETY: signalling our own child's process group.
            unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGINT) };
        }
        match tokio::time::timeout(spec.grace, read_answer(&mut self.stdout, on_event)).await {
            Ok(Ok(_)) => tracing::info!(slot = self.slot, "runner stopped the job"),
            _ => {
                tracing::warn!(slot = self.slot, "runner did not stop the job; killing it");
                self.kill().await;
            }
        }
    }

    async fn kill(&mut self) {
        if let (Some(pid), Ok(None)) = (self.child.id(), self.child.try_wait()) {
            // The job's process too (it also dies with the runner: parent-death signal).
            // SAFETY: signalling our own, not yet reaped, child's process group.
            unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
        }
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// True when the process is gone (killed, crashed) and must be replaced.
    pub fn is_dead(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits briefly for the process to exit (killing it if it lingers) and
    /// describes how it ended.
    pub async fn reap(&mut self) -> String {
        match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
            Ok(Ok(status)) => describe_exit(status),
            _ => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                "runner stopped answering and was killed".into()
            }
        }
    }

    pub async fn shutdown(mut self) {
        drop(self.stdin);
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("runner process exited with code {code}"),
        (_, Some(signal)) => format!("runner process was killed by signal {signal}"),
        _ => "runner process exited".into(),
    }
}

/// A year of candles is 25 MB; a 1 MiB pipe (the usual unprivileged maximum)
/// instead of the 64 KiB default cuts the context switches of that transfer 16-fold.
fn widen_pipe(pipe: &ChildStdin) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own; failure only leaves the default size.
    unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
}

enum FrameError {
    Io(std::io::Error),
    TooLarge(usize),
}

fn decode(frame: Vec<u8>) -> Result<RunResponse, RunError> {
    let mut value: Value = serde_json::from_slice(&frame).map_err(|e| {
        RunError::BadResponse(format!("the runner's answer is not valid JSON: {e}"))
    })?;
    Ok(RunResponse {
        timings: value["timings"].take(),
        result: value["result"].take(),
    })
}

/// Reads frames up to the request's answer, handing the events before it to `on_event`.
async fn read_answer(
    input: &mut FrameReader,
    on_event: &mut (dyn FnMut(Value) + Send),
) -> Result<Vec<u8>, FrameError> {
    loop {
        let frame = read_frame(input).await?;
        // Events are small JSON objects that start with their key; an answer never does.
        if frame.starts_with(br#"{"event":"#) {
            if let Ok(mut value) = serde_json::from_slice::<Value>(&frame) {
                on_event(value[EVENT_KEY].take());
            }
            continue;
        }
        return Ok(frame);
    }
}

/// The runner's stdout with the bytes of a frame not yet complete. Reading is
/// cancel-safe: a read dropped by a cancel or a deadline (mid-frame, e.g. in a
/// long batch of log lines) loses nothing, and the next read resumes the frame,
/// so the runner's answer to the cancel is read in step and the runner stays warm.
struct FrameReader {
    input: ChildStdout,
    buf: Vec<u8>,
}

async fn read_frame(reader: &mut FrameReader) -> Result<Vec<u8>, FrameError> {
    loop {
        if let Some(head) = reader.buf.get(..4) {
            let len = u32::from_le_bytes(head.try_into().expect("4 bytes")) as usize;
            if len > MAX_FRAME {
                return Err(FrameError::TooLarge(len));
            }
            if reader.buf.len() >= 4 + len {
                let body = reader.buf[4..4 + len].to_vec();
                reader.buf.drain(..4 + len);
                return Ok(body);
            }
            // Room for the rest of this frame, grown as its bytes arrive.
            reader
                .buf
                .reserve((4 + len - reader.buf.len()).min(1 << 20));
        }
        // `read_buf` is cancel-safe: dropped before it completes, it read nothing.
        let read = reader
            .input
            .read_buf(&mut reader.buf)
            .await
            .map_err(FrameError::Io)?;
        if read == 0 {
            return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// No runner of this worker could start for [`Pool::unavailable_after`] while a
/// job waited for one: the job fails with `runner_unavailable` instead of
/// staying `running` for as long as the runners keep failing to start.
#[derive(Debug, thiserror::Error)]
#[error(
    "no runner of this worker could start within {} s (runner start failures: see the worker's log); submit the job again once the worker is healthy",
    waited.as_secs()
)]
pub struct RunnerUnavailable {
    pub waited: Duration,
}

/// A fixed number of runners; a job checks one out and must give it back.
pub struct Pool {
    spec: RunnerSpec,
    size: usize,
    idle: Mutex<Vec<Runner>>,
    permits: Semaphore,
    /// Runners dead and not yet replaced (their respawn is under way or failing).
    down: AtomicUsize,
    /// When `down` last reached `size` (no live runner at all); None while one lives.
    all_down_since: std::sync::Mutex<Option<Instant>>,
    /// How long a job waits for a runner while none is alive before it fails.
    unavailable_after: Duration,
    pub restarts: AtomicU64,
    /// Runner processes that failed to start (respawns included), for /metrics.
    pub start_failures: AtomicU64,
}

impl Pool {
    pub async fn start(
        spec: RunnerSpec,
        size: usize,
        unavailable_after: Duration,
    ) -> anyhow::Result<Arc<Pool>> {
        let runners =
            futures::future::try_join_all((0..size).map(|slot| Runner::spawn(&spec, slot))).await?;
        let pool = Arc::new(Pool {
            spec,
            size,
            idle: Mutex::new(runners),
            permits: Semaphore::new(size),
            down: Default::default(),
            all_down_since: Default::default(),
            unavailable_after,
            restarts: Default::default(),
            start_failures: Default::default(),
        });
        pool.clone().watch_idle();
        Ok(pool)
    }

    pub fn spec(&self) -> &RunnerSpec {
        &self.spec
    }

    /// Runners alive (idle or running a job), for the worker's announcements
    /// behind /health and /ready: a dead runner whose respawn fails is not ready.
    pub fn live(&self) -> usize {
        self.size.saturating_sub(self.down.load(Ordering::SeqCst))
    }

    /// The sandbox status of one idle runner (they all share the machine).
    pub async fn sandbox_status(&self) -> Option<SandboxStatus> {
        self.idle.lock().await.first().map(|r| r.sandbox.clone())
    }

    /// A live runner. Waits while runners are busy (they come back); while none
    /// is alive (every respawn failing) it waits at most `unavailable_after`, then
    /// fails with [`RunnerUnavailable`].
    pub async fn checkout(self: &Arc<Self>) -> anyhow::Result<Runner> {
        let waiting_since = Instant::now();
        loop {
            let permit = tokio::select! {
                permit = self.permits.acquire() => permit.context("runner pool closed")?,
                () = self.none_alive_for(waiting_since) => {
                    return Err(RunnerUnavailable { waited: self.unavailable_after }.into());
                }
            };
            permit.forget();
            let runner = self.idle.lock().await.pop();
            match runner {
                // Died while idle, after the watcher last looked: replace it and
                // wait for another one rather than losing an attempt on it.
                Some(mut runner) => {
                    if !runner.is_dead() {
                        return Ok(runner);
                    }
                    self.replace(runner);
                }
                None => {
                    self.permits.add_permits(1);
                    bail!("no idle runner although a permit was free")
                }
            }
        }
    }

    /// Resolves once no runner has been alive for `unavailable_after`, counted
    /// from `since` at the earliest.
    async fn none_alive_for(&self, since: Instant) {
        loop {
            let down_since = *self.all_down_since.lock().expect("pool lock");
            if let Some(down_since) = down_since
                && down_since.max(since).elapsed() >= self.unavailable_after
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Returns a runner. A dead one is replaced in the background, so the job's
    /// outcome is recorded without waiting for a fresh interpreter.
    pub async fn checkin(self: &Arc<Self>, mut runner: Runner) {
        if !runner.is_dead() {
            self.idle.lock().await.push(runner);
            self.permits.add_permits(1);
            return;
        }
        self.replace(runner);
    }

    /// Finds runners that died while idle (killed, out of memory) and replaces
    /// them, so the pool's live count (and /ready) says so before a job meets one.
    fn watch_idle(self: Arc<Self>) {
        let pool = Arc::downgrade(&self);
        drop(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(pool) = pool.upgrade() else { return };
                if pool.permits.is_closed() {
                    return;
                }
                // Holding a permit entitles us to take one idle runner, like a job.
                let Ok(permit) = pool.permits.try_acquire() else {
                    continue;
                };
                let dead = {
                    let mut idle = pool.idle.lock().await;
                    let at = idle.iter_mut().position(Runner::is_dead);
                    at.map(|at| idle.swap_remove(at))
                };
                match dead {
                    Some(runner) => {
                        permit.forget();
                        tracing::warn!(slot = runner.slot, "idle runner died; replacing it");
                        pool.replace(runner);
                    }
                    None => drop(permit),
                }
            }
        });
    }

    /// Replaces a dead runner in the background, retrying with a backoff while
    /// starting one fails; the slot counts as down until a fresh runner is idle.
    fn replace(self: &Arc<Self>, mut runner: Runner) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        self.mark_down(1);
        let pool = Arc::clone(self);
        let slot = runner.slot;
        tokio::spawn(async move {
            let ended = runner.reap().await;
            tracing::info!(slot, ended, "replacing runner");
            let mut backoff = Duration::from_secs(1);
            let fresh = loop {
                if pool.permits.is_closed() {
                    return;
                }
                match Runner::spawn(&pool.spec, slot).await {
                    Ok(fresh) => break fresh,
                    Err(e) => {
                        pool.start_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(slot, error = %format!("{e:#}"), "respawning runner failed; retrying in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            };
            pool.idle.lock().await.push(fresh);
            pool.mark_down(-1);
            pool.permits.add_permits(1);
        });
    }

    fn mark_down(&self, delta: isize) {
        let mut since = self.all_down_since.lock().expect("pool lock");
        let down = if delta >= 0 {
            self.down.fetch_add(delta as usize, Ordering::SeqCst) + delta as usize
        } else {
            self.down.fetch_sub(delta.unsigned_abs(), Ordering::SeqCst) - delta.unsigned_abs()
        };
        if down >= self.size {
            since.get_or_insert_with(Instant::now);
        } else {
            *since = None;
        }
    }

    pub async fn shutdown(&self) {
        self.permits.close();
        for runner in self.idle.lock().await.drain(..) {
            runner.shutdown().await;
        }
    }
}
