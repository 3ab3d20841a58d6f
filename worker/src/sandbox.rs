//! The sandbox strategy code runs in.
//!
//! A runner process is a warm "zygote": Jesse imported once, never running user
//! code itself. Every job that executes strategy code runs in a child forked
//! from it ([`crate::runner`]), so no job's import-time side effects reach the
//! next job, and that child enters the sandbox before the job starts:
//!
//! - a clean environment (the worker starts runners with `env_clear`);
//! - its own empty network namespace (prepared once per runner when the
//!   service is root; a user namespace otherwise, where the kernel allows it)
//!   and Landlock's TCP rules (ABI 4+): no network;
//! - Landlock filesystem rules: writes only inside the job's scratch directory
//!   (emptied between jobs), reads only from the system and Python trees and the
//!   strategies directory (not the data directory, not the service's home);
//!   Landlock scopes (ABI 6+): no signals to, or abstract sockets of, processes
//!   outside the sandbox;
//! - when the service is root, a dedicated unprivileged uid/gid
//!   (`JESSE_MCP_RUNNER_UID`), or, when that uid cannot read the Python install,
//!   uid 0 with every capability dropped (bounding set included);
//! - `no_new_privs`, and rlimits on address space, CPU time, file size and
//!   processes;
//! - a seccomp filter (installed last): no socket of any family can be created
//!   and `connect` is refused (Landlock does not cover pathname UNIX sockets,
//!   e.g. a local Postgres' `/var/run/postgresql/.s.PGSQL.5432`), `socketpair`
//!   only makes a connected AF_UNIX stream pair, io_uring (which could create
//!   and connect sockets past the filter) is refused; sockets inherited from the
//!   runner are replaced by `/dev/null`.
//!
//! What the kernel does not support is reported, not faked: [`SandboxStatus`]
//! travels to the worker in the runner's ready frame, is logged at start-up and
//! published for `/ready`.

use std::ffi::CString;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the worker asks of its runners' sandbox (passed to each runner as JSON).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SandboxSettings {
    /// `JESSE_MCP_SANDBOX` is not `off`.
    pub enabled: bool,
    /// The uid and gid runners' jobs switch to when the service runs as root.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub memory_mb: u64,
    pub cpu_secs: u64,
    pub file_size_mb: u64,
    pub max_procs: u64,
    /// Readable (not writable) by jobs.
    pub strategies_dir: PathBuf,
}

/// One part of the sandbox: enforced or not, and how (or why not).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Feature {
    pub enforced: bool,
    pub detail: String,
}

impl Feature {
    fn on(detail: impl Into<String>) -> Feature {
        Feature {
            enforced: true,
            detail: detail.into(),
        }
    }
    fn off(detail: impl Into<String>) -> Feature {
        Feature {
            enforced: false,
            detail: detail.into(),
        }
    }
}

/// What a runner's jobs are actually held to on this machine.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SandboxStatus {
    pub enabled: bool,
    /// Each job that runs strategy code runs in a fresh process (always on).
    pub fresh_process_per_job: bool,
    /// Landlock ABI version of the kernel (0: none).
    pub landlock_abi: i64,
    pub filesystem: Feature,
    pub network: Feature,
    pub uid: Feature,
    pub environment: Feature,
    pub rlimits: Feature,
    /// The seccomp socket filter (no new sockets, no `connect`).
    #[serde(default)]
    pub sockets: Feature,
}

impl SandboxStatus {
    /// `(name, enforced)` of each part, for logs and `/ready`.
    pub fn parts(&self) -> Vec<(&'static str, &Feature)> {
        vec![
            ("filesystem", &self.filesystem),
            ("network", &self.network),
            ("uid", &self.uid),
            ("environment", &self.environment),
            ("rlimits", &self.rlimits),
            ("sockets", &self.sockets),
        ]
    }
}

