//! Sessions: what the broker keeps for a client id across connections
//! (subscriptions, queued and in-flight messages). A session is shared between
//! the publishers that enqueue into it and the one connection that drains it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hashbrown::{HashMap, HashSet};
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};

use crate::protocol::packet::{PublishProperties, QoS};

/// Client identifiers are shared everywhere; `Arc<str>` makes copies cheap.
pub type ClientId = Arc<str>;

/// A message after the broker accepted it: shared by every receiver.
#[derive(Debug)]
pub struct RoutedMessage {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// Retain flag as published.
    pub retain: bool,
    /// MQTT 5 properties to forward (alias and subscription ids removed).
    pub properties: PublishProperties,
    /// Publishing client, for No Local.
    pub publisher: Option<ClientId>,
    /// When the message expires (message expiry interval).
    pub expires_at: Option<Instant>,
}

impl RoutedMessage {
    /// A message accepted now: its expiry deadline starts from its expiry interval.
    pub fn new(
        topic: String,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        mut properties: PublishProperties,
        publisher: Option<ClientId>,
    ) -> Self {
        let expires_at = properties
            .message_expiry_interval
            .map(|s| Instant::now() + std::time::Duration::from_secs(s as u64));
        // Per-connection wire details never travel with the message.
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        Self {
            topic,
            payload,
            qos,
            retain,
            properties,
            publisher,
            expires_at,
        }
    }

    /// Seconds left before expiry; None = never expires, Some(0) = expired.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|t| {
            t.saturating_duration_since(now)
                .as_secs()
                .min(u32::MAX as u64) as u32
        })
    }

    /// Whether the message expired.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// Subscription options kept per (session, filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubOptions {
    /// Maximum QoS granted.
    pub qos: QoS,
    /// Don't receive own publishes.
    pub no_local: bool,
    /// Keep the publisher's retain flag.
    pub retain_as_published: bool,
    /// Retain handling (0, 1, 2).
    pub retain_handling: u8,
    /// Subscription identifier.
    pub subscription_id: Option<u32>,
}

/// One message on its way to one session.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message.
    pub msg: Arc<RoutedMessage>,
    /// QoS towards this session: min(published, granted).
    pub qos: QoS,
    /// Retain flag to send.
    pub retain: bool,
    /// Subscription identifiers of the matching subscriptions.
    pub subscription_ids: Vec<u32>,
    /// Set when the message came through a shared subscription `(group, filter)`:
    /// on member loss it is redistributed instead of waiting for this session.
    pub shared: Option<(Arc<str>, Arc<str>)>,
    /// Offset in the session's stored queue, for persistent sessions: the
    /// stored copy is the truth, this in-memory one a cache of it.
    pub lmq_offset: Option<i64>,
}

/// Where a persistent session is in its stored queue (`%LMQ%<client id>`).
/// Offsets below `next` were sent; `[next, examined)` were read from the store
/// and whatever of them is not queued in memory was not for this client (No
/// Local, unsubscribed since); `end` is one past the last offset known to exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredQueue {
    /// Next offset to send.
    pub next: i64,
    /// Offsets below this were examined by a store read.
    pub examined: i64,
    /// One past the highest offset known to exist.
    pub end: i64,
    /// Offsets sent and not yet acknowledged.
    pub unacked: std::collections::BTreeSet<i64>,
    /// Last offset reported as consumed.
    pub committed: i64,
}

impl StoredQueue {
    /// A queue position starting at `committed`, with entries up to `end`.
    pub fn new(committed: i64, end: i64) -> Self {
        Self {
            next: committed,
            examined: committed,
            end: end.max(committed),
            unacked: Default::default(),
            committed,
        }
    }

    /// Everything below this offset was received by the client.
    pub fn consumed_to(&self) -> i64 {
        self.unacked.first().copied().unwrap_or(self.next)
    }
}

/// Where an outgoing QoS 1/2 message is in its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    AwaitPubAck,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    AwaitPubRec,
    /// PUBREL sent, waiting for PUBCOMP.
    AwaitPubComp,
}

/// An outgoing message waiting for its acknowledgement.
#[derive(Debug, Clone)]
pub struct Inflight {
    /// The delivery.
    pub delivery: Delivery,
    /// Flow state.
    pub state: OutState,
}

