//! The broker's shared state: sessions, the subscription trie, retained
//! messages and counters. Publishers route on their own task (a read lock on
//! the trie, then a short lock per receiving session), so routing runs on every
//! core instead of behind one router task.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ferrymq_topics::{parse_shared, SubscriptionTrie};
use hashbrown::HashMap;
use parking_lot::{Mutex, RwLock};

use crate::config::NodeAConfig;
use crate::protocol::packet::QoS;
use crate::session::{ClientId, Delivery, RoutedMessage, Session, SubOptions};

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
    sessions: RwLock<HashMap<ClientId, Arc<Session>>>,
    /// Serialises session attach/detach so takeovers are atomic.
    pub(crate) session_lock: Mutex<()>,
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
            sessions: RwLock::new(HashMap::new()),
            session_lock: Mutex::new(()),
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

    /// Accept a message: keep it as the topic's retained message if flagged,
    /// then route it. Returns the number of receiving sessions.
    pub fn publish(&self, msg: &Arc<RoutedMessage>) -> usize {
        if msg.retain {
            self.retain(msg);
        }
        self.route(msg)
    }

    /// Route a message to every matching session. Returns how many sessions
    /// received it (0 lets v5 PUBACK say "no matching subscribers").
    pub fn route(&self, msg: &Arc<RoutedMessage>) -> usize {
        // (client, qos, retain-as-published, sub id, shared group)
        type Target = (
            ClientId,
            QoS,
            bool,
            Option<u32>,
            Option<(Arc<str>, Arc<str>)>,
        );
        let mut targets: Vec<Target> = Vec::new();
        let sessions = self.sessions.read();
        {
            let subs = self.subs.read();
            subs.for_each_match(&msg.topic, |filter, key, entry| match (key, entry) {
                (SubKey::Client(c), SubEntry::Client(o)) => {
                    if o.no_local && msg.publisher.as_ref() == Some(c) {
                        return;
                    }
                    targets.push((
                        c.clone(),
                        o.qos.min(msg.qos),
                        o.retain_as_published,
                        o.subscription_id,
                        None,
                    ));
                }
                (SubKey::Share(group), SubEntry::Share(g)) => {
                    if let Some((c, o)) = pick_member(g, &sessions) {
                        targets.push((
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
        if targets.is_empty() {
            return 0;
        }
        // One copy per client for overlapping subscriptions: highest QoS, every id.
        targets.sort_by(|a, b| a.0.cmp(&b.0).then(a.4.is_some().cmp(&b.4.is_some())));
        let mut delivered = 0;
        let mut i = 0;
        while i < targets.len() {
            let mut j = i + 1;
            // Shared deliveries stay separate (spec 4.8.2: each group gets its copy).
            if targets[i].4.is_none() {
                while j < targets.len() && targets[j].0 == targets[i].0 && targets[j].4.is_none() {
                    j += 1;
                }
            }
            let group = &targets[i..j];
            let qos = group.iter().map(|t| t.1).max().unwrap_or_default();
            let rap = group.iter().any(|t| t.2);
            let ids: Vec<u32> = group.iter().filter_map(|t| t.3).collect();
            if let Some(s) = sessions.get(&targets[i].0) {
                let d = Delivery {
                    msg: msg.clone(),
                    qos,
                    retain: rap && msg.retain,
                    subscription_ids: ids,
                    shared: targets[i].4.clone(),
                };
                if s.enqueue(
                    d,
                    self.config.max_queued_messages,
                    self.config.queue_qos0_offline,
                ) {
                    delivered += 1;
                } else {
                    self.stats.messages_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            i = j;
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
            .filter(|m| !m.is_expired(now) && ferrymq_topics::matches(&m.topic, filter))
            .cloned()
            .collect()
    }
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
