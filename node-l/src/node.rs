//! [`LNode`]: one store plus the tables around it, serving the A → L boundary
//! in-process.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferrymq_shared::boundary::{
    AppendRequest, Appended, BoxFuture, Durable, LogError, MessageLog, Pressure, Pulled,
    PulledMessage, RetainedMessage, SessionRecord,
};
use ferrymq_shared::queue_for;
use parking_lot::Mutex;
use shared_store::message::{self, property};
use shared_store::{GetStatus, Message, MessageStore, PutStatus, StoreError};

use crate::config::LConfig;
use crate::offsets::OffsetTable;
use crate::retained::RetainedTable;
use crate::sessions::{SessionEvent, SessionTable};
use crate::snapshot::FileError;
use crate::topic_config::TopicTable;
use crate::topic_model::{
    from_message, rocketmq_target, session_queue, to_store_message, RETAINED_QUEUE, SESSION_TOPIC,
};

/// Why the L role could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A table file could not be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored table entry is damaged.
    #[error("replaying {what}: {detail}")]
    Replay {
        /// Which table.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// How long a session pull waits for entries that are appended but not yet
/// indexed by the dispatcher (normally well under a millisecond).
const PULL_DISPATCH_WAIT: Duration = Duration::from_secs(2);

/// The L role in one process. Cheap to clone.
#[derive(Clone)]
pub struct LNode {
    inner: Arc<Inner>,
}

struct Inner {
    config: LConfig,
    store: MessageStore,
    topics: TopicTable,
    offsets: OffsetTable,
    sessions: SessionTable,
    retained: RetainedTable,
    /// Retained publishes and session events are applied to their tables in
    /// queue order; holding this across append + apply keeps them in order.
    table_order: Mutex<()>,
    pressure: AtomicU8,
    stop: AtomicBool,
    background: Mutex<Option<JoinHandle<()>>>,
}

fn store_error(e: StoreError) -> LogError {
    match e {
        StoreError::DiskFull { .. } => LogError::DiskFull(e.to_string()),
        StoreError::MessageIllegal(m) => LogError::TooLarge(m),
        StoreError::ShutDown => LogError::Unavailable(e.to_string()),
        e => LogError::Other(e.to_string()),
    }
}

impl LNode {
    /// Start the L role on an opened store: load the tables (files under
    /// `<storePath>/config`) and replay what came after their snapshots.
    pub fn open(config: LConfig, store: MessageStore) -> Result<Self, OpenError> {
        let dir: PathBuf = store.config().store_path.join("config");
        std::fs::create_dir_all(&dir).map_err(|source| FileError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let topics = TopicTable::open(dir.join("topics.json"))?;
        let offsets = OffsetTable::open(dir.join("consumerOffset.json"))?;
        let sessions = SessionTable::open(dir.join("sessions.json"))?;
        let retained = RetainedTable::open(dir.join("retained.json"))?;
        // Everything recovered must be in the queues before the tables replay them.
        store.dispatch_now()?;
        let inner = Arc::new(Inner {
            config,
            store,
            topics,
            offsets,
            sessions,
            retained,
            table_order: Mutex::new(()),
            pressure: AtomicU8::new(0),
            stop: AtomicBool::new(false),
            background: Mutex::new(None),
        });
        // A snapshot may count events that a crash then took back (appended,
        // never flushed): replay from no further than what the log holds.
        inner
            .sessions
            .clamp_applied(inner.store.assigned_offset_in_queue(SESSION_TOPIC, 0));
        inner
            .retained
            .clamp_applied(inner.store.assigned_offset_in_queue(RETAINED_QUEUE, 0));
        let started = Instant::now();
        let (n_ev, n_ret) = inner.replay()?;
        tracing::info!(
            session_events = n_ev,
            retained_entries = n_ret,
            sessions = inner.sessions.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "L role tables replayed"
        );
        let weak = Arc::downgrade(&inner);
        let handle = std::thread::Builder::new()
            .name("ferrymq-l-service".into())
            .spawn(move || background(weak))
            .map_err(|source| FileError::Io {
                path: "ferrymq-l-service thread".into(),
                source,
            })?;
        *inner.background.lock() = Some(handle);
        Ok(Self { inner })
    }

    /// The role's settings.
    pub fn config(&self) -> &LConfig {
        &self.inner.config
    }

    /// The store.
    pub fn store(&self) -> &MessageStore {
        &self.inner.store
    }

    /// The topic table.
    pub fn topics(&self) -> &TopicTable {
        &self.inner.topics
    }

    /// Consumer and session offsets.
    pub fn offsets(&self) -> &OffsetTable {
        &self.inner.offsets
    }

    /// Write offsets and table snapshots and stop the background thread. The
    /// store itself is shut down by its owner afterwards.
    pub fn shutdown(&self) -> Result<(), FileError> {
        self.inner.stop.store(true, Ordering::Release);
        if let Some(h) = self.inner.background.lock().take() {
            let _ = h.join();
        }
        self.inner.persist()
    }

    fn submit(&self, msg: Message) -> Result<shared_store::Submitted, LogError> {
        self.inner.store.submit_message(msg).map_err(store_error)
    }

    fn save_event(&self, ev: SessionEvent) {
        let body = match serde_json::to_vec(&ev) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(%e, "session event not encodable");
                return;
            }
        };
        let _order = self.inner.table_order.lock();
        match self.submit(Message::new(SESSION_TOPIC, 0, body)) {
            Ok(s) => self.inner.sessions.apply(s.append.queue_offset, ev),
            // The in-memory session still works; only its survival of a crash is lost.
            Err(e) => tracing::error!(%e, "session change not persisted"),
        }
    }
}

