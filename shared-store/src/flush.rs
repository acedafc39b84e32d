//! Wake-ups between writers and the background threads, plus a published
//! offset that async waiters can await (flushed offset, dispatched offset).
//!
//! Flushing the CommitLog: a background thread that msyncs, either on a timer
//! (ASYNC_FLUSH) or as soon as writers wait (SYNC_FLUSH). Writers that wait
//! while an msync runs are all covered by the next one: group commit, so the
//! fsync rate bounds batches, not messages.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

/// Shared between writers and the flush thread.
pub(crate) struct OffsetSignal {
    /// A wake-up is pending. Checked without the lock so that a writer whose
    /// thread is already busy pays one atomic, not a futex call per put.
    pending: AtomicBool,
    sleeping: AtomicBool,
    lock: Mutex<()>,
    cond: Condvar,
    flushed_tx: watch::Sender<u64>,
}

impl OffsetSignal {
    pub(crate) fn new(flushed: u64) -> Self {
        let (flushed_tx, _) = watch::channel(flushed);
        Self {
            pending: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            lock: Mutex::new(()),
            cond: Condvar::new(),
            flushed_tx,
        }
    }

    /// Ask the flush thread to run now.
    pub(crate) fn wake(&self) {
        if !self.pending.swap(true, Ordering::SeqCst) && self.sleeping.load(Ordering::SeqCst) {
            let _g = self.lock.lock();
            self.cond.notify_one();
        }
    }

    /// Background thread: wait until woken or `timeout` passes.
    pub(crate) fn wait(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock.lock();
        // `sleeping` is set before `pending` is re-checked, so a waker either sees
        // it and notifies (under the lock), or set `pending` before the check.
        self.sleeping.store(true, Ordering::SeqCst);
        while !self.pending.load(Ordering::SeqCst) {
            if self.cond.wait_until(&mut g, deadline).timed_out() {
                break;
            }
        }
        self.sleeping.store(false, Ordering::SeqCst);
        self.pending.store(false, Ordering::SeqCst);
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