// Landlock ABI (include/uapi/linux/landlock.h).
const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
const LANDLOCK_RULE_PATH_BENEATH: u32 = 1;
const FS_WRITE_FILE: u64 = 1 << 1;
const FS_READ_FILE: u64 = 1 << 2;
const FS_READ_DIR: u64 = 1 << 3;
const FS_REMOVE_DIR: u64 = 1 << 4;
const FS_REMOVE_FILE: u64 = 1 << 5;
const FS_MAKE_CHAR: u64 = 1 << 6;
const FS_MAKE_DIR: u64 = 1 << 7;
const FS_MAKE_REG: u64 = 1 << 8;
const FS_MAKE_SOCK: u64 = 1 << 9;
const FS_MAKE_FIFO: u64 = 1 << 10;
const FS_MAKE_BLOCK: u64 = 1 << 11;
const FS_MAKE_SYM: u64 = 1 << 12;
const FS_REFER: u64 = 1 << 13;
const FS_TRUNCATE: u64 = 1 << 14;
const FS_IOCTL_DEV: u64 = 1 << 15;
const NET_BIND_TCP: u64 = 1 << 0;
const NET_CONNECT_TCP: u64 = 1 << 1;
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The kernel's Landlock ABI version; 0 when Landlock is absent or disabled.
pub fn landlock_abi() -> i64 {
    // SAFETY: the version query takes no attribute pointer.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    abi.max(0)
}

/// Top-level entries of /etc a job never needs and must not read.
const ETC_SECRETS: &[&str] = &[
    "shadow",
    "shadow-",
    "gshadow",
    "gshadow-",
    "sudoers",
    "sudoers.d",
    "ssh",
    "ssl",
    "security",
    "credstore",
    "credstore.encrypted",
    "machine-id",
];

/// A runner's sandbox, prepared once (as the runner's own user, before any job)
/// and entered by each job's forked child.
pub struct Sandbox {
    pub status: SandboxStatus,
    settings: SandboxSettings,
    job_dir: PathBuf,
    ruleset: Option<OwnedFd>,
    netns: Option<OwnedFd>,
    userns_net: bool,
    switch_to: Option<(u32, u32)>,
    drop_caps: bool,
    /// The seccomp program jobs install last (None: not available here).
    socket_filter: Option<Vec<libc::sock_filter>>,
}

