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

    let zygote = Zygote {
        module: &module,
        sandbox: &sandbox,
        protocol_fd,
    };
    // The first job's process, forked and warmed while the worker has nothing to send.
    let mut spare = zygote.fork_spare(true, None).map_err(log_spare_error).ok();
    while let Some(frame) = read_frame(&mut input)? {
        if frame == CANCEL {
            // For a job that had already answered when the worker stopped it.
            continue;
        }
        let request: RunRequest = serde_json::from_slice(&frame).context("decoding run request")?;
        let started = Instant::now();
        let mut timings = Timings::default();
        let response = if TRUSTED_ENTRIES.contains(&request.entry.as_str()) {
            let mut series = Vec::with_capacity(request.series.len());
            for header in &request.series {
                let trading = read_rows(&mut input, header.rows)?;
                let warmup = read_rows(&mut input, header.warmup_rows)?;
                series.push((header, trading, warmup));
            }
            timings.received_ms = started.elapsed().as_secs_f64() * 1e3;
            Python::attach(|py| run_trusted(py, &module, &request, series))
        } else {
            zygote.run_in_spare(spare.take(), &request, &mut input, &mut out, &mut timings)?
        };
        let jesse_ms = started.elapsed().as_secs_f64() * 1e3 - timings.received_ms;
        let body = match response {
            Ok(Answer::Json(json)) => json,
            Ok(Answer::Died(status)) => {
                reap_children(None);
                die_like(status)
            }
            Err(e) => Python::attach(|py| interrupted_or_crashed(py, &e)),
        };
        let mut extra = String::new();
        if let Some(ms) = timings.spare_wait_ms {
            extra.push_str(&format!(",\"job_spare_wait_ms\":{ms:.3}"));
        }
        if let Some(ms) = timings.fork_ms {
            extra.push_str(&format!(",\"job_fork_ms\":{ms:.3}"));
        }
        let framed = format!(
            "{{\"timings\":{{\"runner_receive_ms\":{:.3},\"jesse_ms\":{jesse_ms:.3}{extra}}},\"result\":{body}}}",
            timings.received_ms
        );
        write_frame(&mut out, framed.as_bytes())?;
        // After the answer is on its way: the job's process and anything it left;
        // then the next job's process, warmed while the worker stores this answer.
        reap_children(spare.as_ref().map(|s| s.pid));
        if spare.is_none() {
            spare = zygote.fork_spare(true, None).map_err(log_spare_error).ok();
        }
    }
    Ok(())
}

/// What the runner measured of one request (reported in the answer's `timings`).
#[derive(Default)]
struct Timings {
    /// Reading the request's candles from the worker.
    received_ms: f64,
    /// Waiting for the job's process to finish its warm-up (about 0 when it was ready).
    spare_wait_ms: Option<f64>,
    /// Forking the job's process while the job waited (no warm spare was there).
    fork_ms: Option<f64>,
}

fn log_spare_error(e: PyErr) {
    eprintln!("runner: forking the next job's process failed: {e}; the job will fork its own");
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

/// Runs an entry that runs only the service's own code, in the runner itself.
fn run_trusted(
    py: Python<'_>,
    module: &Py<PyModule>,
    request: &RunRequest,
    series: Vec<(&crate::protocol::SeriesHeader, Vec<f64>, Vec<f64>)>,
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
    module
        .bind(py)
        .getattr(request.entry.as_str())?
        .call1((request.request_json.as_str(), candles, warmup))?
        .extract()
        .map(Answer::Json)
}

/// What every job's process is forked from: the warm runner, its sandbox, and
/// the worker's end of the protocol (closed in job processes).
struct Zygote<'a> {
    module: &'a Py<PyModule>,
    sandbox: &'a Sandbox,
    protocol_fd: RawFd,
}

