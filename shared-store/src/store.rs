//! `MessageStore`: the engine's API. Owns the CommitLog, the ConsumeQueues,
//! the index, the checkpoint and three background threads (flush, dispatch,
//! checkpoint + retention).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hashbrown::HashMap;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::checkpoint::{Checkpoint, CheckpointData};
use crate::commit_log::{AppendResult, CommitLog};
use crate::config::{FlushDiskType, StoreConfig};
use crate::consume_queue::{ConsumeQueue, CqEntry};
use crate::error::{IoContext, Result, StoreError};
use crate::flush::OffsetSignal;
use crate::index_file::IndexService;
use crate::message::{self, property, Message, StoredMessage};
use crate::msg_id::decode_offset_msg_id;

/// Outcome of a put whose bytes were appended (RocketMQ's PutMessageStatus for
/// the cases where the message is stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutStatus {
    /// Stored with the configured durability.
    PutOk,
    /// Stored, but SYNC_FLUSH did not confirm within `syncFlushTimeout`.
    FlushDiskTimeout,
}

/// Result of [`MessageStore::put_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    /// Durability outcome.
    pub status: PutStatus,
    /// Where the message landed.
    pub append: AppendResult,
}

/// A message already in the log, possibly still waiting for durability.
pub struct Submitted {
    store: MessageStore,
    /// Where the message landed.
    pub append: AppendResult,
    wait_for: Option<u64>,
    started: Instant,
}

impl Submitted {
    /// Wait for the configured durability (SYNC_FLUSH: the group-commit flush
    /// covering the entry, or FLUSH_DISK_TIMEOUT after `syncFlushTimeout`).
    pub async fn durable(self) -> PutResult {
        let status = match self.wait_for {
            Some(end) => {
                if self.store.inner.flush.wait_flushed(end).await {
                    PutStatus::PutOk
                } else {
                    metrics::counter!("ferrymq_store_flush_timeouts_total").increment(1);
                    PutStatus::FlushDiskTimeout
                }
            }
            None => PutStatus::PutOk,
        };
        self.store
            .inner
            .put_latency
            .record(self.started.elapsed().as_secs_f64());
        PutResult {
            status,
            append: self.append,
        }
    }
}

/// Status of a get (RocketMQ's GetMessageStatus).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetStatus {
    /// Messages returned.
    Found,
    /// Entries existed but the filter matched none.
    NoMatchedMessage,
    /// The entries' messages were deleted by retention.
    MessageWasRemoving,
    /// Entries could not be read.
    OffsetFoundNull,
    /// Offset is past max by more than one.
    OffsetOverflowBadly,
    /// Offset equals max: nothing new yet.
    OffsetOverflowOne,
    /// Offset is below the queue's min (deleted); `next_begin_offset` is the min.
    OffsetTooSmall,
    /// The queue does not exist.
    NoMatchedLogicQueue,
    /// The entry at `next_begin_offset` failed its CRC/shape check: reported,
    /// never skipped.
    Corrupted,
    /// The queue exists but is empty.
    NoMessageInQueue,
}

/// One message returned by a get: the raw stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GotMessage {
    /// Queue offset of the message.
    pub queue_offset: i64,
    /// CommitLog offset.
    pub physical_offset: i64,
    /// Tag hash from the ConsumeQueue.
    pub tag_hash: i64,
    /// The stored entry, byte for byte.
    pub data: Bytes,
}

/// Result of [`MessageStore::get_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResult {
    /// What happened.
    pub status: GetStatus,
    /// Where the next get should start.
    pub next_begin_offset: i64,
    /// Queue min offset at the time of the get.
    pub min_offset: i64,
    /// Queue max offset at the time of the get.
    pub max_offset: i64,
    /// Messages, in queue order.
    pub messages: Vec<GotMessage>,
}

/// Counters for benchmarks and admin tools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Messages appended since open.
    pub puts: u64,
    /// Bytes appended since open.
    pub put_bytes: u64,
    /// CommitLog flushes (msync rounds) that wrote something.
    pub flushes: u64,
}

/// What a retention pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RetentionReport {
    /// Disk usage ratio seen (filesystem or quota, whichever is higher).
    pub disk_ratio: f64,
    /// CommitLog segments deleted.
    pub commit_log_files_deleted: usize,
    /// ConsumeQueue files deleted.
    pub consume_queue_files_deleted: usize,
    /// Index files deleted.
    pub index_files_deleted: usize,
    /// Whether writes are now refused.
    pub disk_full: bool,
}

/// Where opening found the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryKind {
    /// Empty directory.
    Fresh,
    /// Clean shutdown: the checkpoint was trusted.
    Clean,
    /// Crash: the log was scanned and indexes rebuilt past the checkpoint.
    Crash,
}

/// RocketMQ-style message store. Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct MessageStore {
    inner: Arc<Inner>,
}

/// topic → queue id → ConsumeQueue (nested so lookups by `&str` need no allocation).
type QueueMap = HashMap<String, HashMap<i32, Arc<ConsumeQueue>>>;

