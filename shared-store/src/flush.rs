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
/// Writers waiting for the flushed offset to pass their entry's end. Each
/// waiter is completed exactly once, by the flush that covers it: waking only
/// those (not every waiter on every flush) keeps group commit cheap at
/// hundreds of concurrent writers.
#[derive(Default)]
struct Waiters {
    flushed: u64,
    list: Vec<(u64, Instant, tokio::sync::oneshot::Sender<bool>)>,
}

pub(crate) struct OffsetSignal {
    waiters: Mutex<Waiters>,
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
            waiters: Mutex::new(Waiters {
                flushed,
                list: Vec::new(),
            }),
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
        {
            let mut w = self.waiters.lock();
            if flushed > w.flushed {
                w.flushed = flushed;
                let mut i = 0;
                while i < w.list.len() {
                    if w.list[i].0 <= flushed {
                        let (_, _, tx) = w.list.swap_remove(i);
                        let _ = tx.send(true);
                    } else {
                        i += 1;
                    }
                }
            }
        }
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
    /// Wait until the CommitLog is flushed through `offset`; false when the
    /// flush thread gives up on this waiter (see [`Self::expire`]). No timer per
    /// put: the flush thread expires waiters, which it wakes often anyway.
    pub(crate) async fn wait_flushed(&self, offset: u64) -> bool {
        let rx = {
            let mut w = self.waiters.lock();
            if w.flushed >= offset {
                return true;
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            w.list.push((offset, Instant::now(), tx));
            rx
        };
        rx.await.unwrap_or(false)
    }

    /// Answer "not flushed" to waiters older than `timeout` (FLUSH_DISK_TIMEOUT).
    pub(crate) fn expire(&self, timeout: Duration) {
        let mut w = self.waiters.lock();
        let now = Instant::now();
        let mut i = 0;
        while i < w.list.len() {
            if now.duration_since(w.list[i].1) >= timeout {
                let (_, _, tx) = w.list.swap_remove(i);
                let _ = tx.send(false);
            } else {
                i += 1;
            }
        }
    }

    /// How long the oldest SYNC_FLUSH waiter has waited (zero if none).
    pub(crate) fn oldest_waiter_age(&self) -> Duration {
        let w = self.waiters.lock();
        let now = Instant::now();
        w.list
            .iter()
            .map(|(_, t, _)| now.duration_since(*t))
            .max()
            .unwrap_or_default()
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
