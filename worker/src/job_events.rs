//! What a running job tells the worker through its runner (see
//! `crate::protocol::EVENT_KEY`): how far Jesse's simulation got, and the lines
//! its strategy printed or logged with `self.log(...)`. Progress becomes the
//! job's progress and stage ("simulating 2023-03-14 (42%)"); lines go to the
//! job's log in the store, capped per job. The job's process is untrusted: every
//! event is checked and bounded here, whatever it claims.

use std::time::{Duration, Instant};

use jesse_mcp_core::store::{JobLogLine, Store};
use jesse_mcp_core::time::{now_ms, to_rfc3339};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

/// Lines a job's log keeps (the runner's Python stops at the same cap).
pub const MAX_LOG_LINES: i64 = 10_000;
/// Bytes of text a job's log keeps.
pub const MAX_LOG_BYTES: i64 = 1 << 20;
/// The last line of a log that reached its cap (the same text as the runner's).
pub const TRUNCATED_LINE: &str =
    "[log truncated: a job keeps at most 10000 lines and 1048576 bytes]";
/// Progress of the Jesse run maps onto this part of the job's 0..1.
const PROGRESS_FROM: f64 = 0.15;
const PROGRESS_TO: f64 = 0.95;
/// Least time between two progress writes to the store.
const PROGRESS_EVERY: Duration = Duration::from_millis(400);
const STREAMS: &[&str] = &["stdout", "stderr", "info", "error", "system"];

/// The events of one attempt of a job: a sink the runner call feeds, and the
/// task that writes what it receives.
pub struct JobEvents {
    pub sink: EventSink,
    writer: tokio::task::JoinHandle<()>,
}

/// Checks and caps events as they arrive (synchronously, from the runner call).
pub struct EventSink {
    attempt: i64,
    progress: watch::Sender<Option<(f64, i64)>>,
    logs: mpsc::UnboundedSender<Vec<JobLogLine>>,
    next_seq: i64,
    lines: i64,
    bytes: i64,
    truncated: bool,
}

impl JobEvents {
    /// Starts the writer for `attempt` of `job_id`; the log continues after
    /// what earlier attempts wrote, within the same cap.
    pub async fn start(store: &Store, job_id: &str, attempt: i64) -> JobEvents {
        let usage = match store.job_log_usage(job_id).await {
            Ok(usage) => usage,
            Err(e) => {
                tracing::warn!(job.id = job_id, error = %e, "reading the job's log size failed; assuming empty");
                Default::default()
            }
        };
        let (progress, progress_rx) = watch::channel(None);
        let (logs, logs_rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write(
            store.clone(),
            job_id.to_string(),
            progress_rx,
            logs_rx,
        ));
        JobEvents {
            sink: EventSink {
                attempt,
                progress,
                logs,
                next_seq: usage.next_seq,
                lines: usage.lines,
                bytes: usage.bytes,
                truncated: usage.truncated || usage.lines > MAX_LOG_LINES,
            },
            writer,
        }
    }

    /// Waits until everything received is stored (no progress is written after).
    pub async fn finish(self) {
        drop(self.sink);
        let _ = self.writer.await;
    }
}

impl EventSink {
    /// One event as the runner forwarded it.
    pub fn take(&mut self, event: Value) {
        if let Some(fraction) = event.get("progress").and_then(Value::as_f64)
            && let Some(simulated) = event.get("simulated_ms").and_then(Value::as_i64)
            && fraction.is_finite()
        {
            self.progress
                .send_replace(Some((fraction.clamp(0.0, 1.0), simulated)));
        }
        if let Some(lines) = event.get("logs").and_then(Value::as_array) {
            let kept: Vec<JobLogLine> = lines.iter().filter_map(|l| self.keep(l)).collect();
            if !kept.is_empty() {
                let _ = self.logs.send(kept);
            }
        }
    }

