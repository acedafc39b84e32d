//! The broker's shared state: sessions, the subscription trie, retained
//! messages and counters. Publishers route on their own task (a read lock on
//! the trie, then a short lock per receiving session), so routing runs on every
//! core instead of behind one router task.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ferrymq_shared::{parse_shared, SubscriptionTrie};
use hashbrown::HashMap;
use parking_lot::{Mutex, RwLock};

use ferrymq_shared::boundary::{
    AppendRequest, Durable, LogError, MessageLog, MqttMessage, MqttProps, SessionRecord,
    SubscriptionRecord,
};

use crate::config::NodeAConfig;
use crate::protocol::packet::{PublishProperties, QoS};
use crate::session::{ClientId, Delivery, RoutedMessage, Session, StoredQueue, SubOptions};

/// Who a trie entry delivers to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubKey {
    /// One client's own subscription.
    Client(ClientId),
    /// A shared subscription group.
    Share(Arc<str>),
}

/// What a trie entry holds.
#[derive(Debug)]
pub enum SubEntry {
    /// A client's subscription options.
    Client(SubOptions),
    /// The members of a shared group, served round-robin.
    Share(SharedGroup),
}

/// Members of one `$share/{group}/{filter}`.
#[derive(Debug, Default)]
pub struct SharedGroup {
    /// (client, options) in join order.
    pub members: Vec<(ClientId, SubOptions)>,
    /// Round-robin cursor.
    pub next: AtomicUsize,
}

/// Counters behind `$SYS/` and the metrics endpoint.
#[derive(Debug, Default)]
pub struct Stats {
    /// PUBLISH packets received.
    pub messages_received: AtomicU64,
    /// PUBLISH packets sent.
    pub messages_sent: AtomicU64,
    /// Payload bytes received.
    pub bytes_received: AtomicU64,
    /// Payload bytes sent.
    pub bytes_sent: AtomicU64,
    /// Connected clients.
    pub clients_connected: AtomicU64,
    /// Messages dropped (queue full, too large for the client, expired).
    pub messages_dropped: AtomicU64,
    /// Publishes refused by ACL.
    pub publishes_denied: AtomicU64,
}

/// Metric handles used per message, looked up once (a lookup by name on every
/// message showed in profiles). Created after the recorder is installed.
pub struct MqttMetrics {
    /// Messages received, by QoS.
    pub received: [metrics::Counter; 3],
    /// Messages sent, by QoS.
    pub sent: [metrics::Counter; 3],
    /// Payload bytes received.
    pub bytes_received: metrics::Counter,
    /// Payload bytes sent.
    pub bytes_sent: metrics::Counter,
}

impl MqttMetrics {
    fn new() -> Self {
        let by_qos = |name: &'static str| {
            [
                metrics::counter!(name, "qos" => "0"),
                metrics::counter!(name, "qos" => "1"),
                metrics::counter!(name, "qos" => "2"),
            ]
        };
        Self {
            received: by_qos("ferrymq_mqtt_messages_received_total"),
            sent: by_qos("ferrymq_mqtt_messages_sent_total"),
            bytes_received: metrics::counter!("ferrymq_mqtt_bytes_received_total"),
            bytes_sent: metrics::counter!("ferrymq_mqtt_bytes_sent_total"),
        }
    }
}

/// Shared broker state.
pub struct Broker {
    /// Per-message metric handles.
    pub metrics: MqttMetrics,
    /// Configuration.
    pub config: NodeAConfig,
    /// Users, when a password file is configured.
    pub passwords: Option<crate::auth::PasswordFile>,
    /// Access rules.
    pub acl: crate::acl::Acl,
    /// The L role, when messages are persisted.
    pub log: Option<Arc<dyn MessageLog>>,
    sessions: RwLock<HashMap<ClientId, Arc<Session>>>,
    /// Serialises session attach/detach so takeovers are atomic.
    pub(crate) session_lock: Mutex<()>,
    /// Serialises retained publishes between the store and the retained table.
    retain_order: Mutex<()>,
    subs: RwLock<SubscriptionTrie<SubKey, SubEntry>>,
    retained: RwLock<HashMap<String, Arc<RoutedMessage>>>,
    /// Counters.
    pub stats: Stats,
    /// Notified whenever a connected client's connection ends (shutdown waits on it).
    pub connection_closed: tokio::sync::Notify,
    next_conn: AtomicU64,
    /// When the broker started.
    pub started: Instant,
}

