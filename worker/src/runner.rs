//! A runner process: one embedded CPython (the venv's), `jesse.research` imported
//! once, one job at a time, driven over pipes by the worker.
//!
//! The runner is a warm "zygote": it never runs strategy code itself. Each job
//! whose entry may run strategy code runs in a child forked from it, which
//! enters the sandbox ([`crate::sandbox`]), runs the entry, writes its answer
//! back through a pipe and exits; so nothing a job does (monkeypatching Jesse or
//! numpy, globals, files) reaches the next job. While it runs, the job's process
//! sends events on the same pipe (progress, its print and `self.log` lines), which
//! the runner forwards to the worker as they come. To stop a job (cancel, timeout)
//! the worker sends [`CANCEL`]; the runner kills the job's process at once (it is
//! disposable) and answers `interrupted`, and stays warm for the next job.
//!
//! This is the only module that touches pyo3. Python is initialised on the main
//! thread before anything else, with signal handlers installed, so the worker's
//! SIGINT raises KeyboardInterrupt inside a runaway strategy. The working
//! directory is a scratch directory of the runner's own (importing Jesse creates
//! `./storage`; a directory holding `strategies/` and `storage/` would make Jesse
//! treat it as a project and exit the process).

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use numpy::IntoPyArray;
use numpy::ndarray::Array2;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::{Py, ffi};

use crate::protocol::{CANCEL, EVENT_KEY, Ready, RunRequest, read_frame, read_rows, write_frame};
use crate::sandbox::{Sandbox, SandboxSettings};

/// Entries that run only the service's own code (no strategy): they run in the
/// runner itself, which keeps their caches (an exchange driver's HTTP session,
/// imported libraries) and, for candle imports, the network. Every other entry,
/// including any added later, runs in a fresh sandboxed process.
pub(crate) const TRUSTED_ENTRIES: &[&str] = &["fetch_candles", "sample_trial", "pairs_stats"];

/// Frames on a job's pipe, from the job's process to the runner: a kind byte, a
/// little-endian u32 length, the body. An event (a JSON object for the worker)...
const JOB_EVENT: u8 = b'E';
/// ...or the answer, last.
const JOB_ANSWER: u8 = b'A';
/// The largest event a job may send (a batch of log lines is at most 64 KiB of text
/// plus JSON escaping; the job's whole log is capped at 1 MiB).
const MAX_JOB_EVENT: usize = 8 << 20;

const RUNNER_PY: &CStr = pyo3::ffi::c_str!(include_str!("../python/jesse_mcp_runner.py"));

pub struct RunnerArgs {
    pub python: PathBuf,
    pub scratch: PathBuf,
    /// Scheduling niceness: research is batch work, so the API and the worker's
    /// own I/O stay responsive on a machine whose cores all run Jesse.
    pub nice: i32,
    pub sandbox: SandboxSettings,
}

/// What a job's entry produced.
enum Answer {
    /// Python's JSON answer (or an error report in the same shape).
    Json(String),
    /// The job's process died without answering (wait status): the runner dies
    /// the same way, so the worker treats it as a lost runner, as before forking.
    Died(i32),
}