/// A job's process forked before its job (a "spare"). It enters the sandbox,
/// warms itself up (`prefault` in jesse_mcp_runner.py), says so with one byte
/// on its pipe and waits for its one request; the candles come through memory
/// it shares with the runner. So the fork and most copy-on-write faults of a
/// fresh process happen while the runner would be idle, not while the job
/// runs. A spare is forked only once the previous job's processes are all
/// gone, from the runner, which never runs strategy code: no job's code touches
/// the process another job runs in.
struct Spare {
    pid: libc::pid_t,
    /// The ready byte, then the job's events and answer (the runner's read end).
    events: File,
    /// What the job's process writes to its fds 1 and 2 (read ends, non-blocking).
    output: [File; 2],
    /// Where its request goes (the runner's write end).
    request: File,
    /// The job's candles: a memfd the runner fills and the spare maps privately.
    candles: File,
}

/// The byte a spare sends once it waits for its request.
const SPARE_READY: u8 = b'R';

fn os_error(what: &str) -> PyErr {
    pyo3::exceptions::PyOSError::new_err(format!("{what}: {}", std::io::Error::last_os_error()))
}

impl Zygote<'_> {
    /// Forks a spare (after emptying the job scratch directory it will work in).
    /// `prefault`: warm it up first (off for one forked while its job waits);
    /// `candles`: the memory it maps (a new memfd when `None`).
    fn fork_spare(&self, prefault: bool, candles: Option<File>) -> PyResult<Spare> {
        self.sandbox.reset_job_dir().map_err(|e| {
            pyo3::exceptions::PyOSError::new_err(format!(
                "emptying the job scratch directory {}: {e}",
                self.sandbox.job_dir().display()
            ))
        })?;
        let candles = match candles {
            Some(candles) => candles,
            // SAFETY: memfd_create with a NUL-terminated name; the fd is owned from here on.
            None => unsafe {
                let fd = libc::memfd_create(c"jesse-mcp-candles".as_ptr(), libc::MFD_CLOEXEC);
                if fd < 0 {
                    return Err(os_error("creating the job's candle memory"));
                }
                File::from_raw_fd(fd)
            },
        };
        let pipe = || -> PyResult<(File, File)> {
            let mut fds = [0 as RawFd; 2];
            // SAFETY: pipe2 writes two descriptors into the array, owned from here on.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
                return Err(os_error("creating a job pipe"));
            }
            // SAFETY: both descriptors were just created and are owned nowhere else.
            Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
        };
        let (events, events_child) = pipe()?;
        let (request_child, request) = pipe()?;
        let (stdout, stdout_child) = pipe()?;
        let (stderr, stderr_child) = pipe()?;
        for read_end in [&stdout, &stderr] {
            // SAFETY: fcntl on a descriptor owned here; the job's write end keeps
            // its own (blocking) flags.
            unsafe {
                let flags = libc::fcntl(read_end.as_raw_fd(), libc::F_GETFL);
                libc::fcntl(
                    read_end.as_raw_fd(),
                    libc::F_SETFL,
                    flags | libc::O_NONBLOCK,
                );
            }
        }
        Python::attach(|py| {
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
                drop((events, request, stdout, stderr));
                let output = [stdout_child, stderr_child];
                self.spare_main(py, prefault, events_child, request_child, output, &candles);
            }
            drop((events_child, request_child, stdout_child, stderr_child));
            if pid < 0 {
                return Err(os_error("forking a job process"));
            }
            Ok(Spare {
                pid,
                events,
                output: [stdout, stderr],
                request,
                candles,
            })
        })
    }

    /// The spare's life, in its own process: never returns.
    fn spare_main(
        &self,
        py: Python<'_>,
        prefault: bool,
        mut events: File,
        mut request: File,
        output: [File; 2],
        candles: &File,
    ) -> ! {
        let module = self.module.bind(py);
        let mut prepared = self.sandbox.enter(&[self.protocol_fd]);
        if prepared.is_ok() && self.sandbox.status.enabled {
            prepared = module
                .getattr("enter_job_environment")
                .and_then(|f| f.call1((self.sandbox.job_dir(),)))
                .map(drop)
                .map_err(|e| format!("preparing the job's environment: {e}"));
        }
        if prepared.is_ok()
            && prefault
            && let Err(e) = module.getattr("prefault").and_then(|f| f.call0())
        {
            // No ready byte: the runner forks a process without a warm-up instead.
            eprintln!("runner: a job process's warm-up failed: {e}");
            // SAFETY: leaving this forked process without Python's teardown.
            unsafe { libc::_exit(0) };
        }
        if events.write_all(&[SPARE_READY]).is_err() {
            // SAFETY: as above.
            unsafe { libc::_exit(0) };
        }
        let request: RunRequest = match read_frame(&mut request)
            .ok()
            .flatten()
            .and_then(|frame| serde_json::from_slice(&frame).ok())
        {
            Some(request) => request,
            // The runner is gone (or never sends this process a job).
            // SAFETY: as above.
            None => unsafe { libc::_exit(0) },
        };
        // From here on the job's fds 1 and 2 are pipes the runner reads and
        // bounds (into the job's log), not the service's stderr: nothing the
        // job writes with os.write or from native code reaches the service's log.
        if prepared.is_ok() {
            prepared = redirect_output(&output);
        }
        drop(output);
        let body = match prepared {
            Err(message) => error_json("sandbox", "SandboxError", &message),
            Ok(()) => match run_request(py, module, &request, events.as_raw_fd(), candles) {
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
        let _ = events
            .write_all(&[JOB_ANSWER])
            .and_then(|()| events.write_all(&(body.len() as u32).to_le_bytes()))
            .and_then(|()| events.write_all(body.as_bytes()));
        drop(events);
        // SAFETY: _exit skips Python's teardown (the runner's state is not the
        // job's to finalise).
        unsafe { libc::_exit(0) }
    }

    /// Runs one request in a spare (the one forked ahead, or one forked now):
    /// fills its candle memory straight from the worker's pipe, waits until it
    /// is ready, sends the request and follows it to its answer. An `Err` is the
    /// worker's pipe failing (fatal to the runner, as before).
    fn run_in_spare(
        &self,
        spare: Option<Spare>,
        request: &RunRequest,
        input: &mut BufReader<std::io::StdinLock<'_>>,
        events: &mut BufWriter<File>,
        timings: &mut Timings,
    ) -> anyhow::Result<PyResult<Answer>> {
        let started = Instant::now();
        let mut spare = match spare {
            Some(spare) => Ok(spare),
            None => {
                let forking = Instant::now();
                let forked = self.fork_spare(false, None);
                timings.fork_ms = Some(forking.elapsed().as_secs_f64() * 1e3);
                forked
            }
        };
        match &spare {
            Ok(spare) => fill_candles(input, &spare.candles, &request.series)?,
            Err(_) => {
                for header in &request.series {
                    read_rows(input, header.rows)?;
                    read_rows(input, header.warmup_rows)?;
                }
            }
        }
        timings.received_ms = started.elapsed().as_secs_f64() * 1e3;
        // Bytes after the request can only be the worker's cancel.
        let stop_pending = !input.buffer().is_empty();
        let waiting = Instant::now();
        if let Ok(ready) = &mut spare
            && !(wait_ready(ready) && still_running(ready.pid))
        {
            // Its warm-up failed (it said why on stderr) or it was killed (also
            // after saying it was ready, while it waited): a process without a
            // warm-up takes the job, with the same candles.
            wait_for(ready.pid);
            let forking = Instant::now();
            spare = ready
                .candles
                .try_clone()
                .map_err(|e| {
                    pyo3::exceptions::PyOSError::new_err(format!("sharing the job's candles: {e}"))
                })
                .and_then(|candles| self.fork_spare(false, Some(candles)));
            timings.fork_ms = Some(forking.elapsed().as_secs_f64() * 1e3);
            if let Ok(cold) = &mut spare
                && !wait_ready(cold)
            {
                wait_for(cold.pid);
                return Ok(Err(pyo3::exceptions::PyOSError::new_err(
                    "the job's process ended before it was ready (see the worker's log)",
                )));
            }
        }
        timings.spare_wait_ms = Some(waiting.elapsed().as_secs_f64() * 1e3);
        let Spare {
            pid,
            events: pipe,
            output,
            request: mut request_pipe,
            candles,
        } = match spare {
            Ok(spare) => spare,
            Err(e) => return Ok(Err(e)),
        };
        let sent = serde_json::to_vec(request)
            .map_err(std::io::Error::other)
            .and_then(|body| write_frame(&mut request_pipe, &body));
        if let Err(e) = sent {
            // It died after saying it was ready: following it finds out how.
            eprintln!("runner: sending the job to its process failed: {e}");
        }
        // One request per process: it reads no more.
        drop((request_pipe, candles));
        Ok(Ok(follow(pid, pipe, output, stop_pending, events)))
    }
}

/// Blocks until the spare sends its ready byte; false when it ended instead.
fn wait_ready(spare: &mut Spare) -> bool {
    let mut byte = [0u8; 1];
    loop {
        match std::io::Read::read(&mut spare.events, &mut byte) {
            Ok(1) => return byte[0] == SPARE_READY,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => return false,
        }
    }
}

/// Copies the request's candles from the worker's pipe into the spare's memory:
/// for each series its trading rows then its warm-up rows, as they arrive.
fn fill_candles(
    input: &mut impl std::io::Read,
    memory: &File,
    series: &[crate::protocol::SeriesHeader],
) -> std::io::Result<()> {
    let bytes = candle_bytes(series)
        .ok_or_else(|| std::io::Error::other("the request's row counts overflow"))?;
    memory.set_len(bytes as u64)?;
    if bytes == 0 {
        return Ok(());
    }
    let address = map_candles(memory, bytes, libc::MAP_SHARED)?;
    // SAFETY: a fresh shared mapping of `bytes` bytes of a memfd just sized to
    // that; it is written through the slice only and unmapped before returning.
    unsafe {
        let slice = std::slice::from_raw_parts_mut(address.cast::<u8>(), bytes);
        let read = input.read_exact(slice);
        libc::munmap(address, bytes);
        read
    }
}

/// Maps the first `bytes` (> 0) bytes of a job's candle memory, readable and
/// writable, `MAP_SHARED` (the runner filling it) or `MAP_PRIVATE` (the job).
fn map_candles(
    memory: &File,
    bytes: usize,
    flags: libc::c_int,
) -> std::io::Result<*mut libc::c_void> {
    // SAFETY: mmap of an fd this process owns, at an address the kernel picks.
    let address = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            memory.as_raw_fd(),
            0,
        )
    };
    if address == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(address)
}