impl Broker {
    /// Broker state with the configured password file and ACL loaded.
    pub fn load(config: NodeAConfig) -> std::io::Result<Self> {
        let passwords = match &config.password_file {
            Some(p) => Some(crate::auth::PasswordFile::load(p).map_err(std::io::Error::other)?),
            None => None,
        };
        let acl = match &config.acl_file {
            Some(p) => {
                crate::acl::Acl::load(p, config.acl_default_allow).map_err(std::io::Error::other)?
            }
            None => crate::acl::Acl::allow_all(),
        };
        let mut b = Self::new(config);
        b.passwords = passwords;
        b.acl = acl;
        Ok(b)
    }

    /// Empty broker state, no authentication, everything allowed.
    pub fn new(config: NodeAConfig) -> Self {
        Self {
            metrics: MqttMetrics::new(),
            config,
            passwords: None,
            acl: crate::acl::Acl::allow_all(),
            log: None,
            sessions: RwLock::new(HashMap::new()),
            session_lock: Mutex::new(()),
            retain_order: Mutex::new(()),
            subs: RwLock::new(SubscriptionTrie::new()),
            retained: RwLock::new(HashMap::new()),
            stats: Stats::default(),
            connection_closed: tokio::sync::Notify::new(),
            next_conn: AtomicU64::new(1),
            started: Instant::now(),
        }
    }

    /// A fresh connection id.
    pub fn next_connection_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// The session of `client_id`, if any.
    pub fn session(&self, client_id: &str) -> Option<Arc<Session>> {
        self.sessions.read().get(client_id).cloned()
    }

    /// Register a session (replacing any previous one of the same id).
    pub fn insert_session(&self, s: Arc<Session>) {
        self.sessions.write().insert(s.client_id.clone(), s);
        metrics::gauge!("ferrymq_mqtt_sessions").set(self.sessions.read().len() as f64);
    }

    /// Drop a session and all its subscriptions, if it is still `s`.
    pub fn remove_session(&self, s: &Arc<Session>) {
        let removed = {
            let mut sessions = self.sessions.write();
            match sessions.get(&s.client_id) {
                Some(cur) if Arc::ptr_eq(cur, s) => sessions.remove(&s.client_id).is_some(),
                _ => false,
            }
        };
        if removed {
            if s.persistent.swap(false, Ordering::AcqRel) {
                if let Some(log) = &self.log {
                    log.remove_session(&s.client_id);
                }
            }
            let filters: Vec<String> = s.state.lock().subscriptions.keys().cloned().collect();
            for f in filters {
                self.unsubscribe(&s.client_id, &f);
            }
            // Whatever was queued through shared subscriptions goes to other members.
            let pending = s.state.lock().take_shared();
            self.redistribute(&s.client_id, pending);
        }
        metrics::gauge!("ferrymq_mqtt_sessions").set(self.sessions.read().len() as f64);
    }

    /// With an L role, make `s` (a session with a non-zero expiry) persistent:
    /// its subscriptions and expiry are saved, and QoS ≥ 1 messages for it
    /// also go into its stored queue.
    pub fn persist_session(&self, s: &Session) {
        let Some(log) = &self.log else { return };
        // Record (which fixes the queue's start) and stored-queue position
        // first, the flag last: a publish that sees the flag lands at or after
        // the start, so its copy is never mistaken for one already sent.
        log.save_session(session_record(s, true));
        {
            let mut st = s.state.lock();
            if st.stored.is_none() {
                let (committed, end) = log.session_offsets(&s.client_id);
                st.stored = Some(StoredQueue::new(committed, end));
            }
        }
        s.persistent.store(true, Ordering::Release);
    }

    /// Save a persistent session's subscriptions and expiry (`online` false
    /// records the disconnect time its expiry counts from).
    pub fn save_session(&self, s: &Session, online: bool) {
        let Some(log) = &self.log else { return };
        if !s.persistent.load(Ordering::Acquire) {
            return;
        }
        let rec = session_record(s, online);
        log.save_session(rec);
    }