impl Sandbox {
    /// Prepares the sandbox of the runner whose scratch directory is `scratch`.
    /// `python_paths` are the interpreter's trees (prefixes, `sys.path`) jobs read.
    pub fn prepare(
        settings: SandboxSettings,
        scratch: &Path,
        python_paths: &[PathBuf],
    ) -> anyhow::Result<Sandbox> {
        let job_dir = scratch.join("job");
        std::fs::create_dir_all(&job_dir)?;
        let mut sandbox = Sandbox {
            status: SandboxStatus {
                enabled: settings.enabled,
                fresh_process_per_job: true,
                landlock_abi: landlock_abi(),
                ..Default::default()
            },
            settings,
            job_dir,
            ruleset: None,
            netns: None,
            userns_net: false,
            switch_to: None,
            drop_caps: false,
            socket_filter: None,
        };
        if !sandbox.settings.enabled {
            let off = || Feature::off("JESSE_MCP_SANDBOX=off");
            sandbox.status.filesystem = off();
            sandbox.status.network = off();
            sandbox.status.uid = off();
            sandbox.status.environment = off();
            sandbox.status.rlimits = off();
            sandbox.status.sockets = off();
            return Ok(sandbox);
        }
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;

        // Who jobs run as.
        let mut readable: Vec<PathBuf> = python_paths.to_vec();
        readable.sort();
        readable.dedup();
        // Besides the interpreter, a switched job reads the strategies and
        // enters its scratch directory (whose parents must be searchable).
        let mut needed = readable.clone();
        needed.push(sandbox.settings.strategies_dir.clone());
        needed.push(scratch.to_path_buf());
        sandbox.status.uid = match (root, sandbox.settings.uid) {
            (false, _) => Feature::off(format!(
                "the service does not run as root; jobs keep its uid {} (unprivileged)",
                // SAFETY: getuid has no preconditions.
                unsafe { libc::getuid() }
            )),
            (true, None) => {
                sandbox.drop_caps = true;
                Feature::off(
                    "JESSE_MCP_RUNNER_UID=off: jobs keep uid 0 with every capability dropped",
                )
            }
            (true, Some(uid)) => {
                let gid = sandbox.settings.gid.unwrap_or(uid);
                match unreadable_as(uid, gid, &needed) {
                    None => {
                        sandbox.switch_to = Some((uid, gid));
                        let owner = CString::new(sandbox.job_dir.as_os_str().as_bytes())?;
                        // SAFETY: chown of a directory this process just created.
                        if unsafe { libc::chown(owner.as_ptr(), uid, gid) } != 0 {
                            anyhow::bail!(
                                "chown of {} to {uid}:{gid}: {}",
                                sandbox.job_dir.display(),
                                std::io::Error::last_os_error()
                            );
                        }
                        Feature::on(format!(
                            "jobs run as uid {uid}, gid {gid}, no supplementary groups"
                        ))
                    }
                    Some(path) => {
                        sandbox.drop_caps = true;
                        Feature::off(format!(
                            "uid {uid} cannot read {} (a parent directory is not searchable by it, e.g. a 0700 home); \
                             jobs keep uid 0 with every capability dropped. Put the venv (JESSE_MCP_PYTHON), \
                             its base interpreter, the strategies and the data directory where uid {uid} can \
                             read them (ops/python-env.sh does so for the venv when run as root) to enable the switch",
                            path.display()
                        ))
                    }
                }
            }
        };

        // Network.
        let abi = sandbox.status.landlock_abi;
        let mut network = Vec::new();
        if root {
            match private_netns() {
                Ok(fd) => {
                    sandbox.netns = Some(fd);
                    network.push("an empty network namespace".to_string());
                }
                Err(e) => tracing_free_warn(&format!("no network namespace: {e}")),
            }
        } else if probe_userns_net() {
            sandbox.userns_net = true;
            network.push("an empty network namespace (in a user namespace)".to_string());
        }
        if abi >= 4 {
            network.push("Landlock denies TCP connect and bind".to_string());
        }
        sandbox.status.network = if sandbox.netns.is_some() || sandbox.userns_net {
            Feature::on(network.join("; "))
        } else if abi >= 4 {
            Feature::on(format!(
                "{} (no network namespace available: UDP and raw sockets are not blocked)",
                network.join("; ")
            ))
        } else {
            Feature::off(
                "neither network namespaces nor Landlock network rules (ABI 4+) are available",
            )
        };

        // Filesystem.
        sandbox.status.filesystem = if abi >= 1 {
            let mut read_only: Vec<PathBuf> = [
                "/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/proc", "/sys",
                "/dev", "/opt",
            ]
            .iter()
            .map(PathBuf::from)
            .collect();
            if let Ok(entries) = std::fs::read_dir("/etc") {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    if !ETC_SECRETS.iter().any(|s| name.as_bytes() == s.as_bytes()) {
                        read_only.push(entry.path());
                    }
                }
            }
            read_only.extend(readable.iter().cloned());
            read_only.push(sandbox.settings.strategies_dir.clone());
            let ruleset = build_ruleset(abi, &read_only, &sandbox.job_dir)?;
            sandbox.ruleset = Some(ruleset);
            let mut detail = format!(
                "Landlock ABI {abi}: writes only in the job's scratch directory; reads only system, Python and strategy trees"
            );
            if abi >= 6 {
                detail.push_str("; no signals or abstract sockets outside the job");
            }
            Feature::on(detail)
        } else {
            Feature::off(if sandbox.switch_to.is_some() {
                "the kernel has no Landlock: only file permissions (the unprivileged uid) limit writes"
            } else {
                "the kernel has no Landlock: writes are not confined"
            })
        };
        // Sockets: the filter is tried in a forked probe first, so a kernel
        // without seccomp filters is reported instead of failing every job.
        sandbox.status.sockets = match socket_filter() {
            None => Feature::off("no seccomp socket filter for this CPU architecture"),
            Some(filter) if probe_socket_filter(&filter) => {
                sandbox.socket_filter = Some(filter);
                Feature::on(
                    "seccomp: socket() and connect() refused (EACCES) for every address family, \
                     so no pathname UNIX socket (databases, Docker) and no TCP/UDP; socketpair only \
                     as a connected AF_UNIX stream pair; io_uring refused; inherited sockets \
                     replaced by /dev/null",
                )
            }
            Some(_) => Feature::off(
                "the kernel refused the seccomp filter: jobs can connect to pathname UNIX sockets \
                 their uid may open",
            ),
        };
        sandbox.status.environment = Feature::on(
            "PATH, LANG/LC_*, TZ, HOME/TMPDIR (the job's scratch), proxy and certificate variables only",
        );
        sandbox.status.rlimits = Feature::on(format!(
            "address space {} MiB, CPU {} s, file size {} MiB, {} processes{}",
            sandbox.settings.memory_mb,
            sandbox.settings.cpu_secs,
            sandbox.settings.file_size_mb,
            sandbox.settings.max_procs,
            if sandbox.switch_to.is_none() && root {
                " (the process limit does not bind uid 0)"
            } else {
                ""
            }
        ));
        Ok(sandbox)
    }

    /// The job's scratch directory (its working directory, HOME and TMPDIR).
    pub fn job_dir(&self) -> &Path {
        &self.job_dir
    }

    /// Empties the job scratch directory (kept: Landlock's rule names its inode).
    pub fn reset_job_dir(&self) -> std::io::Result<()> {
        for entry in std::fs::read_dir(&self.job_dir)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    /// Runs in the forked child, before any job code: enters every part of the
    /// sandbox that was prepared. An error means the job must not run.
    pub fn enter(&self, close: &[RawFd]) -> Result<(), String> {
        let os = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
        // SAFETY: plain system calls on this (single-threaded, forked) process.
        unsafe {
            // The protocol and candle pipes belong to the runner, never to a job.
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            if null < 0 || libc::dup2(null, 0) < 0 {
                return Err(os("redirecting stdin"));
            }
            for fd in close {
                libc::close(*fd);
            }
            if self.settings.enabled {
                // E.g. an exchange connection a candle import left in the runner's
                // HTTP pool: the descriptor stays valid (Python objects may own
                // it), the socket is gone.
                for fd in inherited_sockets() {
                    if libc::dup2(null, fd) < 0 {
                        return Err(os("closing an inherited socket"));
                    }
                }
            }
            libc::close(null);
            if let Some(netns) = &self.netns {
                if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(os("entering the network namespace"));
                }
            } else if self.userns_net
                && libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) != 0
            {
                return Err(os("unsharing the network"));
            }
            let dir =
                CString::new(self.job_dir.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
            if libc::chdir(dir.as_ptr()) != 0 {
                return Err(os("entering the scratch directory"));
            }
            if !self.settings.enabled {
                return Ok(());
            }
            let mb = 1024 * 1024;
            let cpu = self.settings.cpu_secs;
            for (resource, soft, hard) in [
                (
                    libc::RLIMIT_AS,
                    self.settings.memory_mb * mb,
                    self.settings.memory_mb * mb,
                ),
                // SIGXCPU at the soft limit (reported as cpu_limit_exceeded), SIGKILL later.
                (libc::RLIMIT_CPU, cpu, cpu + 5),
                (
                    libc::RLIMIT_FSIZE,
                    self.settings.file_size_mb * mb,
                    self.settings.file_size_mb * mb,
                ),
                (
                    libc::RLIMIT_NPROC,
                    self.settings.max_procs,
                    self.settings.max_procs,
                ),
                (libc::RLIMIT_CORE, 0, 0),
            ] {
                let limit = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(resource, &limit) != 0 {
                    return Err(os("setting a resource limit"));
                }
            }
            if let Some((uid, gid)) = self.switch_to {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setresgid(gid, gid, gid) != 0
                    || libc::setresuid(uid, uid, uid) != 0
                {
                    return Err(os("switching to the runner uid"));
                }
                if libc::getuid() != uid || libc::setuid(0) == 0 {
                    return Err("the uid switch did not hold".into());
                }
            } else if self.drop_caps {
                drop_capabilities().map_err(|e| format!("dropping capabilities: {e}"))?;
            }
            // A credentials change clears the parent-death signal: set it after.
            let parent = libc::getppid();
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if parent == 1 {
                return Err("the runner is gone".into());
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(os("setting no_new_privs"));
            }
            if let Some(ruleset) = &self.ruleset {
                if libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) != 0 {
                    return Err(os("entering the Landlock domain"));
                }
                libc::close(ruleset.as_raw_fd());
            }
            if let Some(filter) = &self.socket_filter {
                install_socket_filter(filter)
                    .map_err(|e| format!("installing the socket filter: {e}"))?;
            }
        }
        Ok(())
    }
}