pub fn main(args: RunnerArgs) -> anyhow::Result<()> {
    // Die with the worker: an orphaned runner could spin in a runaway strategy forever.
    // SAFETY: prctl/getppid have no memory-safety preconditions.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() == 1 {
            bail!("the worker that started this runner is gone");
        }
        // Best effort: a failure leaves the runner at the worker's priority.
        libc::setpriority(libc::PRIO_PROCESS, 0, args.nice);
        // Processes a job leaves behind are re-parented here, and killed after the job.
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
    }
    // Where the kernel groups tasks by session (autogroup, the default on desktops
    // and plain servers), niceness only ranks tasks within a group; the runner leads
    // its own session, so the same niceness is given to its group.
    // Best effort too: the file is absent without autogroup, and lowering the value
    // needs privileges. Without CAP_SYS_ADMIN the kernel takes one such write per
    // 100 ms machine-wide (EAGAIN otherwise), and runners start together.
    for _ in 0..30 {
        match std::fs::write("/proc/self/autogroup", args.nice.to_string()) {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                std::thread::sleep(std::time::Duration::from_millis(120));
            }
            _ => break,
        }
    }
    std::fs::create_dir_all(&args.scratch)
        .with_context(|| format!("creating runner scratch dir {}", args.scratch.display()))?;
    std::env::set_current_dir(&args.scratch)?;
    // Responses go to a private copy of stdout; stdout itself is pointed at stderr so
    // whatever strategies or libraries print can never corrupt the protocol.
    let mut out = BufWriter::new(protocol_stdout()?);
    let mut input = BufReader::with_capacity(1 << 20, std::io::stdin().lock());

    let started = init_python(&args.python)
        .and_then(|()| load_module())
        .and_then(|module| {
            let sandbox = prepare(&module, args.sandbox, &args.scratch)?;
            Ok((module, sandbox))
        });
    let (module, sandbox) = match started {
        Ok(started) => started,
        Err(e) => {
            let ready = Ready {
                ok: false,
                jesse_version: None,
                error: Some(format!("{e:#}")),
                sandbox: None,
            };
            write_frame(&mut out, &serde_json::to_vec(&ready)?)?;
            return Err(e);
        }
    };
    let version = Python::attach(|py| -> PyResult<String> {
        module.bind(py).getattr("JESSE_VERSION")?.extract()
    })
    .map_err(|e| anyhow::anyhow!("reading jesse version: {e}"))?;
    let ready = Ready {
        ok: true,
        jesse_version: Some(version),
        error: None,
        sandbox: Some(serde_json::to_value(&sandbox.status)?),
    };
    let protocol_fd = out.get_ref().as_raw_fd();
    write_frame(&mut out, &serde_json::to_vec(&ready)?)?;

    while let Some(frame) = read_frame(&mut input)? {
        if frame == CANCEL {
            // For a job that had already answered when the worker stopped it.
            continue;
        }
        let request: RunRequest = serde_json::from_slice(&frame).context("decoding run request")?;
        let started = Instant::now();
        let mut series = Vec::with_capacity(request.series.len());
        for header in &request.series {
            let trading = read_rows(&mut input, header.rows)?;
            let warmup = read_rows(&mut input, header.warmup_rows)?;
            series.push((header, trading, warmup));
        }
        let received_ms = started.elapsed().as_secs_f64() * 1e3;
        let mut fork_ms = None;
        // Bytes after the request can only be the worker's cancel.
        let stop_pending = !input.buffer().is_empty();
        let response = Python::attach(|py| {
            let job = Job {
                module: &module,
                sandbox: &sandbox,
                protocol_fd,
                entry: &request.entry,
                request_json: &request.request_json,
                events: &mut out,
                stop_pending,
            };
            run_one(py, job, series, &mut fork_ms)
        });
        let jesse_ms = started.elapsed().as_secs_f64() * 1e3 - received_ms;
        let body = match response {
            Ok(Answer::Json(json)) => json,
            Ok(Answer::Died(status)) => {
                reap_children();
                die_like(status)
            }
            Err(e) => Python::attach(|py| interrupted_or_crashed(py, &e)),
        };
        let fork = fork_ms.map_or(String::new(), |ms| format!(",\"job_fork_ms\":{ms:.3}"));
        let framed = format!(
            "{{\"timings\":{{\"runner_receive_ms\":{received_ms:.3},\"jesse_ms\":{jesse_ms:.3}{fork}}},\"result\":{body}}}"
        );
        write_frame(&mut out, framed.as_bytes())?;
        // After the answer is on its way: the job's process and anything it left.
        reap_children();
    }
    Ok(())
}

/// Warms Jesse up (one built-in backtest, so jobs do not each load what Jesse
/// loads on first use) and prepares the sandbox jobs enter.
fn prepare(
    module: &Py<PyModule>,
    settings: SandboxSettings,
    scratch: &Path,
) -> anyhow::Result<Sandbox> {
    let paths = Python::attach(|py| -> PyResult<Vec<String>> {
        let module = module.bind(py);
        module.getattr("warm_up")?.call0()?;
        module.getattr("sandbox_paths")?.call0()?.extract()
    })
    .map_err(|e| anyhow::anyhow!("warming Jesse up: {e}"))?;
    let paths: Vec<PathBuf> = paths.into_iter().map(PathBuf::from).collect();
    Sandbox::prepare(settings, scratch, &paths).context("preparing the runner sandbox")
}