struct Inner {
    config: StoreConfig,
    commit_log: CommitLog,
    cq_root: PathBuf,
    queues: RwLock<QueueMap>,
    index: RwLock<IndexService>,
    checkpoint: Mutex<Checkpoint>,
    abort_path: PathBuf,
    flush: Arc<OffsetSignal>,
    dispatch: Arc<OffsetSignal>,
    service: Arc<OffsetSignal>,
    /// Wakes the committer (ring → segments).
    commit: Arc<OffsetSignal>,
    dispatch_lock: Mutex<()>,
    dispatched: AtomicU64,
    closing: AtomicBool,
    stop: Arc<AtomicBool>,
    disk_full: AtomicBool,
    /// f64 bits of the disk ratio the last retention check saw (statvfs is
    /// too slow to call per publish).
    last_ratio: AtomicU64,
    recovery: RecoveryKind,
    puts: AtomicU64,
    put_bytes: AtomicU64,
    flushes: AtomicU64,
    /// Per-put metrics, registered once: the macros look the name up per call.
    put_messages: metrics::Counter,
    put_bytes_total: metrics::Counter,
    put_latency: metrics::Histogram,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn validate_topic(topic: &str) -> Result<()> {
    if topic.is_empty()
        || topic.len() > message::TOPIC_MAX_LEN
        || topic == "."
        || topic == ".."
        || topic.contains(['/', '\\', '\0'])
    {
        return Err(StoreError::MessageIllegal(format!(
            "illegal topic name {topic:?}"
        )));
    }
    Ok(())
}

impl MessageStore {
    /// Open (or create) the store at `config.store_path`, recovering as needed.
    /// Must be called within a tokio runtime only if puts will be awaited there.
    pub fn open(config: StoreConfig) -> Result<Self> {
        config.validate()?;
        let root = config.store_path.clone();
        std::fs::create_dir_all(&root).at(&root)?;
        let (checkpoint, cp) = Checkpoint::open(&root.join("checkpoint"))?;
        let abort_path = root.join("abort");
        let crashed = abort_path.exists();
        let commit_log = CommitLog::load(
            root.join("commitlog"),
            config.mapped_file_size_commit_log,
            config.store_host,
            root.join("staging"),
            config
                .commit_log_staging_size
                .max(crate::staging::min_size(config.max_message_size)),
        )?;
        let cq_root = root.join("consumequeue");
        let queues = load_queues(&cq_root, config.consume_queue_entries_per_file)?;
        let index = IndexService::load(
            root.join("index"),
            config.max_hash_slot_num,
            config.max_index_num,
        )?;

        let fresh = commit_log.files().len() == 0 && cp.is_none();
        let clean = !crashed
            && cp.is_some_and(|c| c.physic == c.logics)
            && commit_log.first_short_segment().is_none();
        let recovery = if fresh {
            RecoveryKind::Fresh
        } else if clean {
            RecoveryKind::Clean
        } else {
            RecoveryKind::Crash
        };
        let inner = Arc::new(Inner {
            commit_log,
            cq_root,
            queues: RwLock::new(queues),
            index: RwLock::new(index),
            checkpoint: Mutex::new(checkpoint),
            abort_path,
            flush: Arc::new(OffsetSignal::new(0)),
            dispatch: Arc::new(OffsetSignal::new(0)),
            service: Arc::new(OffsetSignal::new(0)),
            commit: Arc::new(OffsetSignal::new(0)),
            dispatch_lock: Mutex::new(()),
            dispatched: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            stop: Arc::new(AtomicBool::new(false)),
            disk_full: AtomicBool::new(false),
            last_ratio: AtomicU64::new(0),
            recovery,
            puts: AtomicU64::new(0),
            put_bytes: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            put_messages: metrics::counter!("ferrymq_store_put_messages_total"),
            put_bytes_total: metrics::counter!("ferrymq_store_put_bytes_total"),
            put_latency: metrics::histogram!("ferrymq_store_put_latency_seconds"),
            threads: Mutex::new(Vec::new()),
            config,
        });
        let started = Instant::now();
        inner.recover(cp)?;
        tracing::info!(
            ?recovery,
            max_offset = inner.commit_log.max_offset(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "store opened"
        );
        inner.update_disk_state();
        std::fs::write(&inner.abort_path, b"").at(&inner.abort_path)?;
        std::fs::File::open(&root)
            .and_then(|d| d.sync_all())
            .at(&root)?;
        let store = MessageStore { inner };
        store.start_threads()?;
        Ok(store)
    }

    fn start_threads(&self) -> Result<()> {
        type Loop = fn(Weak<Inner>, Arc<OffsetSignal>, Arc<AtomicBool>);
        let inner = &self.inner;
        let services: [(&str, &Arc<OffsetSignal>, Loop); 4] = [
            ("store-flush", &inner.flush, flush_loop),
            ("store-dispatch", &inner.dispatch, dispatch_loop),
            ("store-service", &inner.service, service_loop),
            ("store-commit", &inner.commit, commit_loop),
        ];
        let mut threads = inner.threads.lock();
        for (name, sig, body) in services {
            // Threads hold the store weakly, so dropping every handle stops them.
            let (weak, sig, stop) = (Arc::downgrade(inner), sig.clone(), inner.stop.clone());
            let t = std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || body(weak, sig, stop))
                .map_err(|e| StoreError::Io {
                    path: PathBuf::from(name),
                    source: e,
                })?;
            threads.push(t);
        }
        Ok(())
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// How the last open found the directory.
    pub fn recovery_kind(&self) -> RecoveryKind {
        self.inner.recovery
    }

    /// Append a message; returns once it has the configured durability.
    pub async fn put_message(&self, msg: Message) -> Result<PutResult> {
        Ok(self.submit_message(msg)?.durable().await)
    }

    /// Append a message now (its place in the log is fixed when this returns)
    /// and hand back a [`Submitted`] whose [`Submitted::durable`] waits for the
    /// configured durability. Callers that must keep their own order (an MQTT
    /// connection's publishes) append in order and wait concurrently.
    pub fn submit_message(&self, msg: Message) -> Result<Submitted> {
        let inner = &self.inner;
        if inner.closing.load(Ordering::Acquire) {
            return Err(StoreError::ShutDown);
        }
        validate_topic(&msg.topic)?;
        if msg.body.len() > inner.config.max_message_size {
            return Err(StoreError::MessageIllegal(format!(
                "body of {} bytes is over maxMessageSize {}",
                msg.body.len(),
                inner.config.max_message_size
            )));
        }
        inner.check_writable()?;
        let started = Instant::now();
        let append = inner.commit_log.append(&msg)?;
        let end = append.end_offset();
        inner.puts.fetch_add(1, Ordering::Relaxed);
        inner
            .put_bytes
            .fetch_add(append.wrote_bytes as u64, Ordering::Relaxed);
        inner.put_messages.increment(1);
        inner.put_bytes_total.increment(append.wrote_bytes as u64);
        let wait_for = match inner.config.flush_disk_type {
            FlushDiskType::SyncFlush => {
                // The flush thread commits before it syncs: one hop, not two.
                inner.flush.wake();
                Some(end)
            }
            FlushDiskType::AsyncFlush => {
                inner.commit.wake();
                let dirty = end.saturating_sub(inner.flush.flushed());
                if dirty >= inner.config.flush_commit_log_least_pages * 4096 {
                    inner.flush.wake();
                }
                None
            }
        };
        Ok(Submitted {
            store: self.clone(),
            append,
            wait_for,
            started,
        })
    }

    /// Bytes appended but not yet flushed, and the age of the oldest
    /// SYNC_FLUSH put still waiting: how far flushing lags behind writes.
    pub fn flush_lag(&self) -> (u64, Duration) {
        let inner = &self.inner;
        let unflushed = inner
            .commit_log
            .max_offset()
            .saturating_sub(inner.flush.flushed());
        (unflushed, inner.flush.oldest_waiter_age())
    }

    /// Disk usage ratio as retention sees it (the quota's, when configured, or
    /// the filesystem's, whichever is higher).
    pub fn disk_ratio(&self) -> f64 {
        let inner = &self.inner;
        let q = inner.quota_ratio().unwrap_or(0.0);
        q.max(f64::from_bits(inner.last_ratio.load(Ordering::Relaxed)))
    }

    /// Up to `max_msgs` messages of (topic, queue) from `offset`, skipping those
    /// whose tag hash `filter` rejects.
    pub fn get_message(
        &self,
        topic: &str,
        queue_id: i32,
        offset: i64,
        max_msgs: usize,
        filter: Option<&dyn Fn(i64) -> bool>,
    ) -> GetResult {
        let inner = &self.inner;
        let Some(cq) = inner.find_cq(topic, queue_id) else {
            return GetResult {
                status: GetStatus::NoMatchedLogicQueue,
                next_begin_offset: 0,
                min_offset: 0,
                max_offset: 0,
                messages: Vec::new(),
            };
        };
        let min = cq.min_offset();
        let max = cq.max_offset();
        let mut r = GetResult {
            status: GetStatus::NoMatchedMessage,
            next_begin_offset: offset,
            min_offset: min,
            max_offset: max,
            messages: Vec::new(),
        };
        if max == 0 || min >= max && offset <= min {
            r.status = GetStatus::NoMessageInQueue;
            r.next_begin_offset = if offset < min { min } else { offset.min(max) };
            return r;
        }
        if offset < min {
            r.status = GetStatus::OffsetTooSmall;
            r.next_begin_offset = min;
            return r;
        }
        if offset == max {
            r.status = GetStatus::OffsetOverflowOne;
            return r;
        }
        if offset > max {
            r.status = GetStatus::OffsetOverflowBadly;
            r.next_begin_offset = max;
            return r;
        }
        let commit_min = inner.commit_log.min_offset() as i64;
        let mut bytes = 0usize;
        let mut next = offset;
        let mut removed = false;
        let scan_limit = max_msgs.max(1) * 4 + 64;
        let mut scanned = 0;
        'outer: while next < max && r.messages.len() < max_msgs && scanned < scan_limit {
            let batch = cq.entries(next, (scan_limit - scanned).min(1024));
            if batch.is_empty() {
                break;
            }
            for e in batch {
                scanned += 1;
                let qo = next;
                next += 1;
                if e.size <= 0 {
                    continue;
                }
                if e.physical_offset < commit_min {
                    removed = true;
                    continue;
                }
                if let Some(f) = filter {
                    if !f(e.tag_hash) {
                        continue;
                    }
                }
                if !r.messages.is_empty()
                    && bytes + e.size as usize > inner.config.max_transfer_bytes
                {
                    next -= 1;
                    break 'outer;
                }
                match inner
                    .commit_log
                    .read(e.physical_offset as u64, e.size as u64)
                {
                    Some(data)
                        if !matches!(
                            message::check_entry_at(&data, e.physical_offset as u64),
                            Ok(message::EntryCheck::Message(n)) if n == data.len()
                        ) =>
                    {
                        tracing::error!(
                            topic,
                            queue_id,
                            queue_offset = qo,
                            physical_offset = e.physical_offset,
                            "stored message fails its CRC/shape check"
                        );
                        metrics::counter!("ferrymq_store_corrupt_reads_total").increment(1);
                        if r.messages.is_empty() {
                            r.status = GetStatus::Corrupted;
                            r.next_begin_offset = qo;
                            return r;
                        }
                        next -= 1;
                        break 'outer;
                    }
                    Some(data) => {
                        bytes += data.len();
                        r.messages.push(GotMessage {
                            queue_offset: qo,
                            physical_offset: e.physical_offset,
                            tag_hash: e.tag_hash,
                            data,
                        });
                    }
                    None => removed = true,
                }
                if r.messages.len() >= max_msgs || scanned >= scan_limit {
                    break 'outer;
                }
            }
        }
        r.next_begin_offset = next;
        r.status = if !r.messages.is_empty() {
            GetStatus::Found
        } else if removed {
            GetStatus::MessageWasRemoving
        } else {
            GetStatus::NoMatchedMessage
        };
        r
    }