/// The size of a request's candle payload, in bytes.
fn candle_bytes(series: &[crate::protocol::SeriesHeader]) -> Option<usize> {
    series.iter().try_fold(0usize, |total, header| {
        header
            .rows
            .checked_add(header.warmup_rows)?
            .checked_mul(6 * 8)?
            .checked_add(total)
    })
}

/// In the job's process: its candles as numpy arrays over a private mapping of
/// the runner's memory, then the entry, with its events on `events`.
fn run_request(
    py: Python<'_>,
    module: &Bound<'_, PyModule>,
    request: &RunRequest,
    events: RawFd,
    memory: &File,
) -> PyResult<String> {
    let bytes = candle_bytes(&request.series)
        .ok_or_else(|| pyo3::exceptions::PyOSError::new_err("the request's row counts overflow"))?;
    let view = if bytes == 0 {
        pyo3::types::PyBytes::new(py, b"").into_any()
    } else {
        let address = map_candles(memory, bytes, libc::MAP_PRIVATE).map_err(|e| {
            pyo3::exceptions::PyOSError::new_err(format!("mapping the job's candles: {e}"))
        })?;
        // SAFETY: a private mapping of the memfd the runner sized and filled; it
        // stays mapped for the rest of this short-lived process, so the
        // memoryview and the arrays over it never outlive it.
        unsafe {
            let view = ffi::PyMemoryView_FromMemory(
                address.cast(),
                bytes as ffi::Py_ssize_t,
                ffi::PyBUF_WRITE,
            );
            Bound::from_owned_ptr_or_err(py, view)?
        }
    };
    let series = serde_json::to_string(&request.series)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    let (candles, warmup): (Bound<'_, PyAny>, Bound<'_, PyAny>) = module
        .getattr("candle_arrays")?
        .call1((view, series))?
        .extract()?;
    let function = module.getattr(request.entry.as_str())?;
    module.getattr("begin_job")?.call1((events,))?;
    let answer = function
        .call1((request.request_json.as_str(), candles, warmup))
        .and_then(|answer| answer.extract());
    // The last lines and progress; a failure here must not hide the answer.
    if let Err(e) = module.getattr("end_job").and_then(|f| f.call0()) {
        eprintln!("runner: flushing the job's events failed: {e}");
    }
    answer
}