impl Inner {
    fn replay(&self) -> Result<(usize, usize), OpenError> {
        let mut events = 0;
        let from = self.sessions.applied();
        self.scan(
            SESSION_TOPIC,
            from,
            "session table",
            |off, stored| match serde_json::from_slice::<SessionEvent>(&stored.message.body) {
                Ok(ev) => {
                    self.sessions.apply(off, ev);
                    events += 1;
                }
                Err(e) => tracing::error!(offset = off, %e, "session event unreadable; skipped"),
            },
        )?;
        let mut retained = 0;
        let from = self.retained.applied();
        self.scan(RETAINED_QUEUE, from, "retained table", |off, stored| {
            self.retained.apply(
                off,
                RetainedMessage {
                    stored_at_ms: stored.store_timestamp,
                    message: from_message(&stored.message),
                },
            );
            retained += 1;
        })?;
        Ok((events, retained))
    }

    /// Visit every message of (topic, 0) from `from` to the end.
    fn scan(
        &self,
        topic: &str,
        mut from: i64,
        what: &'static str,
        mut visit: impl FnMut(i64, message::StoredMessage),
    ) -> Result<(), OpenError> {
        loop {
            let r = self.store.get_message(topic, 0, from, 256, None);
            match r.status {
                GetStatus::Found => {
                    for m in r.messages {
                        match message::decode(&m.data) {
                            Ok(s) => visit(m.queue_offset, s),
                            Err(e) => {
                                return Err(OpenError::Replay {
                                    what,
                                    detail: format!("offset {}: {e}", m.queue_offset),
                                })
                            }
                        }
                    }
                }
                GetStatus::Corrupted => {
                    return Err(OpenError::Replay {
                        what,
                        detail: format!(
                            "entry at queue offset {} is corrupted",
                            r.next_begin_offset
                        ),
                    })
                }
                GetStatus::OffsetTooSmall
                | GetStatus::MessageWasRemoving
                | GetStatus::NoMatchedMessage => {
                    tracing::warn!(
                        what,
                        from,
                        next = r.next_begin_offset,
                        "entries below the snapshot were deleted by retention"
                    );
                }
                _ => return Ok(()),
            }
            if r.next_begin_offset <= from {
                return Ok(());
            }
            from = r.next_begin_offset;
        }
    }

    fn persist(&self) -> Result<(), FileError> {
        self.offsets.persist()?;
        self.sessions.snapshot()?;
        self.retained.snapshot()
    }