    /// Next queue offset the CommitLog will assign in (topic, queue): unlike
    /// [`Self::max_offset_in_queue`] it counts appends not yet dispatched.
    pub fn assigned_offset_in_queue(&self, topic: &str, queue_id: i32) -> i64 {
        self.inner
            .commit_log
            .queue_offsets()
            .peek(topic, queue_id)
            .max(self.max_offset_in_queue(topic, queue_id))
    }

    /// Lowest readable offset of a queue (0 if it does not exist).
    pub fn min_offset_in_queue(&self, topic: &str, queue_id: i32) -> i64 {
        self.inner
            .find_cq(topic, queue_id)
            .map(|q| q.min_offset())
            .unwrap_or(0)
    }

    /// Next offset to be written in a queue (0 if it does not exist).
    pub fn max_offset_in_queue(&self, topic: &str, queue_id: i32) -> i64 {
        self.inner
            .find_cq(topic, queue_id)
            .map(|q| q.max_offset())
            .unwrap_or(0)
    }

    /// ConsumeQueue entry at `offset`.
    pub fn cq_entry(&self, topic: &str, queue_id: i32, offset: i64) -> Option<CqEntry> {
        let get = || self.inner.find_cq(topic, queue_id)?.get(offset);
        if let Some(e) = get() {
            return Some(e);
        }
        // Appended but not indexed yet (a client acting right after its own
        // put): index now rather than answer "no such entry".
        if offset < self.assigned_offset_in_queue(topic, queue_id) {
            if let Err(e) = self.dispatch_now() {
                tracing::warn!(%e, "dispatch for a ConsumeQueue lookup failed");
            }
            return get();
        }
        None
    }