    /// A line within the cap, numbered; the cap's own line once it is reached.
    fn keep(&mut self, line: &Value) -> Option<JobLogLine> {
        if self.truncated {
            return None;
        }
        let stream = line
            .get("stream")
            .and_then(Value::as_str)
            .filter(|s| STREAMS.contains(s))
            .unwrap_or("stdout");
        let text = line.get("line").and_then(Value::as_str).unwrap_or("");
        let size = text.len() as i64;
        let (stream, text) = if self.lines >= MAX_LOG_LINES || self.bytes + size > MAX_LOG_BYTES {
            self.truncated = true;
            ("system", TRUNCATED_LINE)
        } else {
            self.lines += 1;
            self.bytes += size;
            (stream, text)
        };
        if stream == "system" {
            // Only the cap's line is the system's; the job's process cannot write more.
            self.truncated = true;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        Some(JobLogLine {
            seq,
            attempt: self.attempt,
            stream: stream.to_string(),
            line: if stream == "system" {
                TRUNCATED_LINE.to_string()
            } else {
                text.to_string()
            },
            simulated_ms: line.get("simulated_ms").and_then(Value::as_i64),
            logged_at: now_ms(),
        })
    }
}

/// Writes log batches as they come and the latest progress at most every
/// [`PROGRESS_EVERY`], until the sink is dropped.
async fn write(
    store: Store,
    job_id: String,
    mut progress: watch::Receiver<Option<(f64, i64)>>,
    mut logs: mpsc::UnboundedReceiver<Vec<JobLogLine>>,
) {
    let mut next_progress = Instant::now();
    let mut progress_open = true;
    let mut pending = None;
    loop {
        tokio::select! {
            batch = logs.recv() => {
                // The sink is gone: the job's answer is in; progress is the caller's again.
                let Some(batch) = batch else { return };
                if let Err(e) = store.append_job_logs(&job_id, &batch).await {
                    tracing::warn!(job.id = job_id, error = %e, lines = batch.len(), "job log lines not stored");
                }
            }
            changed = progress.changed(), if progress_open => {
                match changed {
                    Ok(()) => pending = *progress.borrow_and_update(),
                    Err(_) => progress_open = false,
                }
            }
            _ = tokio::time::sleep_until(next_progress.into()), if pending.is_some() => {
                let Some((fraction, simulated)) = pending.take() else { continue };
                let day = to_rfc3339(simulated);
                let stage = format!(
                    "simulating {} ({:.0}%)",
                    day.get(..10).unwrap_or(&day),
                    fraction * 100.0
                );
                let value = PROGRESS_FROM + (PROGRESS_TO - PROGRESS_FROM) * fraction;
                if let Err(e) = store.set_progress(&job_id, value, &stage).await {
                    tracing::warn!(job.id = job_id, error = %e, "progress not recorded; the job goes on");
                }
                next_progress = Instant::now() + PROGRESS_EVERY;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    type Parts = (
        EventSink,
        watch::Receiver<Option<(f64, i64)>>,
        mpsc::UnboundedReceiver<Vec<JobLogLine>>,
    );

    fn new_sink() -> Parts {
        let (progress, progress_rx) = watch::channel(None);
        let (logs, logs_rx) = mpsc::unbounded_channel();
        let sink = EventSink {
            attempt: 1,
            progress,
            logs,
            next_seq: 0,
            lines: 0,
            bytes: 0,
            truncated: false,
        };
        (sink, progress_rx, logs_rx)
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<Vec<JobLogLine>>) -> Vec<JobLogLine> {
        let mut all = Vec::new();
        while let Ok(batch) = rx.try_recv() {
            all.extend(batch);
        }
        all
    }

    #[test]
    fn the_line_cap_holds_whatever_the_job_sends() {
        let (mut sink, _, mut rx) = new_sink();
        for batch in 0..11 {
            let lines: Vec<Value> = (0..1000)
                .map(|i| json!({"stream": "stdout", "line": format!("{batch}.{i}"), "simulated_ms": 5}))
                .collect();
            sink.take(json!({ "logs": lines }));
        }
        let kept = drain(&mut rx);
        assert_eq!(kept.len(), 10_001);
        assert!(kept[..10_000].iter().all(|l| l.stream == "stdout"));
        assert_eq!(kept[10_000].stream, "system");
        assert_eq!(kept[10_000].line, TRUNCATED_LINE);
        assert!(kept.iter().enumerate().all(|(i, l)| l.seq == i as i64));
    }

    #[test]
    fn the_byte_cap_holds_and_streams_are_checked() {
        let (mut sink, _, mut rx) = new_sink();
        let big = "x".repeat(700 * 1024);
        sink.take(json!({"logs": [
            {"stream": "info", "line": big},
            {"stream": "nonsense", "line": "kept as stdout"},
            {"stream": "stderr", "line": big},
            {"stream": "stderr", "line": "after the cap"},
        ]}));
        let kept = drain(&mut rx);
        let streams: Vec<&str> = kept.iter().map(|l| l.stream.as_str()).collect();
        assert_eq!(streams, ["info", "stdout", "system"]);
        // The job's process cannot write system lines of its own.
        let (mut sink, _, mut rx) = new_sink();
        sink.take(
            json!({"logs": [{"stream": "system", "line": "I am the system"}, {"line": "more"}]}),
        );
        let kept = drain(&mut rx);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].line, TRUNCATED_LINE);
    }

    #[test]
    fn progress_is_clamped_and_nonsense_ignored() {
        let (mut sink, rx, _) = new_sink();
        sink.take(json!({"progress": 7.0, "simulated_ms": 1000}));
        assert_eq!(*rx.borrow(), Some((1.0, 1000)));
        sink.take(json!({"progress": "half", "simulated_ms": 2000}));
        sink.take(json!({"progress": 0.5}));
        assert_eq!(*rx.borrow(), Some((1.0, 1000)));
    }
}