    fn compute_pressure(&self) -> Option<Pressure> {
        let soft = self.store.config().disk_max_used_space_ratio;
        if self.store.disk_ratio() >= soft {
            return Some(Pressure::Disk);
        }
        let (unflushed, oldest_wait) = self.store.flush_lag();
        if oldest_wait >= Duration::from_millis(self.config.flush_busy_wait_millis)
            || unflushed >= self.config.flush_busy_unflushed_bytes
        {
            return Some(Pressure::Flush);
        }
        None
    }
}

/// The L role's service thread: pressure every 20 ms, offsets and snapshots
/// on their intervals.
fn background(inner: std::sync::Weak<Inner>) {
    let tick = Duration::from_millis(20);
    let mut last_offsets = Instant::now();
    let mut last_snapshot = Instant::now();
    loop {
        std::thread::sleep(tick);
        let Some(inner) = inner.upgrade() else { return };
        if inner.stop.load(Ordering::Acquire) {
            return;
        }
        let p = match inner.compute_pressure() {
            None => 0,
            Some(Pressure::Disk) => 1,
            Some(Pressure::Flush) => 2,
        };
        inner.pressure.store(p, Ordering::Relaxed);
        if last_offsets.elapsed()
            >= Duration::from_millis(inner.config.flush_consumer_offset_interval)
        {
            last_offsets = Instant::now();
            if let Err(e) = inner.offsets.persist() {
                tracing::error!(%e, "writing offsets");
            }
        }
        if last_snapshot.elapsed() >= Duration::from_millis(inner.config.snapshot_interval) {
            last_snapshot = Instant::now();
            if let Err(e) = inner.sessions.snapshot() {
                tracing::error!(%e, "writing session snapshot");
            }
            if let Err(e) = inner.retained.snapshot() {
                tracing::error!(%e, "writing retained snapshot");
            }
        }
    }
}

impl MessageLog for LNode {
    fn append(&self, req: AppendRequest) -> Result<(Appended, Durable), LogError> {
        let inner = &self.inner;
        let (rtopic, tag) = rocketmq_target(&req.message.topic)?;
        let (queues, writable) = if inner.config.auto_create_topic_enable {
            inner
                .topics
                .get_or_create(
                    &rtopic,
                    inner.config.default_topic_queue_nums.max(1),
                    inner.config.max_topic_count,
                )
                .map_err(|e| LogError::Other(e.to_string()))?
                .ok_or_else(|| LogError::NotWritable(format!("{rtopic}: topic limit reached")))?
        } else {
            inner.topics.write_queues(&rtopic).ok_or_else(|| {
                if inner.config.unknown_topic_reason_code == 0x87 {
                    LogError::NotWritable(rtopic.clone())
                } else {
                    LogError::TopicNotFound(rtopic.clone())
                }
            })?
        };
        if !writable {
            return Err(LogError::NotWritable(rtopic));
        }
        let queue = queue_for(&req.message.topic, queues.max(1)) as i32;
        let mut msg = to_store_message(&req.message, rtopic, tag, queue)?;
        let mut lmqs: Vec<String> = req.sessions.iter().map(|c| session_queue(c)).collect();
        if req.message.retain {
            lmqs.push(RETAINED_QUEUE.to_owned());
        }
        if !lmqs.is_empty() {
            msg.properties
                .insert(property::INNER_MULTI_DISPATCH, lmqs.join(","));
        }
        let submitted = if req.message.retain {
            let _order = inner.table_order.lock();
            let s = self.submit(msg)?;
            if let Some((_, off)) = s.append.lmq_offsets.last() {
                inner.retained.apply(
                    *off,
                    RetainedMessage {
                        stored_at_ms: s.append.store_timestamp,
                        message: req.message,
                    },
                );
            }
            s
        } else {
            self.submit(msg)?
        };
        let appended = Appended {
            session_offsets: submitted
                .append
                .lmq_offsets
                .iter()
                .take(req.sessions.len())
                .map(|(_, o)| *o)
                .collect(),
            msg_id: submitted.append.offset_msg_id.clone(),
        };
        let durable: Durable = Box::pin(async move {
            match submitted.durable().await.status {
                PutStatus::PutOk => Ok(()),
                PutStatus::FlushDiskTimeout => Err(LogError::FlushTimeout),
            }
        });
        Ok((appended, durable))
    }