    /// First queue offset whose message was stored at or after `timestamp` (ms);
    /// the max offset if none was.
    pub fn offset_in_queue_by_time(&self, topic: &str, queue_id: i32, timestamp: i64) -> i64 {
        let Some(cq) = self.inner.find_cq(topic, queue_id) else {
            return 0;
        };
        let (mut lo, mut hi) = (cq.min_offset(), cq.max_offset());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let ts = cq.get(mid).and_then(|e| {
                self.inner
                    .commit_log
                    .store_timestamp_at(e.physical_offset as u64)
            });
            match ts {
                Some(t) if t < timestamp => lo = mid + 1,
                Some(_) => hi = mid,
                // Deleted underneath us: treat as older than anything asked for.
                None => lo = mid + 1,
            }
        }
        lo
    }

    /// Store time of the oldest readable message of a queue.
    pub fn earliest_message_time(&self, topic: &str, queue_id: i32) -> Option<i64> {
        let cq = self.inner.find_cq(topic, queue_id)?;
        let e = cq.get(cq.min_offset())?;
        self.inner
            .commit_log
            .store_timestamp_at(e.physical_offset as u64)
    }

    /// The stored bytes of the entry at a CommitLog offset.
    pub fn read_raw(&self, physical_offset: i64) -> Option<Bytes> {
        self.inner
            .commit_log
            .read_entry(u64::try_from(physical_offset).ok()?)
    }