/// Mutable session state, behind the session's lock.
#[derive(Debug, Default)]
pub struct SessionState {
    /// filter → options (shared ones under their full `$share/...` filter).
    pub subscriptions: HashMap<String, SubOptions>,
    /// Messages waiting to be sent.
    pub queue: VecDeque<Delivery>,
    /// Outgoing QoS 1/2 messages by packet id.
    pub inflight: BTreeMap<u16, Inflight>,
    /// Incoming QoS 2 packet ids between PUBREC and PUBREL.
    pub incoming_qos2: HashSet<u16>,
    /// Next packet id to try.
    pub next_pkid: u16,
    /// Id of the connection attached to this session, if any.
    pub connection: Option<u64>,
    /// Tells the attached connection to close (takeover, admin).
    pub kick: Option<oneshot::Sender<u8>>,
    /// Session expiry interval in seconds (u32::MAX = never).
    pub expiry_secs: u32,
    /// Bumped on every attach, so stale expiry timers and wills can tell.
    pub generation: u64,
    /// Set when the session is persisted by the L role.
    pub stored: Option<StoredQueue>,
}

impl SessionState {
    /// Take out the QoS ≥ 1 deliveries that came through shared subscriptions
    /// and are not yet received by this client (queued, or PUBLISH unanswered),
    /// so another member of their group can have them.
    pub fn take_shared(&mut self) -> Vec<Delivery> {
        let mut moved = Vec::new();
        let queue = std::mem::take(&mut self.queue);
        for d in queue {
            if d.shared.is_some() && d.qos != QoS::AtMostOnce {
                moved.push(d);
            } else {
                self.queue.push_back(d);
            }
        }
        let ids: Vec<u16> = self
            .inflight
            .iter()
            .filter(|(_, i)| i.delivery.shared.is_some() && i.state != OutState::AwaitPubComp)
            .map(|(k, _)| *k)
            .collect();
        for id in ids {
            if let Some(i) = self.inflight.remove(&id) {
                moved.push(i.delivery);
            }
        }
        moved
    }

    /// Queue a delivery of stored-queue offset `off` in offset order
    /// (publishers race between append and enqueue; store reads fill gaps).
    pub fn insert_stored(&mut self, d: Delivery, off: i64) {
        let at = self
            .queue
            .iter()
            .rposition(|e| e.lmq_offset.is_none_or(|o| o < off))
            .map_or(0, |i| i + 1);
        self.queue.insert(at, d);
    }

    /// A free packet id (1..=65535) not in flight.
    pub fn alloc_pkid(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            self.next_pkid = self.next_pkid.wrapping_add(1);
            if self.next_pkid == 0 {
                self.next_pkid = 1;
            }
            if !self.inflight.contains_key(&self.next_pkid) {
                return Some(self.next_pkid);
            }
        }
        None
    }
}

/// A session.
#[derive(Debug)]
pub struct Session {
    /// Client identifier.
    pub client_id: ClientId,
    /// State.
    pub state: Mutex<SessionState>,
    /// Woken when messages are queued.
    pub notify: Notify,
    /// Messages dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Whether the L role persists this session (read on every publish that
    /// matches it, so it is an atomic instead of a field behind the lock).
    pub persistent: std::sync::atomic::AtomicBool,
}

impl Session {
    /// A new, empty session.
    pub fn new(client_id: ClientId, expiry_secs: u32) -> Self {
        Self {
            client_id,
            state: Mutex::new(SessionState {
                expiry_secs,
                ..SessionState::default()
            }),
            notify: Notify::new(),
            dropped: AtomicU64::new(0),
            persistent: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Queue a delivery. Returns false (and counts a drop) when the session's
    /// queue is full or the message is QoS 0 for an offline session that does
    /// not queue QoS 0: one slow client costs only its own bounded queue.
    pub fn enqueue(&self, d: Delivery, max_queued: usize, queue_qos0_offline: bool) -> bool {
        let mut st = self.state.lock();
        if let (Some(off), Some(q)) = (d.lmq_offset, st.stored.as_mut()) {
            q.end = q.end.max(off + 1);
            // Full: the stored copy is read back when the queue has room.
            if st.queue.len() < max_queued {
                st.insert_stored(d, off);
            }
            drop(st);
            self.notify.notify_one();
            return true;
        }
        if st.connection.is_none() && d.qos == QoS::AtMostOnce && !queue_qos0_offline {
            return false;
        }
        if st.queue.len() >= max_queued {
            drop(st);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("ferrymq_mqtt_messages_dropped_total", "reason" => "queue_full")
                .increment(1);
            return false;
        }
        st.queue.push_back(d);
        drop(st);
        self.notify.notify_one();
        true
    }
}
