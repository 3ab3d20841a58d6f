//! How often an idle worker asks the queue for work.
//!
//! apalis 1.0's `IntervalStrategy` replaces its timer after it fires without
//! polling the new one, so no wake-up is registered; when the next fetch then
//! completes without suspending, the worker sleeps until the 30 s heartbeat
//! (seen as jobs waiting ~10–30 s in an idle queue). This strategy re-arms and
//! polls its timer on every tick, keeping the wake-up contract of `PollStrategy`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::ext::poll_strategy::{PollSnapshot, PollStrategy};
use tokio::time::{Instant, Sleep};

pub struct Every {
    period: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl Every {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            sleep: Box::pin(tokio::time::sleep(period)),
        }
    }
}

impl PollStrategy for Every {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _snapshot: &PollSnapshot) -> Poll<Option<()>> {
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.sleep.as_mut().reset(Instant::now() + self.period);
        // Register the waker for the next tick now, not on some later poll.
        let _ = self.sleep.as_mut().poll(cx);
        Poll::Ready(Some(()))
    }
}