    /// Decode the message at a CommitLog offset.
    pub fn look_message_by_offset(&self, physical_offset: i64) -> Option<StoredMessage> {
        message::decode(&self.read_raw(physical_offset)?).ok()
    }

    /// The message named by an offsetMsgId (any store host is accepted: the id's
    /// offset is what locates it here).
    pub fn view_message_by_id(&self, offset_msg_id: &str) -> Result<Option<StoredMessage>> {
        let (_, offset) = decode_offset_msg_id(offset_msg_id)?;
        Ok(self.look_message_by_offset(offset))
    }

    /// Messages of `topic` whose KEYS contain `key` or whose unique key is
    /// `key`, stored within `[begin, end]` ms, newest first, at most `max`.
    pub fn query_message(
        &self,
        topic: &str,
        key: &str,
        max: usize,
        begin: i64,
        end: i64,
    ) -> Vec<StoredMessage> {
        let offsets = self
            .inner
            .index
            .read()
            .query(topic, key, max * 2 + 8, begin, end);
        let mut out = Vec::new();
        for off in offsets {
            let Some(m) = self.look_message_by_offset(off) else {
                continue;
            };
            let props = &m.message.properties;
            let matches = m.message.topic == topic
                && (props.get(property::UNIQ_KEY) == Some(key)
                    || props
                        .get(property::KEYS)
                        .is_some_and(|ks| ks.split(' ').any(|k| k == key)));
            if matches && m.store_timestamp >= begin && m.store_timestamp <= end {
                out.push(m);
                if out.len() >= max {
                    break;
                }
            }
        }
        out
    }

    /// Every (topic, queue id) with a ConsumeQueue.
    pub fn queues(&self) -> Vec<(String, i32)> {
        let mut v: Vec<_> = self
            .inner
            .queues
            .read()
            .iter()
            .flat_map(|(t, qs)| qs.keys().map(move |q| (t.clone(), *q)))
            .collect();
        v.sort();
        v
    }

    /// Delete a topic's ConsumeQueues (its CommitLog bytes age out by retention).
    pub fn delete_topic(&self, topic: &str) -> Result<()> {
        let _d = self.inner.dispatch_lock.lock();
        let mut offsets = self.inner.commit_log.queue_offsets();
        let mut queues = self.inner.queues.write();
        if let Some(qs) = queues.remove(topic) {
            for q in qs.values() {
                q.destroy()?;
            }
        }
        offsets.remove_topic(topic);
        let _ = std::fs::remove_dir(self.inner.cq_root.join(topic));
        Ok(())
    }

    /// Lowest CommitLog offset still stored.
    pub fn min_physical_offset(&self) -> u64 {
        self.inner.commit_log.min_offset()
    }

    /// CommitLog offset one past the last appended byte.
    pub fn max_physical_offset(&self) -> u64 {
        self.inner.commit_log.max_offset()
    }

    /// CommitLog offset below which everything is flushed.
    pub fn flushed_physical_offset(&self) -> u64 {
        self.inner.commit_log.flushed_offset()
    }

    /// CommitLog offset below which everything is in ConsumeQueues and index.
    pub fn dispatched_offset(&self) -> u64 {
        self.inner.dispatched.load(Ordering::Acquire)
    }

    /// Watch the dispatched offset: it moves whenever new messages become
    /// readable (long polling waits on it).
    pub fn subscribe_arrivals(&self) -> watch::Receiver<u64> {
        self.inner.dispatch.subscribe()
    }

    /// Dispatch everything appended so far, now, on this thread.
    pub fn dispatch_now(&self) -> Result<()> {
        self.inner.commit_log.commit()?;
        self.inner.dispatch_pending()
    }

    /// Counters since open.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            puts: self.inner.puts.load(Ordering::Relaxed),
            put_bytes: self.inner.put_bytes.load(Ordering::Relaxed),
            flushes: self.inner.flushes.load(Ordering::Relaxed),
        }
    }

    /// Run a retention pass now. `force_delete_hour` acts as if the clock were
    /// at a `deleteWhen` hour (for operators and tests).
    pub fn run_retention(&self, force_delete_hour: bool) -> Result<RetentionReport> {
        self.inner.run_retention(force_delete_hour)
    }

    /// Flush everything, write a clean checkpoint and stop the threads. Blocks;
    /// from async code call it in `spawn_blocking`.
    pub fn shutdown(&self) -> Result<()> {
        let inner = &self.inner;
        if inner.closing.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Waits out any append in progress and refuses later ones.
        inner.commit_log.close();
        inner.commit_log.flush()?;
        inner.dispatch_pending()?;
        inner.flush.publish(inner.commit_log.flushed_offset());
        let end = inner.commit_log.max_offset();
        inner.flush_indexes()?;
        inner.checkpoint.lock().write(CheckpointData {
            physic: end,
            logics: end,
            timestamp: message::now_millis(),
        })?;
        inner.stop.store(true, Ordering::Release);
        inner.flush.wake();
        inner.dispatch.wake();
        inner.service.wake();
        inner.commit.wake();
        let threads: Vec<_> = inner.threads.lock().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
        std::fs::remove_file(&inner.abort_path).at(&inner.abort_path)?;
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Not a clean shutdown (that is `shutdown`): stop threads, keep the abort
        // marker so the next open verifies the log.
        self.stop.store(true, Ordering::Release);
        self.flush.wake();
        self.dispatch.wake();
        self.service.wake();
        self.commit.wake();
    }
}