/// Descriptors above 2 of this process that are sockets (by /proc).
fn inherited_sockets() -> Vec<RawFd> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let fds: Vec<RawFd> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    fds.into_iter()
        .filter(|fd| {
            let mut stat = MaybeUninit::<libc::stat>::uninit();
            // SAFETY: fstat fills `stat` when it returns 0.
            unsafe {
                libc::fstat(*fd, stat.as_mut_ptr()) == 0
                    && stat.assume_init().st_mode & libc::S_IFMT == libc::S_IFSOCK
            }
        })
        .collect()
}

// seccomp-bpf (include/uapi/linux/{seccomp,filter,audit}.h).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: Option<u32> = Some(0xC000_003E);
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_NATIVE: Option<u32> = Some(0xC000_00B7);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH_NATIVE: Option<u32> = None;
/// x32 system calls (x86_64's ILP32 ABI) have this bit set in their number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// Offsets in `struct seccomp_data`: nr, arch, then the 64-bit arguments; the
/// low half of an argument comes first on little-endian machines.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const fn data_arg_low(index: u32) -> u32 {
    16 + 8 * index + if cfg!(target_endian = "big") { 4 } else { 0 }
}
const SOCK_TYPE_MASK: u32 = 0xf;

/// The job's socket filter, or None on an architecture it is not written for.
///
/// Refused with EACCES (what `socket(2)` documents for a denied family):
/// `socket` of any family and `connect` (a job has no network, and a pathname
/// UNIX socket would reach a local database whatever its file permissions);
/// `socketpair` except a connected AF_UNIX stream pair (what
/// `multiprocessing.Pipe` makes; it can reach nothing outside the job, unlike a
/// datagram pair, whose `sendto` takes any socket path). io_uring is refused
/// (EPERM): its operations create and connect sockets without these system
/// calls. System calls of another ABI (x32, 32-bit compat) get ENOSYS, so they
/// cannot reach a socket call under another number.
fn socket_filter() -> Option<Vec<libc::sock_filter>> {
    let arch = AUDIT_ARCH_NATIVE?;
    let nr = |n: libc::c_long| n as u32;
    let ld = |offset: u32| libc::sock_filter {
        code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        jt: 0,
        jf: 0,
        k: offset,
    };
    let ret = |value: u32| libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: value,
    };
    // Jumps name their targets by label; offsets are resolved below.
    enum Op {
        Insn(libc::sock_filter),
        /// `if A <cmp> k goto yes else goto no`
        Jump(u32, u32, Label, Label),
        Mark(Label),
    }
    #[derive(Clone, Copy, PartialEq, Eq, Hash)]
    enum Label {
        Next,
        Allow,
        Acces,
        Perm,
        NoSys,
        Socketpair,
    }
    use Label::*;
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let jge = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
    let program = vec![
        Op::Insn(ld(DATA_ARCH)),
        Op::Jump(jeq, arch, Next, NoSys),
        Op::Insn(ld(DATA_NR)),
        Op::Jump(jge, X32_SYSCALL_BIT, NoSys, Next),
        Op::Jump(jeq, nr(libc::SYS_socket), Acces, Next),
        Op::Jump(jeq, nr(libc::SYS_connect), Acces, Next),
        Op::Jump(jeq, nr(libc::SYS_io_uring_setup), Perm, Next),
        Op::Jump(jeq, nr(libc::SYS_io_uring_enter), Perm, Next),
        Op::Jump(jeq, nr(libc::SYS_io_uring_register), Perm, Next),
        Op::Jump(jeq, nr(libc::SYS_socketpair), Socketpair, Allow),
        Op::Mark(Socketpair),
        Op::Insn(ld(data_arg_low(0))),
        Op::Jump(jeq, libc::AF_UNIX as u32, Next, Acces),
        Op::Insn(ld(data_arg_low(1))),
        Op::Insn(libc::sock_filter {
            code: (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: SOCK_TYPE_MASK,
        }),
        Op::Jump(jeq, libc::SOCK_STREAM as u32, Allow, Acces),
        Op::Mark(Allow),
        Op::Insn(ret(libc::SECCOMP_RET_ALLOW)),
        Op::Mark(Acces),
        Op::Insn(ret(libc::SECCOMP_RET_ERRNO | libc::EACCES as u32)),
        Op::Mark(Perm),
        Op::Insn(ret(libc::SECCOMP_RET_ERRNO | libc::EPERM as u32)),
        Op::Mark(NoSys),
        Op::Insn(ret(libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32)),
    ];
    let mut at = std::collections::HashMap::new();
    let mut index = 0usize;
    for op in &program {
        match op {
            Op::Mark(label) => {
                at.insert(*label, index);
            }
            _ => index += 1,
        }
    }
    let mut filter = Vec::with_capacity(index);
    for op in program {
        match op {
            Op::Mark(_) => {}
            Op::Insn(insn) => filter.push(insn),
            Op::Jump(code, k, yes, no) => {
                let here = filter.len() + 1;
                let offset = |label: Label| -> u8 {
                    if label == Next {
                        return 0;
                    }
                    u8::try_from(at[&label] - here).expect("a short forward jump")
                };
                filter.push(libc::sock_filter {
                    code: code as u16,
                    jt: offset(yes),
                    jf: offset(no),
                    k,
                });
            }
        }
    }
    Some(filter)
}

