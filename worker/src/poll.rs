//! How often an idle worker asks the queue for work.
//!
//! apalis 1.0's `IntervalStrategy` replaces its timer after it fires without
//! polling the new one, so no wake-up is registered; when the next fetch then
//! completes without suspending, the worker sleeps until the 30 s heartbeat
//! (seen as jobs waiting ~10–30 s in an idle queue). This strategy re-arms and
//! polls its timer on every tick, keeping the wake-up contract of `PollStrategy`.
//!
//! With a wake-up source (the SQLite queue's file watch, `wake.rs`) the timer is
//! only a backstop: the worker looks for work as soon as the queue changes.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::ext::poll_strategy::{PollSnapshot, PollStrategy};
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
use tokio::time::{Instant, Sleep};

pub struct Every {
    period: Duration,
    sleep: Pin<Box<Sleep>>,
    wake: Option<(Arc<Notify>, Pin<Box<OwnedNotified>>)>,
    /// A wake-up asked for one more fetch after the current one.
    again: bool,
}

impl Every {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            sleep: Box::pin(tokio::time::sleep(period)),
            wake: None,
            again: false,
        }
    }

    /// Also looks for work whenever `wake` is notified.
    pub fn or_when(mut self, wake: Arc<Notify>) -> Self {
        let notified = Box::pin(wake.clone().notified_owned());
        self.wake = Some((wake, notified));
        self
    }
}

impl PollStrategy for Every {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _snapshot: &PollSnapshot) -> Poll<Option<()>> {
        let mut woken = std::mem::take(&mut self.again);
        if let Some((notify, notified)) = &mut self.wake
            && notified.as_mut().poll(cx).is_ready()
        {
            // Register for the next change before looking, so none is missed.
            *notified = Box::pin(notify.clone().notified_owned());
            let _ = notified.as_mut().poll(cx);
            // The wake-up may be spent on a fetch that began before the change;
            // one more fetch follows it.
            cx.waker().wake_by_ref();
            self.again = !woken;
            woken = true;
        }
        if !woken && self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.sleep.as_mut().reset(Instant::now() + self.period);
        // Register the waker for the next tick now, not on some later poll.
        let _ = self.sleep.as_mut().poll(cx);
        Poll::Ready(Some(()))
    }
}