fn load_queues(root: &Path, per_file: u64) -> Result<QueueMap> {
    let mut map = HashMap::new();
    std::fs::create_dir_all(root).at(root)?;
    for t in std::fs::read_dir(root).at(root)? {
        let t = t.at(root)?;
        let Some(topic) = t.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !t.path().is_dir() {
            continue;
        }
        for q in std::fs::read_dir(t.path()).at(t.path())? {
            let q = q.at(t.path())?;
            let Some(qid) = q.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let cq = ConsumeQueue::load(root, &topic, qid, per_file)?;
            map.entry(topic.clone())
                .or_insert_with(HashMap::new)
                .insert(qid, Arc::new(cq));
        }
    }
    Ok(map)
}

impl Inner {
    fn recover(&self, cp: Option<CheckpointData>) -> Result<()> {
        match (self.recovery, cp) {
            (RecoveryKind::Clean, Some(cp)) => {
                self.commit_log.recover_clean(cp.physic, 3)?;
                for q in self.all_queues() {
                    q.truncate_dirty(cp.physic)?;
                }
                self.dispatched.store(cp.physic, Ordering::Release);
            }
            _ => {
                let durable = cp.map(|c| c.physic).unwrap_or(0);
                let restart = cp
                    .map(|c| c.logics.min(c.physic))
                    .unwrap_or(0)
                    .min(self.commit_log.first_short_segment().unwrap_or(u64::MAX))
                    .max(self.commit_log.min_offset());
                self.index.write().reindex_from(restart);
                let end = self
                    .commit_log
                    .recover_scan(restart, durable, |phy, bytes| {
                        self.dispatch_entry(phy, bytes)
                    })?;
                for q in self.all_queues() {
                    q.truncate_dirty(end)?;
                }
                self.dispatched.store(end, Ordering::Release);
                // What survived a process crash may sit only in the page cache.
                self.commit_log.files().flush_from(restart)?;
                self.flush_indexes()?;
                self.checkpoint.lock().write(CheckpointData {
                    physic: end,
                    logics: end,
                    timestamp: message::now_millis(),
                })?;
            }
        }
        let min = self.commit_log.min_offset();
        let mut offsets = self.commit_log.queue_offsets();
        for q in self.all_queues() {
            q.clean(min)?;
            offsets.set(q.topic(), q.queue_id(), q.max_offset());
        }
        drop(offsets);
        let end = self.commit_log.max_offset();
        self.flush.publish(end);
        self.dispatch.publish(end);
        Ok(())
    }

    fn find_cq(&self, topic: &str, queue_id: i32) -> Option<Arc<ConsumeQueue>> {
        self.queues.read().get(topic)?.get(&queue_id).cloned()
    }

    fn all_queues(&self) -> Vec<Arc<ConsumeQueue>> {
        self.queues
            .read()
            .values()
            .flat_map(|qs| qs.values().cloned())
            .collect()
    }

    fn cq(&self, topic: &str, queue_id: i32) -> Result<Arc<ConsumeQueue>> {
        if let Some(q) = self.find_cq(topic, queue_id) {
            return Ok(q);
        }
        let q = Arc::new(ConsumeQueue::load(
            &self.cq_root,
            topic,
            queue_id,
            self.config.consume_queue_entries_per_file,
        )?);
        let mut queues = self.queues.write();
        let q = queues
            .entry(topic.to_string())
            .or_default()
            .entry(queue_id)
            .or_insert(q)
            .clone();
        Ok(q)
    }

    fn check_writable(&self) -> Result<()> {
        let limit = self.config.disk_hard_limit_ratio;
        if let Some(ratio) = self.quota_ratio() {
            if ratio >= limit {
                return Err(StoreError::DiskFull { ratio, limit });
            }
        }
        if self.disk_full.load(Ordering::Acquire) {
            return Err(StoreError::DiskFull {
                ratio: self.disk_ratio(),
                limit,
            });
        }
        Ok(())
    }

    fn quota_ratio(&self) -> Option<f64> {
        let quota = self.config.disk_quota_bytes?;
        let used = self.commit_log.max_offset() - self.commit_log.min_offset();
        Some(used as f64 / quota.max(1) as f64)
    }