/// Follows a job's process to its answer (forwarding its events to the worker),
/// killing it as soon as the worker says stop.
fn follow(
    pid: libc::pid_t,
    pipe: File,
    output: [File; 2],
    stop_pending: bool,
    events: &mut BufWriter<File>,
) -> Answer {
    let mut output = RawOutput::new(output);
    let followed = follow_job(&pipe, pid, stop_pending, &mut output, events);
    // What it wrote before it answered (or ended), then any unterminated line.
    output.drain(events);
    output.finish(events);
    let answer = match followed {
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
    };
    match answer {
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
    }
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
    output: &mut RawOutput,
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
            output.pollfd(0),
            output.pollfd(1),
        ];
        // SAFETY: four initialised pollfd entries (a negative fd is skipped).
        if unsafe { libc::poll(fds.as_mut_ptr(), 4, -1) } < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Followed::Ended;
        }
        if fds[1].revents != 0 {
            // The worker's cancel (or its end: the job goes with it).
            return kill();
        }
        for stream in 0..2 {
            if fds[2 + stream].revents != 0 {
                output.read(stream, events);
            }
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

/// The job's raw output (its fds 1 and 2): split into lines and forwarded to
/// the worker as log lines of its `stdout`/`stderr` streams, as `print` output
/// is. The worker caps the job's log and marks it truncated; the runner stops
/// forwarding just past that cap and reads the rest only to discard it, so a job
/// writing without end neither blocks nor floods the worker's pipe.
struct RawOutput {
    pipes: [Option<File>; 2],
    /// Text after the last newline, per stream.
    partial: [Vec<u8>; 2],
    lines: i64,
    bytes: i64,
}

/// A raw line longer than this is forwarded in pieces of this size (as
/// `_LOG_BATCH_BYTES` in jesse_mcp_runner.py does for `print`).
const RAW_LINE_BYTES: usize = 64 * 1024;
const RAW_STREAMS: [&str; 2] = ["stdout", "stderr"];

impl RawOutput {
    fn new(pipes: [File; 2]) -> RawOutput {
        let [stdout, stderr] = pipes;
        RawOutput {
            pipes: [Some(stdout), Some(stderr)],
            partial: [Vec::new(), Vec::new()],
            lines: 0,
            bytes: 0,
        }
    }

    fn pollfd(&self, stream: usize) -> libc::pollfd {
        libc::pollfd {
            fd: self.pipes[stream].as_ref().map_or(-1, AsRawFd::as_raw_fd),
            events: libc::POLLIN,
            revents: 0,
        }
    }

    /// Whether the worker already has more than its cap from this job's raw output.
    fn over_cap(&self) -> bool {
        self.lines > crate::job_events::MAX_LOG_LINES
            || self.bytes > crate::job_events::MAX_LOG_BYTES
    }

    /// One read of `stream` (it is non-blocking); false when nothing more is
    /// there now. The end of the pipe closes the stream.
    fn read(&mut self, stream: usize, events: &mut BufWriter<File>) -> bool {
        let Some(pipe) = &self.pipes[stream] else {
            return false;
        };
        let mut chunk = vec![0u8; 1 << 16];
        // SAFETY: reading into a buffer of that size.
        let read = unsafe { libc::read(pipe.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
        if read < 0 {
            let again = std::io::Error::last_os_error().raw_os_error();
            if again == Some(libc::EINTR) {
                return true;
            }
            if again != Some(libc::EAGAIN) {
                self.pipes[stream] = None;
            }
            return false;
        }
        if read == 0 {
            self.pipes[stream] = None;
            return false;
        }
        if self.over_cap() {
            return true;
        }
        chunk.truncate(read as usize);
        let mut lines = Vec::new();
        let partial = &mut self.partial[stream];
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            partial.extend_from_slice(piece);
            if partial.ends_with(b"\n") {
                partial.pop();
                lines.push(std::mem::take(partial));
            } else if partial.len() >= RAW_LINE_BYTES {
                lines.push(std::mem::take(partial));
            }
        }
        self.forward(stream, lines, events);
        true
    }

    /// Reads what the pipes hold now (bounded: a process the job started may
    /// still be writing).
    fn drain(&mut self, events: &mut BufWriter<File>) {
        for stream in 0..2 {
            for _ in 0..1024 {
                if !self.read(stream, events) {
                    break;
                }
            }
        }
    }

    /// Forwards each stream's unterminated last line.
    fn finish(&mut self, events: &mut BufWriter<File>) {
        for stream in 0..2 {
            let partial = std::mem::take(&mut self.partial[stream]);
            if !partial.is_empty() {
                self.forward(stream, vec![partial], events);
            }
        }
    }

    fn forward(&mut self, stream: usize, lines: Vec<Vec<u8>>, events: &mut BufWriter<File>) {
        let mut logs = Vec::with_capacity(lines.len());
        for line in lines {
            if self.over_cap() {
                break;
            }
            self.lines += 1;
            self.bytes += line.len() as i64;
            logs.push(serde_json::json!({
                "stream": RAW_STREAMS[stream],
                "line": String::from_utf8_lossy(&line),
                "simulated_ms": null,
            }));
        }
        if logs.is_empty() {
            return;
        }
        let frame = serde_json::json!({ EVENT_KEY: { "logs": logs } });
        // A worker that is gone takes the runner with it (parent-death signal).
        let _ = serde_json::to_vec(&frame).map(|bytes| write_frame(events, &bytes));
    }
}

/// In the job's process: its fds 1 and 2 become `output` (stdout, stderr).
fn redirect_output(output: &[File; 2]) -> Result<(), String> {
    for (fd, pipe) in [1, 2].into_iter().zip(output) {
        // SAFETY: dup2 onto a standard descriptor of this process.
        if unsafe { libc::dup2(pipe.as_raw_fd(), fd) } < 0 {
            return Err(format!(
                "redirecting the job's output: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
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

/// Whether our child `pid` has not exited, without reaping it (a spare killed
/// after its ready byte still has that byte in the pipe).
fn still_running(pid: libc::pid_t) -> bool {
    // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on our own child; WNOWAIT leaves it to be reaped by wait_for.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: si_pid is set by waitid (0 when no child changed state).
    rc == 0 && unsafe { info.si_pid() } == 0
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

/// Kills and reaps every child of the runner but `keep` (the next job's spare):
/// the finished job's process and whatever it started (orphans are re-parented
/// here, the runner being a subreaper).
fn reap_children(keep: Option<libc::pid_t>) {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let list = format!("/proc/self/task/{tid}/children");
    for _ in 0..1000 {
        let pids: Vec<libc::pid_t> = std::fs::read_to_string(&list)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|pid| Some(*pid) != keep)
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