/// One request, as the runner received it.
struct Job<'a> {
    module: &'a Py<PyModule>,
    sandbox: &'a Sandbox,
    /// The worker's end of the protocol: closed in job processes.
    protocol_fd: RawFd,
    entry: &'a str,
    request_json: &'a str,
    /// Where the job's events are forwarded (the protocol stream).
    events: &'a mut BufWriter<File>,
    /// The worker already asked to stop this job.
    stop_pending: bool,
}

fn run_one(
    py: Python<'_>,
    job: Job<'_>,
    series: Vec<(&crate::protocol::SeriesHeader, Vec<f64>, Vec<f64>)>,
    fork_ms: &mut Option<f64>,
) -> PyResult<Answer> {
    // A SIGINT aimed at the previous job may still be pending; it must not hit this one.
    let _ = py.check_signals();
    let candles = PyDict::new(py);
    let warmup = PyDict::new(py);
    for (header, trading, warm) in series {
        for (target, values, rows) in [
            (&candles, trading, header.rows),
            (&warmup, warm, header.warmup_rows),
        ] {
            if rows == 0 {
                continue;
            }
            let array = Array2::from_shape_vec((rows, 6), values)
                .expect("payload length is rows * 6 by construction")
                .into_pyarray(py);
            let entry = PyDict::new(py);
            entry.set_item("exchange", &header.exchange)?;
            entry.set_item("symbol", &header.symbol)?;
            entry.set_item("candles", array)?;
            target.set_item(&header.key, entry)?;
        }
    }
    let module = job.module.bind(py);
    let function = module.getattr(job.entry)?;
    if TRUSTED_ENTRIES.contains(&job.entry) {
        return function
            .call1((job.request_json, candles, warmup))?
            .extract()
            .map(Answer::Json);
    }
    // Runs in the job's process, inside the sandbox; `events` is its end of the job pipe.
    let call = |events: RawFd| -> PyResult<String> {
        if job.sandbox.status.enabled {
            module
                .getattr("enter_job_environment")?
                .call1((job.sandbox.job_dir(),))?;
        }
        module.getattr("begin_job")?.call1((events,))?;
        let answer = function
            .call1((job.request_json, candles, warmup))
            .and_then(|answer| answer.extract());
        // The last lines and progress; a failure here must not hide the answer.
        if let Err(e) = module.getattr("end_job").and_then(|f| f.call0()) {
            eprintln!("runner: flushing the job's events failed: {e}");
        }
        answer
    };
    job.sandbox.reset_job_dir().map_err(|e| {
        pyo3::exceptions::PyOSError::new_err(format!(
            "emptying the job scratch directory {}: {e}",
            job.sandbox.job_dir().display()
        ))
    })?;
    let stop = Stop {
        events: job.events,
        pending: job.stop_pending,
    };
    in_job_process(py, job.sandbox, job.protocol_fd, call, stop, fork_ms)
}

/// How the runner hears from the worker while a job's process runs.
struct Stop<'a> {
    /// Where the job's events go (the protocol stream to the worker).
    events: &'a mut BufWriter<File>,
    /// The worker's cancel is already buffered.
    pending: bool,
}