    fn fs_ratio(&self) -> f64 {
        match rustix::fs::statvfs(&self.config.store_path) {
            // As `df` reports it: blocks reserved for root count as neither used nor free.
            Ok(s) if s.f_blocks > s.f_bfree || s.f_bavail > 0 => {
                let used = s.f_blocks.saturating_sub(s.f_bfree) as f64;
                used / (used + s.f_bavail as f64)
            }
            _ => 0.0,
        }
    }

    fn disk_ratio(&self) -> f64 {
        self.fs_ratio().max(self.quota_ratio().unwrap_or(0.0))
    }

    fn update_disk_state(&self) -> f64 {
        let ratio = self.disk_ratio();
        self.last_ratio.store(ratio.to_bits(), Ordering::Relaxed);
        let full = ratio >= self.config.disk_hard_limit_ratio;
        if full != self.disk_full.swap(full, Ordering::AcqRel) {
            if full {
                tracing::error!(ratio, "disk usage over the hard limit: refusing writes");
            } else {
                tracing::info!(ratio, "disk usage back under the hard limit");
            }
        }
        metrics::gauge!("ferrymq_store_disk_ratio").set(ratio);
        ratio
    }

    fn dispatch_entry(&self, phy: u64, bytes: &[u8]) -> Result<()> {
        let info = message::dispatch_info(bytes)?;
        if info.is_consumable() {
            let entry = CqEntry {
                physical_offset: phy as i64,
                size: info.size as i32,
                tag_hash: message::tag_hash(info.property(property::TAGS)),
            };
            self.cq(&info.topic, info.queue_id)?
                .put(info.queue_offset, entry)?;
            if let (Some(qs), Some(offs)) = (
                info.property(property::INNER_MULTI_DISPATCH),
                info.property(property::INNER_MULTI_QUEUE_OFFSET),
            ) {
                for (q, o) in qs.split(',').zip(offs.split(',')) {
                    if let Ok(o) = o.parse::<i64>() {
                        self.cq(q, 0)?.put(o, entry)?;
                    }
                }
            }
        }
        let mut keys: Vec<&str> = Vec::new();
        if let Some(u) = info.property(property::UNIQ_KEY) {
            keys.push(u);
        }
        if let Some(ks) = info.property(property::KEYS) {
            keys.extend(ks.split(' ').filter(|k| !k.is_empty()));
        }
        if !keys.is_empty() {
            self.index
                .write()
                .build(&info.topic, &keys, phy, info.store_timestamp)?;
        }
        Ok(())
    }

    fn dispatch_pending(&self) -> Result<()> {
        let _g = self.dispatch_lock.lock();
        let mut off = self.dispatched.load(Ordering::Acquire);
        let max = self.commit_log.committed_offset();
        off = off.max(self.commit_log.min_offset());
        while off < max {
            let Some(f) = self.commit_log.files().find(off) else {
                break;
            };
            let wrote = f.wrote();
            let mut pos = off - f.from();
            while pos + 8 <= wrote {
                let Some(head) = f.slice(pos, 8, wrote) else {
                    break;
                };
                let size = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
                let magic = i32::from_be_bytes([head[4], head[5], head[6], head[7]]);
                if magic == message::BLANK_MAGIC_CODE {
                    pos = f.size();
                    break;
                }
                let Some(entry) = (size > 0)
                    .then(|| f.slice(pos, size as u64, wrote))
                    .flatten()
                else {
                    return Err(StoreError::Corruption {
                        file: f.path().to_path_buf(),
                        offset: pos,
                        reason: format!("dispatcher found an entry of size {size}"),
                    });
                };
                self.dispatch_entry(f.from() + pos, entry)?;
                pos += size as u64;
            }
            if pos >= f.size() {
                off = f.from() + f.size();
            } else {
                off = f.from() + pos;
                break;
            }
        }
        self.dispatched.store(off, Ordering::Release);
        self.dispatch.publish(off);
        metrics::gauge!("ferrymq_store_dispatch_lag_bytes")
            .set(self.commit_log.max_offset().saturating_sub(off) as f64);
        Ok(())
    }

    fn flush_indexes(&self) -> Result<()> {
        for q in self.all_queues() {
            q.flush()?;
        }
        self.index.read().flush()
    }

    /// Flush ConsumeQueues and index, then record how far they and the CommitLog are durable.
    fn checkpoint(&self) -> Result<()> {
        let logics = self.dispatched.load(Ordering::Acquire);
        self.flush_indexes()?;
        let physic = self.commit_log.flushed_offset();
        self.checkpoint.lock().write(CheckpointData {
            physic,
            logics: logics.min(physic),
            timestamp: message::now_millis(),
        })
    }

