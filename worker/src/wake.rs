//! Wake-ups for idle workers on the SQLite queue: every commit to `queue.db`
//! (a submit, a cancel, a redelivery) modifies the file or its WAL, and inotify
//! tells us at once. Idle workers then look for work when there may be some,
//! instead of querying the queue a hundred times a second per job kind (which
//! kept a core 12 % busy doing nothing). A looking-up that finds nothing writes
//! nothing, so it cannot wake anyone by itself.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

/// Watches `file` (and its `-wal` / `-journal` companions); the returned
/// `Notify` wakes every waiter whenever one of them is written or recreated.
pub fn watch_file(file: &Path) -> anyhow::Result<Arc<Notify>> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = file
        .file_name()
        .context("the queue file has no name")?
        .as_bytes()
        .to_vec();
    // SAFETY: inotify_init1 takes flags only; the fd is owned from here on.
    let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if raw < 0 {
        bail!("inotify_init1: {}", std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // The directory, not the file: the WAL is deleted and recreated when the
    // last connection to the database closes.
    let c_dir = CString::new(dir.as_os_str().as_bytes())?;
    let mask = libc::IN_MODIFY | libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE;
    // SAFETY: valid fd and NUL-terminated path.
    if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c_dir.as_ptr(), mask) } < 0 {
        bail!(
            "watching {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: an OwnedFd keeps its one descriptor open until the AsyncFd drops it.
    let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering the inotify fd: {e}"))?;
    let notify = Arc::new(Notify::new());
    let wake = notify.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let mut ready = match fd.readable().await {
                Ok(ready) => ready,
                Err(e) => {
                    tracing::warn!(error = %e, "queue file watch failed; polling on the backstop timer only");
                    return;
                }
            };
            let mut touched = false;
            loop {
                // SAFETY: reading into a buffer we own, within its length.
                let n = unsafe {
                    libc::read(fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                };
                if n <= 0 {
                    break;
                }
                touched |= names_file(&buf[..n as usize], &name);
            }
            ready.clear_ready();
            if touched {
                wake.notify_waiters();
            }
        }
    });
    Ok(notify)
}

/// Whether a buffer of inotify events names `file` or one of its companions
/// (`file-wal`, `file-journal`, `file-shm` excluded: readers touch it).
fn names_file(mut events: &[u8], file: &[u8]) -> bool {
    const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
    let mut found = false;
    while events.len() >= HEADER {
        let mask = u32::from_ne_bytes(events[4..8].try_into().expect("4 bytes"));
        if mask & libc::IN_Q_OVERFLOW != 0 {
            found = true; // events were dropped: one of them may have been ours
        }
        let len = u32::from_ne_bytes(events[12..16].try_into().expect("4 bytes")) as usize;
        let end = (HEADER + len).min(events.len());
        let name = &events[HEADER..end];
        let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
        if let Some(rest) = name.strip_prefix(file)
            && (rest.is_empty() || rest == b"-wal" || rest == b"-journal")
        {
            found = true;
        }
        events = &events[end..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_only_the_file_and_its_journals() {
        let event = |name: &str| {
            let mut padded = name.as_bytes().to_vec();
            padded.resize(name.len().div_ceil(16) * 16 + 16, 0);
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&1i32.to_ne_bytes());
            bytes.extend_from_slice(&libc::IN_MODIFY.to_ne_bytes());
            bytes.extend_from_slice(&0u32.to_ne_bytes());
            bytes.extend_from_slice(&(padded.len() as u32).to_ne_bytes());
            bytes.extend_from_slice(&padded);
            bytes
        };
        assert!(names_file(&event("queue.db-wal"), b"queue.db"));
        assert!(names_file(&event("queue.db"), b"queue.db"));
        assert!(!names_file(&event("queue.db-shm"), b"queue.db"));
        assert!(!names_file(&event("store.db-wal"), b"queue.db"));
        let both = [event("store.db"), event("queue.db-journal")].concat();
        assert!(names_file(&both, b"queue.db"));
    }

    #[tokio::test]
    async fn a_write_to_the_wal_wakes_waiters_and_other_files_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("queue.db");
        let notify = watch_file(&file).unwrap();
        let wait = |notify: Arc<Notify>| async move {
            tokio::time::timeout(Duration::from_millis(500), notify.notified_owned())
                .await
                .is_ok()
        };
        let waiting = tokio::spawn(wait(notify.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        std::fs::write(dir.path().join("store.db-wal"), b"x").unwrap();
        assert!(!waiting.await.unwrap(), "another file wakes nobody");
        let waiting = tokio::spawn(wait(notify.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        std::fs::write(dir.path().join("queue.db-wal"), b"x").unwrap();
        assert!(waiting.await.unwrap(), "a WAL write wakes the waiter");
    }
}