/// Forks the job's process, which enters the sandbox, runs `call` (which sends
/// events on the pipe), writes its answer to the pipe and exits. The runner
/// forwards the events and waits for the answer with the GIL released, and kills
/// the job's process as soon as the worker says stop.
fn in_job_process(
    py: Python<'_>,
    sandbox: &Sandbox,
    protocol_fd: RawFd,
    call: impl FnOnce(RawFd) -> PyResult<String>,
    stop: Stop<'_>,
    fork_ms: &mut Option<f64>,
) -> PyResult<Answer> {
    let os_error = |what: &str| {
        pyo3::exceptions::PyOSError::new_err(format!("{what}: {}", std::io::Error::last_os_error()))
    };
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os_error("creating the job pipe"));
    }
    let (read_fd, write_fd) = (fds[0], fds[1]);
    let forking = Instant::now();
    // SAFETY: CPython's fork protocol, with the GIL held (we are attached): its
    // locks are taken before and reinitialised after, in both processes. The
    // runner has no other thread (BLAS pools are single-threaded, see pool.rs).
    let pid = unsafe {
        ffi::PyOS_BeforeFork();
        let pid = libc::fork();
        if pid == 0 {
            ffi::PyOS_AfterFork_Child();
        } else {
            ffi::PyOS_AfterFork_Parent();
        }
        pid
    };
    if pid == 0 {
        // The job's process: never returns.
        // SAFETY: our own end of the pipe, unused here.
        unsafe { libc::close(read_fd) };
        let body = match sandbox.enter(&[protocol_fd]) {
            Err(message) => error_json("sandbox", "SandboxError", &message),
            Ok(()) => match call(write_fd) {
                Ok(json) => json,
                Err(e) => interrupted_or_crashed(py, &e),
            },
        };
        let body = if body.len() > u32::MAX as usize {
            error_json(
                "runner",
                "ResultTooLarge",
                &format!("the result is too large ({} bytes)", body.len()),
            )
        } else {
            body
        };
        let _ = py.run(
            c"import sys\nsys.stdout.flush()\nsys.stderr.flush()",
            None,
            None,
        );
        // SAFETY: the write end is this process's; _exit skips Python's teardown
        // (the runner's state is not the job's to finalise).
        unsafe {
            let mut pipe = File::from_raw_fd(write_fd);
            let _ = pipe
                .write_all(&[JOB_ANSWER])
                .and_then(|()| pipe.write_all(&(body.len() as u32).to_le_bytes()))
                .and_then(|()| pipe.write_all(body.as_bytes()));
            drop(pipe);
            libc::_exit(0);
        }
    }
    *fork_ms = Some(forking.elapsed().as_secs_f64() * 1e3);
    // SAFETY: the child's end; the runner keeps only the read end.
    unsafe { libc::close(write_fd) };
    if pid < 0 {
        // SAFETY: our read end.
        unsafe { libc::close(read_fd) };
        return Err(os_error("forking the job process"));
    }
    let Stop { events, pending } = stop;
    let answer = py.detach(move || {
        // SAFETY: the read end is owned by this File from here on.
        let pipe = unsafe { File::from_raw_fd(read_fd) };
        match follow_job(&pipe, pid, pending, events) {
            Followed::Answer(json) => Ok(json),
            Followed::Stopped => {
                wait_for(pid);
                Ok(error_json(
                    "interrupted",
                    "Stopped",
                    "the worker stopped the job (cancel or timeout); its process was killed",
                ))
            }
            Followed::Broken(why) => {
                // SAFETY: our own, not yet reaped, child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                wait_for(pid);
                Ok(error_json(
                    "runner",
                    "ProtocolError",
                    &format!("the job's process broke the runner's pipe protocol: {why}"),
                ))
            }
            Followed::Ended => Err(wait_for(pid)),
        }
    });
    Ok(match answer {
        Ok(json) => Answer::Json(json),
        Err(status) if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGXCPU => {
            Answer::Json(error_json(
                "cpu_limit",
                "SIGXCPU",
                "the job used up its CPU time (JESSE_MCP_RUNNER_CPU_SECS)",
            ))
        }
        Err(status) if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGXFSZ => {
            Answer::Json(error_json(
                "file_size_limit",
                "SIGXFSZ",
                "the job wrote a file larger than JESSE_MCP_RUNNER_FILE_SIZE_MB",
            ))
        }
        Err(status) => Answer::Died(status),
    })
}

/// How following a job's process ended.
enum Followed {
    /// Its answer.
    Answer(String),
    /// The worker said stop; the process was killed (not yet reaped).
    Stopped,
    /// It wrote something that is not a frame; it must be killed.
    Broken(String),
    /// The pipe closed without an answer (the process died).
    Ended,
}