    fn pull_session(
        &self,
        client_id: &str,
        offset: i64,
        until: i64,
        max: usize,
    ) -> BoxFuture<Result<Pulled, LogError>> {
        let store = self.inner.store.clone();
        let queue = session_queue(client_id);
        Box::pin(async move {
            let mut arrivals = store.subscribe_arrivals();
            let deadline = tokio::time::Instant::now() + PULL_DISPATCH_WAIT;
            loop {
                let r = store.get_message(&queue, 0, offset, max.max(1), None);
                match r.status {
                    GetStatus::Found => {
                        let mut messages = Vec::with_capacity(r.messages.len());
                        for m in &r.messages {
                            match message::decode(&m.data) {
                                Ok(s) => messages.push(PulledMessage {
                                    offset: m.queue_offset,
                                    stored_at_ms: s.store_timestamp,
                                    message: from_message(&s.message),
                                }),
                                Err(e) => {
                                    return Err(LogError::Other(format!(
                                        "session queue {queue} offset {}: {e}",
                                        m.queue_offset
                                    )))
                                }
                            }
                        }
                        return Ok(Pulled {
                            messages,
                            next_offset: r.next_begin_offset,
                        });
                    }
                    GetStatus::Corrupted => {
                        return Err(LogError::Other(format!(
                            "session queue {queue} offset {} is corrupted",
                            r.next_begin_offset
                        )))
                    }
                    GetStatus::OffsetTooSmall
                    | GetStatus::MessageWasRemoving
                    | GetStatus::NoMatchedMessage
                    | GetStatus::OffsetFoundNull
                        if r.next_begin_offset > offset =>
                    {
                        // Deleted by retention: the session moves past the gap.
                        return Ok(Pulled {
                            messages: Vec::new(),
                            next_offset: r.next_begin_offset,
                        });
                    }
                    _ if offset < until && tokio::time::Instant::now() < deadline => {
                        // Appended but not yet indexed: wait for the dispatcher.
                        let _ = tokio::time::timeout_at(deadline, arrivals.changed()).await;
                    }
                    _ => {
                        return Ok(Pulled {
                            messages: Vec::new(),
                            next_offset: offset.max(r.next_begin_offset.min(until.max(offset))),
                        })
                    }
                }
            }
        })
    }

    fn session_offsets(&self, client_id: &str) -> (i64, i64) {
        let queue = session_queue(client_id);
        let next = self.inner.store.assigned_offset_in_queue(&queue, 0);
        // No offset on record (a crash before the first offset write): the
        // whole queue is unconsumed. Duplicates are allowed, losses are not.
        let committed = self
            .inner
            .offsets
            .session(client_id)
            .unwrap_or_else(|| self.inner.store.min_offset_in_queue(&queue, 0));
        (committed.min(next), next)
    }

    fn commit_session_offset(&self, client_id: &str, offset: i64) {
        self.inner.offsets.commit_session(client_id, offset);
    }

    fn save_session(&self, rec: SessionRecord) {
        if self.inner.offsets.session(&rec.client_id).is_none() {
            // A new session starts at the end of its queue, never in an old one's backlog.
            let next = self
                .inner
                .store
                .assigned_offset_in_queue(&session_queue(&rec.client_id), 0);
            self.inner.offsets.commit_session(&rec.client_id, next);
        }
        self.save_event(SessionEvent::Save { session: rec });
    }

    fn remove_session(&self, client_id: &str) {
        // The queue stays (its files go with retention); a later session of
        // the same id gets a fresh start offset (the queue's end) when saved.
        self.inner.offsets.remove_session(client_id);
        self.save_event(SessionEvent::Remove {
            client_id: client_id.to_owned(),
        });
    }

    fn sessions(&self) -> Vec<SessionRecord> {
        self.inner.sessions.all()
    }

    fn retained(&self) -> Vec<RetainedMessage> {
        self.inner.retained.all()
    }

    fn pressure(&self) -> Option<(Pressure, Duration)> {
        let d = Duration::from_millis(self.inner.config.throttle_millis);
        match self.inner.pressure.load(Ordering::Relaxed) {
            1 => Some((Pressure::Disk, d)),
            2 => Some((Pressure::Flush, d)),
            _ => None,
        }
    }
}