    /// Report how far a persistent session's client consumed its stored queue.
    pub fn commit_session(&self, s: &Session) {
        let Some(log) = &self.log else { return };
        let mut st = s.state.lock();
        if let Some(q) = st.stored.as_mut() {
            let to = q.consumed_to();
            if to != q.committed {
                tracing::trace!(client = %s.client_id, from = q.committed, to, next = q.next, unacked = q.unacked.len(), "session queue consumed");
                q.committed = to;
                drop(st);
                log.commit_session_offset(&s.client_id, to);
            }
        }
    }

    /// Bring back what the L role kept: persistent sessions (offline, their
    /// expiry counting from their disconnect) and retained messages. Call
    /// once, before accepting connections.
    pub fn restore(self: &Arc<Self>) {
        let Some(log) = self.log.clone() else { return };
        let now_ms = shared_now_ms();
        for r in log.retained() {
            let m = Arc::new(from_mqtt_message(r.message, r.stored_at_ms));
            if !m.is_expired(Instant::now()) {
                self.retain(&m);
            }
        }
        for rec in log.sessions() {
            let client: ClientId = Arc::from(rec.client_id.as_str());
            let session = Arc::new(Session::new(client.clone(), rec.expiry_secs));
            session.persistent.store(true, Ordering::Release);
            let (committed, end) = log.session_offsets(&rec.client_id);
            tracing::debug!(client = %client, committed, end, "restoring persistent session");
            {
                let mut st = session.state.lock();
                st.stored = Some(StoredQueue::new(committed, end));
                for sub in &rec.subscriptions {
                    st.subscriptions.insert(
                        sub.filter.clone(),
                        SubOptions {
                            qos: QoS::from_u8(sub.qos).unwrap_or_default(),
                            no_local: sub.no_local,
                            retain_as_published: sub.retain_as_published,
                            retain_handling: sub.retain_handling,
                            subscription_id: sub.subscription_id,
                        },
                    );
                }
            }
            for sub in &rec.subscriptions {
                let o = session.state.lock().subscriptions.get(&sub.filter).copied();
                if let Some(o) = o {
                    self.subscribe(&client, &sub.filter, o);
                }
            }
            self.insert_session(session.clone());
            // A session that was online at the crash counts as gone from now.
            let gone_ms = (now_ms - rec.disconnected_at_ms.unwrap_or(now_ms)).max(0) as u64;
            if rec.disconnected_at_ms.is_none() {
                self.save_session(&session, false);
            }
            if rec.expiry_secs != u32::MAX {
                let left = (rec.expiry_secs as u64 * 1000).saturating_sub(gone_ms);
                self.expire_later(session, 0, std::time::Duration::from_millis(left));
            }
        }
        tracing::info!(
            sessions = self.session_count(),
            retained = self.retained_count(),
            "restored persistent sessions and retained messages"
        );
    }