/// Reads the job's pipe until its answer, forwarding its events to the worker as
/// `{"event": ...}` frames, while watching the worker's side (stdin) for a stop:
/// then the job's process is killed at once. Stops at the answer, not at the end
/// of the pipe, which a process the job started may hold open.
fn follow_job(
    pipe: &File,
    pid: libc::pid_t,
    stop_pending: bool,
    events: &mut BufWriter<File>,
) -> Followed {
    let kill = || {
        // SAFETY: our own child, not reaped before the caller's wait.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        Followed::Stopped
    };
    if stop_pending {
        return kill();
    }
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        let mut fds = [
            libc::pollfd {
                fd: pipe.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two initialised pollfd entries.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Followed::Ended;
        }
        if fds[1].revents != 0 {
            // The worker's cancel (or its end: the job goes with it).
            return kill();
        }
        if fds[0].revents == 0 {
            continue;
        }
        // Read what is there; a large answer in large steps.
        let want = match frame_head(&buffer) {
            Some((JOB_ANSWER, len)) => (5 + len)
                .saturating_sub(buffer.len())
                .clamp(1 << 16, 64 << 20),
            _ => 1 << 16,
        };
        let filled = buffer.len();
        buffer.resize(filled + want, 0);
        // SAFETY: reading into the `want` bytes just made available.
        let read =
            unsafe { libc::read(pipe.as_raw_fd(), buffer[filled..].as_mut_ptr().cast(), want) };
        if read < 0 {
            buffer.truncate(filled);
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Followed::Ended;
        }
        buffer.truncate(filled + read as usize);
        if read == 0 {
            return Followed::Ended;
        }
        let mut at = 0;
        while let Some((kind, len)) = frame_head(&buffer[at..]) {
            match kind {
                JOB_EVENT if len <= MAX_JOB_EVENT => {}
                JOB_ANSWER if len <= crate::protocol::MAX_FRAME => {}
                _ => return Followed::Broken(format!("a frame of kind {kind} and {len} bytes")),
            }
            if buffer.len() - at < 5 + len {
                break;
            }
            let body = &buffer[at + 5..at + 5 + len];
            if kind == JOB_ANSWER {
                return Followed::Answer(String::from_utf8_lossy(body).into_owned());
            }
            forward_event(body, events);
            at += 5 + len;
        }
        buffer.drain(..at);
    }
}

/// The kind and length of the frame at the start of `buffer`, once its head is there.
fn frame_head(buffer: &[u8]) -> Option<(u8, usize)> {
    let head = buffer.get(..5)?;
    let len = u32::from_le_bytes(head[1..5].try_into().expect("4 bytes")) as usize;
    Some((head[0], len))
}

/// Sends one event of the job to the worker; one that is not a JSON object is dropped.
fn forward_event(body: &[u8], events: &mut BufWriter<File>) {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(event) if event.is_object() => {
            let frame = serde_json::json!({ EVENT_KEY: event });
            // A worker that is gone takes the runner with it (parent-death signal).
            let _ = serde_json::to_vec(&frame).map(|bytes| write_frame(events, &bytes));
        }
        _ => eprintln!("runner: dropped an event of the job that is not a JSON object"),
    }
}

/// waitpid, through EINTR; the wait status.
fn wait_for(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waiting on our own child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    status
}