    fn run_retention(&self, force_delete_hour: bool) -> Result<RetentionReport> {
        let mut report = RetentionReport::default();
        let mut ratio = self.disk_ratio();
        let now_hour = ((message::now_millis() / 3_600_000) % 24) as u32;
        let is_time = force_delete_hour || self.config.delete_hours().contains(&now_hour);
        let reserved = Duration::from_secs(self.config.file_reserved_time * 3600);
        let files = self.commit_log.files();
        while report.commit_log_files_deleted < 10 && files.len() > 1 {
            let Some(first) = files.first() else { break };
            let forced = ratio >= self.config.disk_max_used_space_ratio;
            let expired = is_time && first.age().is_some_and(|a| a >= reserved);
            let dispatched = self.dispatched.load(Ordering::Acquire);
            if !(forced || expired) || first.from() + first.size() > dispatched {
                break;
            }
            tracing::info!(file = %first.path().display(), forced, expired, "deleting CommitLog segment");
            files.remove_first()?;
            report.commit_log_files_deleted += 1;
            ratio = self.disk_ratio();
        }
        let min = self.commit_log.min_offset();
        for q in self.all_queues() {
            report.consume_queue_files_deleted += q.clean(min)?;
        }
        report.index_files_deleted = self.index.write().clean(min)?;
        report.disk_ratio = self.update_disk_state();
        report.disk_full = self.disk_full.load(Ordering::Acquire);
        Ok(report)
    }
}

/// Shortest time between two ASYNC_FLUSH msyncs (a rate limit on the
/// "≥ flushCommitLogLeastPages dirty" trigger).
const ASYNC_MIN_FLUSH_GAP: Duration = Duration::from_millis(10);

fn flush_loop(weak: Weak<Inner>, sig: Arc<OffsetSignal>, stop: Arc<AtomicBool>) {
    loop {
        let interval = match weak.upgrade() {
            Some(i) if i.config.flush_disk_type == FlushDiskType::SyncFlush => {
                Duration::from_millis(100)
            }
            Some(i) => Duration::from_millis(i.config.flush_interval_commit_log.max(1)),
            None => return,
        };
        sig.wait(interval);
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Some(inner) = weak.upgrade() else { return };
        sig.expire(inner.config.sync_flush_timeout());
        let before = inner.commit_log.flushed_offset();
        if inner.commit_log.max_offset() <= before {
            continue;
        }
        let started = Instant::now();
        match inner.commit_log.flush() {
            Ok(flushed) => {
                inner.dispatch.wake();
                inner.flushes.fetch_add(1, Ordering::Relaxed);
                metrics::histogram!("ferrymq_store_flush_latency_seconds")
                    .record(started.elapsed().as_secs_f64());
                sig.publish(flushed);
                if inner.config.flush_disk_type == FlushDiskType::AsyncFlush {
                    // ASYNC_FLUSH promises nothing per message: batch at least
                    // `ASYNC_MIN_FLUSH_GAP` of writes per sync, so the disk sees
                    // few large writes rather than many small ones.
                    let gap = ASYNC_MIN_FLUSH_GAP.saturating_sub(started.elapsed());
                    drop(inner);
                    if !gap.is_zero() {
                        std::thread::sleep(gap);
                    }
                }
            }
            Err(e) => {
                // Waiters time out with FLUSH_DISK_TIMEOUT; keep trying.
                tracing::error!(%e, "CommitLog flush failed");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// ASYNC_FLUSH: copy appends from the ring into the segments as they come,
/// then let the dispatcher index them. (SYNC_FLUSH commits in the flush
/// thread; this loop then only catches up on its one-second timer.)
fn commit_loop(weak: Weak<Inner>, sig: Arc<OffsetSignal>, stop: Arc<AtomicBool>) {
    loop {
        sig.wait(Duration::from_millis(1000));
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Some(inner) = weak.upgrade() else { return };
        let before = inner.commit_log.committed_offset();
        match inner.commit_log.commit() {
            Ok(after) if after > before => inner.dispatch.wake(),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(%e, "CommitLog commit failed");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn dispatch_loop(weak: Weak<Inner>, sig: Arc<OffsetSignal>, stop: Arc<AtomicBool>) {
    loop {
        sig.wait(Duration::from_millis(500));
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Some(inner) = weak.upgrade() else { return };
        if let Err(e) = inner.dispatch_pending() {
            tracing::error!(%e, "dispatch failed");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn service_loop(weak: Weak<Inner>, sig: Arc<OffsetSignal>, stop: Arc<AtomicBool>) {
    let mut last_clean = Instant::now();
    loop {
        let interval = match weak.upgrade() {
            Some(i) => Duration::from_millis(i.config.flush_interval_consume_queue.max(1)),
            None => return,
        };
        sig.wait(interval);
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Some(inner) = weak.upgrade() else { return };
        if let Err(e) = inner.checkpoint() {
            tracing::error!(%e, "checkpoint failed");
        }
        if last_clean.elapsed() >= Duration::from_millis(inner.config.clean_resource_interval) {
            last_clean = Instant::now();
            if let Err(e) = inner.run_retention(false) {
                tracing::error!(%e, "retention pass failed");
            }
        }
    }
}