/// Installs `filter` on the calling thread (`no_new_privs` must be set; the
/// forked job process has one thread).
fn install_socket_filter(filter: &[libc::sock_filter]) -> std::io::Result<()> {
    let program = libc::sock_fprog {
        len: u16::try_from(filter.len()).map_err(std::io::Error::other)?,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: a valid sock_fprog over `filter`, which outlives the call (the
    // kernel copies the program).
    if unsafe { libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &program) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether a forked child can install the filter and is then refused a UNIX socket.
fn probe_socket_filter(filter: &[libc::sock_filter]) -> bool {
    fork_probe(|| {
        // SAFETY: in the probe child only; it exits right after.
        unsafe {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
                && install_socket_filter(filter).is_ok()
                && libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) < 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EACCES)
        }
    })
    .unwrap_or(false)
}

/// Logged by the worker (the runner has no tracing subscriber): goes to stderr.
fn tracing_free_warn(message: &str) {
    eprintln!("runner sandbox: {message}");
}

/// An empty network namespace this (root) process keeps a handle on, while it
/// stays in its own: children enter it with one `setns`.
fn private_netns() -> std::io::Result<OwnedFd> {
    let open = |path: &std::ffi::CStr| -> std::io::Result<OwnedFd> {
        // SAFETY: open of a /proc path; the fd is owned from here on.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just opened by this process.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let own = open(c"/proc/thread-self/ns/net")?;
    // SAFETY: namespace calls on the current thread; it returns to its own namespace.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let private = open(c"/proc/thread-self/ns/net");
        if libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
            // Stuck in the empty namespace: imports would fail; refuse to go on.
            panic!(
                "could not return to the service's network namespace: {}",
                std::io::Error::last_os_error()
            );
        }
        private
    }
}