    /// Remove `session` after `after`, unless a connection attached to it
    /// (its generation moved on) in the meantime.
    pub fn expire_later(
        self: &Arc<Self>,
        session: Arc<Session>,
        generation: u64,
        after: std::time::Duration,
    ) {
        let broker = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let expired = {
                let st = session.state.lock();
                st.generation == generation && st.connection.is_none()
            };
            if expired {
                broker.remove_session(&session);
            }
        });
    }

    /// Number of sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.read().len()
    }

    /// Number of (filter, subscriber) pairs.
    pub fn subscription_count(&self) -> usize {
        self.subs.read().len()
    }

    /// Number of retained messages.
    pub fn retained_count(&self) -> usize {
        self.retained.read().len()
    }

    /// Add or replace a subscription; returns whether one existed for this filter.
    pub fn subscribe(&self, client: &ClientId, filter: &str, opts: SubOptions) -> bool {
        let mut subs = self.subs.write();
        let existed = if let Some(share) = parse_shared(filter) {
            let key = SubKey::Share(Arc::from(share.group));
            let mut group = match subs.remove(share.filter, &key) {
                Some(SubEntry::Share(g)) => g,
                _ => SharedGroup::default(),
            };
            let existed = match group.members.iter_mut().find(|(c, _)| c == client) {
                Some(m) => {
                    m.1 = opts;
                    true
                }
                None => {
                    group.members.push((client.clone(), opts));
                    false
                }
            };
            subs.insert(share.filter, key, SubEntry::Share(group));
            existed
        } else {
            subs.insert(
                filter,
                SubKey::Client(client.clone()),
                SubEntry::Client(opts),
            )
            .is_some()
        };
        metrics::gauge!("ferrymq_mqtt_subscriptions").set(subs.len() as f64);
        existed
    }

    /// Remove a subscription; returns whether it existed.
    pub fn unsubscribe(&self, client: &ClientId, filter: &str) -> bool {
        let mut subs = self.subs.write();
        let existed = if let Some(share) = parse_shared(filter) {
            let key = SubKey::Share(Arc::from(share.group));
            match subs.remove(share.filter, &key) {
                Some(SubEntry::Share(mut g)) => {
                    let before = g.members.len();
                    g.members.retain(|(c, _)| c != client);
                    let existed = g.members.len() != before;
                    if !g.members.is_empty() {
                        subs.insert(share.filter, key, SubEntry::Share(g));
                    }
                    existed
                }
                Some(other) => {
                    subs.insert(share.filter, key, other);
                    false
                }
                None => false,
            }
        } else {
            subs.remove(filter, &SubKey::Client(client.clone()))
                .is_some()
        };
        metrics::gauge!("ferrymq_mqtt_subscriptions").set(subs.len() as f64);
        existed
    }

    /// Accept a message: store it through the L role (when one is attached),
    /// keep it as the topic's retained message if flagged, then route it.
    /// Returns the number of receiving sessions and, with an L role, the
    /// future that confirms the configured durability. A store refusal is
    /// returned before anything was delivered or retained.
    pub fn publish(&self, msg: &Arc<RoutedMessage>) -> Result<(usize, Option<Durable>), LogError> {
        // Retained publishes of one topic must reach the in-memory table in the
        // order the L role stored them, or a restart-free node could keep the
        // older one: append and retain under one lock.
        let _order = msg.retain.then(|| self.retain_order.lock());
        let mut durable = None;
        let n = self.publish_external(msg, |sessions| {
            let mut offsets = Vec::new();
            if let Some(log) = &self.log {
                let (appended, d) = log.append(AppendRequest {
                    message: to_mqtt_message(msg),
                    sessions,
                })?;
                offsets = appended.session_offsets;
                durable = Some(d);
            }
            if msg.retain {
                self.retain(msg);
            }
            Ok(offsets)
        })?;
        Ok((n, durable))
    }

    /// Route a message that another front end stores itself (the RocketMQ
    /// gateway): `append` receives the persistent sessions that also want it
    /// in their stored queues and returns their offsets, in order. Nothing is
    /// delivered when `append` fails.
    pub fn publish_external<E>(
        &self,
        msg: &Arc<RoutedMessage>,
        append: impl FnOnce(Vec<String>) -> Result<Vec<i64>, E>,
    ) -> Result<usize, E> {
        let targets = self.plan(msg);
        let sessions = targets
            .iter()
            .filter(|t| t.stored)
            .map(|t| t.session.client_id.to_string())
            .collect();
        let offsets = append(sessions)?;
        Ok(self.deliver(msg, targets, &offsets))
    }

    /// Retain and route a message that is never stored (`$SYS`).
    pub fn publish_local(&self, msg: &Arc<RoutedMessage>) -> usize {
        if msg.retain {
            self.retain(msg);
        }
        let targets = self.plan(msg);
        self.deliver(msg, targets, &[])
    }

    /// Who receives `msg`: one target per client for overlapping
    /// subscriptions (highest QoS, every subscription id), one per shared group.
    fn plan(&self, msg: &Arc<RoutedMessage>) -> Vec<Target> {
        // (client, qos, retain-as-published, sub id, shared group)
        type Match = (
            ClientId,
            QoS,
            bool,
            Option<u32>,
            Option<(Arc<str>, Arc<str>)>,
        );
        let mut matches: Vec<Match> = Vec::new();
        let sessions = self.sessions.read();
        {
            let subs = self.subs.read();
            subs.for_each_match(&msg.topic, |filter, key, entry| match (key, entry) {
                (SubKey::Client(c), SubEntry::Client(o)) => {
                    if o.no_local && msg.publisher.as_ref() == Some(c) {
                        return;
                    }
                    matches.push((
                        c.clone(),
                        o.qos.min(msg.qos),
                        o.retain_as_published,
                        o.subscription_id,
                        None,
                    ));
                }
                (SubKey::Share(group), SubEntry::Share(g)) => {
                    if let Some((c, o)) = pick_member(g, &sessions) {
                        matches.push((
                            c,
                            o.qos.min(msg.qos),
                            o.retain_as_published,
                            o.subscription_id,
                            Some((group.clone(), Arc::from(filter))),
                        ));
                    }
                }
                _ => {}
            });
        }
        let mut targets = Vec::new();
        if matches.is_empty() {
            return targets;
        }
        matches.sort_by(|a, b| a.0.cmp(&b.0).then(a.4.is_some().cmp(&b.4.is_some())));
        let mut i = 0;
        while i < matches.len() {
            let mut j = i + 1;
            // Shared deliveries stay separate (spec 4.8.2: each group gets its copy).
            if matches[i].4.is_none() {
                while j < matches.len() && matches[j].0 == matches[i].0 && matches[j].4.is_none() {
                    j += 1;
                }
            }
            let group = &matches[i..j];
            if let Some(session) = sessions.get(&matches[i].0) {
                let qos = group.iter().map(|t| t.1).max().unwrap_or_default();
                let shared = matches[i].4.clone();
                // Shared-group messages stay in memory: they belong to the
                // group, not to the member that happened to be picked.
                let stored = qos != QoS::AtMostOnce
                    && shared.is_none()
                    && session.persistent.load(Ordering::Acquire);
                targets.push(Target {
                    session: session.clone(),
                    qos,
                    retain_as_published: group.iter().any(|t| t.2),
                    ids: group.iter().filter_map(|t| t.3).collect(),
                    shared,
                    stored,
                });
            }
            i = j;
        }
        targets
    }

    /// Queue `msg` on each target; `offsets` are the stored-queue offsets of
    /// the `stored` targets, in order. Returns how many sessions received it
    /// (0 lets v5 PUBACK say "no matching subscribers").
    fn deliver(&self, msg: &Arc<RoutedMessage>, targets: Vec<Target>, offsets: &[i64]) -> usize {
        let mut delivered = 0;
        let mut stored_offsets = offsets.iter();
        for t in targets {
            let lmq_offset = if t.stored {
                stored_offsets.next().copied()
            } else {
                None
            };
            let d = Delivery {
                msg: msg.clone(),
                qos: t.qos,
                retain: t.retain_as_published && msg.retain,
                subscription_ids: t.ids,
                shared: t.shared,
                lmq_offset,
            };
            if t.session.enqueue(
                d,
                self.config.max_queued_messages,
                self.config.queue_qos0_offline,
            ) {
                delivered += 1;
            } else {
                self.stats.messages_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        delivered
    }

    /// Hand deliveries that came through shared subscriptions to another
    /// member of their group (member loss, QoS ≥ 1).
    pub fn redistribute(&self, from: &ClientId, deliveries: Vec<Delivery>) {
        let subs = self.subs.read();
        let sessions = self.sessions.read();
        for d in deliveries {
            let Some((group, filter)) = d.shared.clone() else {
                continue;
            };
            if d.qos == QoS::AtMostOnce {
                continue;
            }
            let key = SubKey::Share(group);
            let Some(SubEntry::Share(g)) = subs.get(&filter, &key) else {
                continue;
            };
            let others = SharedGroup {
                members: g
                    .members
                    .iter()
                    .filter(|(c, _)| c != from)
                    .cloned()
                    .collect(),
                next: AtomicUsize::new(g.next.fetch_add(1, Ordering::Relaxed)),
            };
            if let Some((c, _)) = pick_member(&others, &sessions) {
                if let Some(s) = sessions.get(&c) {
                    s.enqueue(d, self.config.max_queued_messages, true);
                }
            }
        }
    }

    /// Set (or, with an empty payload, clear) the retained message of a topic.
    pub fn retain(&self, msg: &Arc<RoutedMessage>) {
        let mut r = self.retained.write();
        if msg.payload.is_empty() {
            r.remove(&msg.topic);
        } else {
            r.insert(msg.topic.clone(), msg.clone());
        }
        metrics::gauge!("ferrymq_mqtt_retained_messages").set(r.len() as f64);
    }

    /// Retained messages matching `filter` (not expired).
    pub fn retained_matching(&self, filter: &str) -> Vec<Arc<RoutedMessage>> {
        let now = Instant::now();
        self.retained
            .read()
            .values()
            .filter(|m| !m.is_expired(now) && ferrymq_shared::matches(&m.topic, filter))
            .cloned()
            .collect()
    }
}

/// A session as the L role persists it.
fn session_record(s: &Session, online: bool) -> SessionRecord {
    let st = s.state.lock();
    SessionRecord {
        client_id: s.client_id.to_string(),
        expiry_secs: st.expiry_secs,
        subscriptions: st
            .subscriptions
            .iter()
            .map(|(f, o)| SubscriptionRecord {
                filter: f.clone(),
                qos: o.qos as u8,
                no_local: o.no_local,
                retain_as_published: o.retain_as_published,
                retain_handling: o.retain_handling,
                subscription_id: o.subscription_id,
            })
            .collect(),
        disconnected_at_ms: (!online).then(shared_now_ms),
    }
}

/// One receiving session of a message.
struct Target {
    session: Arc<Session>,
    qos: QoS,
    retain_as_published: bool,
    ids: Vec<u32>,
    shared: Option<(Arc<str>, Arc<str>)>,
    /// The message also goes into the session's stored queue.
    stored: bool,
}

/// The boundary's view of a message.
pub fn to_mqtt_message(m: &RoutedMessage) -> MqttMessage {
    let p = &m.properties;
    MqttMessage {
        topic: m.topic.clone(),
        payload: m.payload.clone(),
        qos: m.qos as u8,
        retain: m.retain,
        props: MqttProps {
            payload_format: p.payload_format_indicator,
            message_expiry: p.message_expiry_interval,
            content_type: p.content_type.clone(),
            response_topic: p.response_topic.clone(),
            correlation_data: p.correlation_data.clone(),
            user: p.user_properties.clone(),
        },
        publisher: m.publisher.as_ref().map(|c| c.to_string()),
    }
}

/// A stored message back as a routed one; its expiry counts from when it was
/// stored, so a message that waited on disk does not live longer.
pub fn from_mqtt_message(m: MqttMessage, stored_at_ms: i64) -> RoutedMessage {
    let props = PublishProperties {
        payload_format_indicator: m.props.payload_format,
        message_expiry_interval: m.props.message_expiry,
        content_type: m.props.content_type,
        response_topic: m.props.response_topic,
        correlation_data: m.props.correlation_data,
        user_properties: m.props.user,
        ..PublishProperties::default()
    };
    let mut r = RoutedMessage::new(
        m.topic,
        m.payload,
        QoS::from_u8(m.qos).unwrap_or(QoS::AtLeastOnce),
        m.retain,
        props,
        m.publisher.map(Arc::from),
    );
    if let Some(secs) = m.props.message_expiry {
        let age_ms = (shared_now_ms() - stored_at_ms).max(0) as u64;
        let left = (secs as u64 * 1000).saturating_sub(age_ms);
        r.expires_at = Some(Instant::now() + std::time::Duration::from_millis(left));
    }
    r
}

/// Milliseconds since the Unix epoch.
pub fn shared_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Round-robin over a group's members, preferring connected ones so that a
/// lost member's share goes to the others.
fn pick_member(
    g: &SharedGroup,
    sessions: &HashMap<ClientId, Arc<Session>>,
) -> Option<(ClientId, SubOptions)> {
    let n = g.members.len();
    if n == 0 {
        return None;
    }
    let start = g.next.fetch_add(1, Ordering::Relaxed);
    for k in 0..n {
        let (c, o) = &g.members[(start + k) % n];
        if sessions
            .get(c)
            .is_some_and(|s| s.state.lock().connection.is_some())
        {
            return Some((c.clone(), *o));
        }
    }
    let (c, o) = &g.members[start % n];
    Some((c.clone(), *o))
}
