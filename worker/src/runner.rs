//! A runner process: one embedded CPython (the venv's), `jesse.research` imported
//! once, one job at a time, driven over pipes by the worker.
//!
//! This is the only module that touches pyo3. Python is initialised on the main
//! thread before anything else, with signal handlers installed, so the worker's
//! SIGINT raises KeyboardInterrupt inside a runaway strategy. The working
//! directory is a scratch directory of the runner's own (importing Jesse creates
//! `./storage`; a directory holding `strategies/` and `storage/` would make Jesse
//! treat it as a project and exit the process).

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::mem::MaybeUninit;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use numpy::IntoPyArray;
use numpy::ndarray::Array2;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::{Py, ffi};

use crate::protocol::{Ready, RunRequest, read_frame, read_rows, write_frame};

const RUNNER_PY: &CStr = pyo3::ffi::c_str!(include_str!("../python/jesse_mcp_runner.py"));

pub struct RunnerArgs {
    pub python: PathBuf,
    pub scratch: PathBuf,
    /// Scheduling niceness: research is batch work, so the API and the worker's
    /// own I/O stay responsive on a machine whose cores all run Jesse.
    pub nice: i32,
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

    let module = match init_python(&args.python).and_then(|()| load_module()) {
        Ok(module) => module,
        Err(e) => {
            let ready = Ready {
                ok: false,
                jesse_version: None,
                error: Some(format!("{e:#}")),
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
    };
    write_frame(&mut out, &serde_json::to_vec(&ready)?)?;

    while let Some(frame) = read_frame(&mut input)? {
        let request: RunRequest = serde_json::from_slice(&frame).context("decoding run request")?;
        let started = Instant::now();
        let mut series = Vec::with_capacity(request.series.len());
        for header in &request.series {
            let trading = read_rows(&mut input, header.rows)?;
            let warmup = read_rows(&mut input, header.warmup_rows)?;
            series.push((header, trading, warmup));
        }
        let received_ms = started.elapsed().as_secs_f64() * 1e3;
        let response = Python::attach(|py| {
            run_one(py, &module, &request.entry, &request.request_json, series)
        });
        let jesse_ms = started.elapsed().as_secs_f64() * 1e3 - received_ms;
        let body = match response {
            Ok(json) => json,
            Err(e) => Python::attach(|py| interrupted_or_crashed(py, &e)),
        };
        let framed = format!(
            "{{\"timings\":{{\"runner_receive_ms\":{received_ms:.3},\"jesse_ms\":{jesse_ms:.3}}},\"result\":{body}}}"
        );
        write_frame(&mut out, framed.as_bytes())?;
    }
    Ok(())
}

fn run_one(
    py: Python<'_>,
    module: &Py<PyModule>,
    entry: &str,
    request_json: &str,
    series: Vec<(&crate::protocol::SeriesHeader, Vec<f64>, Vec<f64>)>,
) -> PyResult<String> {
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
        .getattr(entry)?
        .call1((request_json, candles, warmup))?
        .extract()
}

/// Exceptions that escape `run_backtest` are not the strategy's: they are the
/// worker's interrupt (KeyboardInterrupt) or a failure of the runner itself.
fn interrupted_or_crashed(py: Python<'_>, error: &PyErr) -> String {
    let kind = if error.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) {
        "interrupted"
    } else {
        "runner"
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