/// Forks a throwaway child to see whether an unprivileged user+network
/// namespace can be made here.
fn probe_userns_net() -> bool {
    fork_probe(|| {
        // SAFETY: in the probe child only.
        unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) == 0 }
    })
    .unwrap_or(false)
}

/// The first of `paths` that `uid`/`gid` cannot read (and enter, for
/// directories); None when it can read them all.
fn unreadable_as(uid: u32, gid: u32, paths: &[PathBuf]) -> Option<PathBuf> {
    for path in paths {
        let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
            return Some(path.clone());
        };
        let mode = if path.is_dir() {
            libc::R_OK | libc::X_OK
        } else {
            libc::R_OK
        };
        let ok = fork_probe(|| {
            // SAFETY: in the probe child only; it exits right after.
            unsafe {
                libc::setgroups(0, std::ptr::null()) == 0
                    && libc::setresgid(gid, gid, gid) == 0
                    && libc::setresuid(uid, uid, uid) == 0
                    && libc::access(c_path.as_ptr(), mode) == 0
            }
        });
        if ok != Some(true) {
            return Some(path.clone());
        }
    }
    None
}

/// Runs `check` in a forked child and returns its verdict (None if the fork failed).
fn fork_probe(check: impl FnOnce() -> bool) -> Option<bool> {
    // SAFETY: the child only makes system calls and exits with _exit; no
    // Python or allocator state is used there.
    unsafe {
        let pid = libc::fork();
        if pid < 0 {
            return None;
        }
        if pid == 0 {
            libc::_exit(if check() { 0 } else { 1 });
        }
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 {
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return None;
            }
        }
        Some(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0)
    }
}