/// Kills and reaps every child of the runner: the finished job's process and
/// whatever it started (orphans are re-parented here, the runner being a subreaper).
fn reap_children() {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let list = format!("/proc/self/task/{tid}/children");
    for _ in 0..1000 {
        let pids: Vec<libc::pid_t> = std::fs::read_to_string(&list)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        for pid in &pids {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        for pid in pids {
            wait_for(pid);
        }
    }
    // Children /proc did not list (e.g. without CONFIG_PROC_CHILDREN).
    // SAFETY: non-blocking reap of any child.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
}

/// The job's process died without answering: the runner ends the same way, so
/// the worker sees a lost runner (retried, then `runner_crashed`), as a crash in
/// the runner itself always did.
fn die_like(status: i32) -> ! {
    let how = if libc::WIFSIGNALED(status) {
        format!("was killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("exited with code {}", libc::WEXITSTATUS(status))
    };
    eprintln!("runner: the job's process {how} without answering; the runner stops the same way");
    // SAFETY: resetting a signal's disposition and raising it on ourselves, or exiting.
    unsafe {
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
            libc::_exit(128 + signal);
        }
        libc::_exit(libc::WEXITSTATUS(status))
    }
}

/// An error report in the shape entries answer with.
fn error_json(kind: &str, type_name: &str, message: &str) -> String {
    serde_json::json!({
        "ok": false,
        "error": {"kind": kind, "type": type_name, "message": message, "location": null, "traceback": null}
    })
    .to_string()
}

/// Exceptions that escape `run_backtest` are not the strategy's: they are the
/// worker's interrupt (KeyboardInterrupt) or a failure of the runner itself.
fn interrupted_or_crashed(py: Python<'_>, error: &PyErr) -> String {
    let kind = if error.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) {
        "interrupted".to_string()
    } else if error.is_instance_of::<pyo3::exceptions::PyMemoryError>(py) {
        // Escaped a validation (which re-raises sandbox limits) or the runner's own code.
        "memory_limit".to_string()
    } else {
        let limit = PyModule::import(py, "jesse_mcp_runner")
            .and_then(|m| m.getattr("limit_kind"))
            .and_then(|f| f.call1((error.value(py),)))
            .and_then(|k| k.extract::<Option<String>>());
        limit.ok().flatten().unwrap_or_else(|| "runner".to_string())
    };
    let body = serde_json::json!({
        "ok": false,
        "error": {"kind": kind, "type": error.get_type(py).name().map(|n| n.to_string()).unwrap_or_default(),
                  "message": error.value(py).to_string(), "location": null, "traceback": null}
    });
    body.to_string()
}

fn load_module() -> anyhow::Result<Py<PyModule>> {
    Python::attach(|py| {
        PyModule::from_code(py, RUNNER_PY, c"jesse_mcp_runner.py", c"jesse_mcp_runner")
            .map(Bound::unbind)
    })
    .map_err(|e| anyhow::anyhow!("importing jesse_mcp_runner (and jesse.research) failed: {e}"))
}

/// Duplicates fd 1 for the protocol and points fd 1 at stderr.
fn protocol_stdout() -> anyhow::Result<File> {
    // SAFETY: plain descriptor calls on fds this process owns; the duplicate is
    // owned by the returned File from here on.
    unsafe {
        let copy = libc::dup(1);
        if copy < 0 {
            bail!("dup(stdout) failed: {}", std::io::Error::last_os_error());
        }
        if libc::dup2(2, 1) < 0 {
            bail!(
                "dup2(stderr, stdout) failed: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(File::from_raw_fd(copy))
    }
}

/// Starts CPython from the venv's interpreter path with signal handlers on, then
/// releases the GIL so `Python::attach` works as usual.
fn init_python(venv_python: &Path) -> anyhow::Result<()> {
    if !venv_python.exists() {
        bail!(
            "the Python interpreter {} does not exist; run `make venv` (ops/python-env.sh) or set JESSE_MCP_PYTHON",
            venv_python.display()
        );
    }
    let exe = CString::new(venv_python.as_os_str().as_bytes())?;
    // SAFETY: the PyConfig is initialised by PyConfig_InitPythonConfig before use and
    // cleared once; this runs once, on the main thread, before any other Python call.
    unsafe {
        if ffi::Py_IsInitialized() != 0 {
            bail!("Python is already initialised");
        }
        let mut storage = MaybeUninit::<ffi::PyConfig>::uninit();
        let config = storage.as_mut_ptr();
        ffi::PyConfig_InitPythonConfig(config);
        (*config).install_signal_handlers = 1;
        (*config).parse_argv = 0;
        (*config).write_bytecode = 1;
        let status =
            ffi::PyConfig_SetBytesString(config, &raw mut (*config).executable, exe.as_ptr());
        if ffi::PyStatus_Exception(status) != 0 {
            ffi::PyConfig_Clear(config);
            bail!("configuring Python: {}", status_message(status));
        }
        let status = ffi::Py_InitializeFromConfig(config);
        ffi::PyConfig_Clear(config);
        if ffi::PyStatus_Exception(status) != 0 {
            bail!("initialising Python: {}", status_message(status));
        }
        ffi::PyEval_SaveThread();
    }
    Ok(())
}

fn status_message(status: ffi::PyStatus) -> String {
    let text = |p: *const std::ffi::c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: CPython sets these to static NUL-terminated strings.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    format!("{}: {}", text(status.func), text(status.err_msg))
}
