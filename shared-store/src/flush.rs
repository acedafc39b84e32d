//! Wake-ups between writers and the background threads, plus a published
//! offset that async waiters can await (flushed offset, dispatched offset).
//!
//! Flushing the CommitLog: a background thread that msyncs, either on a timer
//! (ASYNC_FLUSH) or as soon as writers wait (SYNC_FLUSH). Writers that wait
//! while an msync runs are all covered by the next one: group commit, so the
//! fsync rate bounds batches, not messages.

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

/// Shared between writers and the flush thread.
pub(crate) struct OffsetSignal {
    pending: Mutex<bool>,
    cond: Condvar,
    flushed_tx: watch::Sender<u64>,
}

impl OffsetSignal {
    pub(crate) fn new(flushed: u64) -> Self {
        let (flushed_tx, _) = watch::channel(flushed);
        Self {
            pending: Mutex::new(false),
            cond: Condvar::new(),
            flushed_tx,
        }
    }

    /// Ask the flush thread to run now.
    pub(crate) fn wake(&self) {
        let mut p = self.pending.lock();
        if !*p {
            *p = true;
            self.cond.notify_one();
        }
    }

    /// Flush thread: wait until woken or `timeout` passes.
    pub(crate) fn wait(&self, timeout: Duration) {
        let mut p = self.pending.lock();
        if !*p {
            let deadline = Instant::now() + timeout;
            let _ = self.cond.wait_until(&mut p, deadline);
        }
        *p = false;
    }

    /// Publish a new flushed offset to waiting writers.
    pub(crate) fn publish(&self, flushed: u64) {
        self.flushed_tx.send_if_modified(|cur| {
            if flushed > *cur {
                *cur = flushed;
                true
            } else {
                false
            }
        });
    }

    /// Wait until the CommitLog is flushed through `offset`; false on timeout.
    pub(crate) async fn wait_flushed(&self, offset: u64, timeout: Duration) -> bool {
        let mut rx = self.flushed_tx.subscribe();
        let res = tokio::time::timeout(timeout, rx.wait_for(|f| *f >= offset)).await;
        let ok = matches!(res, Ok(Ok(_)));
        drop(res);
        ok
    }

    pub(crate) fn flushed(&self) -> u64 {
        *self.flushed_tx.borrow()
    }
}

impl OffsetSignal {
    /// A receiver of the published offset.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.flushed_tx.subscribe()
    }
}