/// Builds the Landlock ruleset jobs enter: reads under `read_only`, everything
/// under `job_dir`, writes to /dev/null; TCP denied (ABI 4+), signals and
/// abstract sockets scoped to the job (ABI 6+).
fn build_ruleset(abi: i64, read_only: &[PathBuf], job_dir: &Path) -> anyhow::Result<OwnedFd> {
    let mut write = FS_WRITE_FILE
        | FS_REMOVE_DIR
        | FS_REMOVE_FILE
        | FS_MAKE_CHAR
        | FS_MAKE_DIR
        | FS_MAKE_REG
        | FS_MAKE_SOCK
        | FS_MAKE_FIFO
        | FS_MAKE_BLOCK
        | FS_MAKE_SYM;
    if abi >= 2 {
        write |= FS_REFER;
    }
    if abi >= 3 {
        write |= FS_TRUNCATE;
    }
    if abi >= 5 {
        write |= FS_IOCTL_DEV;
    }
    let read = FS_READ_FILE | FS_READ_DIR;
    let attr = RulesetAttr {
        handled_access_fs: read | write,
        handled_access_net: if abi >= 4 {
            NET_BIND_TCP | NET_CONNECT_TCP
        } else {
            0
        },
        scoped: if abi >= 6 {
            SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        } else {
            0
        },
    };
    let size = match abi {
        1..=3 => 8,
        4..=5 => 16,
        _ => std::mem::size_of::<RulesetAttr>(),
    };
    // SAFETY: attr is a valid landlock_ruleset_attr of at least `size` bytes.
    let fd = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, &attr, size, 0u32) };
    if fd < 0 {
        anyhow::bail!(
            "landlock_create_ruleset: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: a new descriptor owned from here on.
    let ruleset = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let file_rights = FS_READ_FILE | FS_WRITE_FILE | (write & (FS_TRUNCATE | FS_IOCTL_DEV));
    let mut rules: Vec<(&Path, u64)> = read_only.iter().map(|p| (p.as_path(), read)).collect();
    rules.push((job_dir, read | write));
    rules.push((Path::new("/dev/null"), file_rights));
    for (path, access) in rules {
        let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
            continue;
        };
        // SAFETY: O_PATH open; the fd is closed below.
        let fd = unsafe { libc::open(c_path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if fd < 0 {
            continue; // absent on this system (e.g. /lib32)
        }
        // SAFETY: fd was just opened.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let is_dir = std::fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false);
        let rule = PathBeneathAttr {
            allowed_access: if is_dir { access } else { access & file_rights },
            parent_fd: fd.as_raw_fd(),
        };
        // SAFETY: rule is a valid landlock_path_beneath_attr.
        let added = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset.as_raw_fd(),
                LANDLOCK_RULE_PATH_BENEATH,
                &rule,
                0u32,
            )
        };
        if added != 0 {
            anyhow::bail!(
                "landlock_add_rule({}): {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(ruleset)
}

/// Empties the capability bounding set (so nothing exec'd regains root's
/// capabilities) and the process's own sets.
fn drop_capabilities() -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    // SAFETY: prctl/capset with valid arguments on this process.
    unsafe {
        for cap in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINVAL) {
                    break; // past the last capability this kernel knows
                }
                return Err(e);
            }
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        let header = Header {
            version: VERSION_3,
            pid: 0,
        };
        let data = [Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Logs, at start-up, what is and is not enforced.
pub fn log_status(status: &SandboxStatus) {
    if !status.enabled {
        tracing::warn!("runner sandbox: OFF (JESSE_MCP_SANDBOX=off)");
        return;
    }
    tracing::info!(
        landlock_abi = status.landlock_abi,
        "runner sandbox: each job runs in a fresh process"
    );
    for (name, feature) in status.parts() {
        if feature.enforced {
            tracing::info!(
                part = name,
                detail = feature.detail,
                "runner sandbox: enforced"
            );
        } else {
            tracing::warn!(
                part = name,
                detail = feature.detail,
                "runner sandbox: NOT enforced"
            );
        }
    }
}

/// Counter-name prefix under which workers publish their sandbox status (read by `/ready`).
pub const STATUS_PREFIX: &str = "sandbox.";

/// Publishes the status as counters (`sandbox.<part>` = 1 enforced / 0 not,
/// `sandbox.enabled`, `sandbox.landlock_abi`): the latest worker to start wins.
pub async fn publish(
    store: &jesse_mcp_core::store::Store,
    status: &SandboxStatus,
) -> anyhow::Result<()> {
    let current: std::collections::HashMap<String, i64> =
        store.counters().await?.into_iter().collect();
    let mut wanted = vec![
        ("enabled".to_string(), i64::from(status.enabled)),
        ("landlock_abi".to_string(), status.landlock_abi),
    ];
    for (name, feature) in status.parts() {
        wanted.push((
            name.to_string(),
            i64::from(status.enabled && feature.enforced),
        ));
    }
    for (name, value) in wanted {
        let key = format!("{STATUS_PREFIX}{name}");
        let delta = value - current.get(&key).copied().unwrap_or(0);
        if delta != 0 || !current.contains_key(&key) {
            store.add_to_counter(&key, delta).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `check` holds in a forked child under the filter.
    fn under_filter(check: impl FnOnce() -> bool) -> bool {
        let filter = socket_filter().expect("a filter for this architecture");
        fork_probe(|| {
            // SAFETY: in the probe child only.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
                    && install_socket_filter(&filter).is_ok()
                    && check()
            }
        })
        .expect("fork")
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    #[test]
    fn the_filter_refuses_new_sockets_and_connect_and_keeps_pipes() {
        // Without the filter the same calls succeed (so the checks below can fail).
        // SAFETY: plain socket calls; the descriptors are closed.
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            assert!(fd >= 0);
            libc::close(fd);
        }
        // SAFETY: system calls in the forked probe child.
        let refused =
            |domain, kind| unsafe { libc::socket(domain, kind, 0) < 0 && errno() == libc::EACCES };
        for (domain, kind) in [
            (libc::AF_UNIX, libc::SOCK_STREAM),
            (libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC),
            (libc::AF_UNIX, libc::SOCK_SEQPACKET),
            (libc::AF_INET, libc::SOCK_STREAM),
            (libc::AF_INET, libc::SOCK_DGRAM),
            (libc::AF_INET6, libc::SOCK_STREAM),
            (libc::AF_NETLINK, libc::SOCK_RAW),
        ] {
            assert!(
                under_filter(|| refused(domain, kind)),
                "socket({domain}, {kind}) was not refused"
            );
        }
        // SAFETY: system calls in the forked probe child.
        assert!(under_filter(|| unsafe {
            let mut pair = [0; 2];
            let stream = libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                pair.as_mut_ptr(),
            ) == 0
                && libc::write(pair[0], b"x".as_ptr().cast(), 1) == 1;
            let dgram = libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, pair.as_mut_ptr()) < 0
                && errno() == libc::EACCES;
            // connect is refused whatever the descriptor (here: not even a socket).
            let address: libc::sockaddr_un = std::mem::zeroed();
            let connect = libc::connect(
                0,
                (&raw const address).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as u32,
            ) < 0
                && errno() == libc::EACCES;
            let uring = libc::syscall(libc::SYS_io_uring_setup, 1u32, std::ptr::null_mut::<u8>())
                < 0
                && errno() == libc::EPERM;
            let mut fds = [0; 2];
            let pipe = libc::pipe(fds.as_mut_ptr()) == 0
                && libc::write(fds[1], b"y".as_ptr().cast(), 1) == 1;
            stream && dgram && connect && uring && pipe
        }));
    }
}
