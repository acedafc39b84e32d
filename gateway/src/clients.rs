//! Producers and consumers as heartbeats describe them. Consumer groups need
//! the member list (GET_CONSUMER_LIST_BY_GROUP) and a push when it changes
//! (NOTIFY_CONSUMER_IDS_CHANGED) so their clients rebalance queues; producer
//! groups need a connection to ask about unresolved transactions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::{HashMap, HashSet};
use parking_lot::Mutex;
use serde_json::Value;
use shared_store::message::java_string_hash;

use crate::codes::request;
use crate::remoting::Command;
use crate::server::Conn;

/// One subscription of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Topic.
    pub topic: String,
    /// Expression as sent (`*`, `a || b`).
    pub expression: String,
    /// Tags; empty = all.
    pub tags: Vec<String>,
    /// Java hash codes of `tags`, computed here (clients' `codeSet` is not trusted).
    pub codes: HashSet<i64>,
}

impl Subscription {
    /// Parse a TAG expression.
    pub fn parse(topic: &str, expression: &str) -> Self {
        let e = expression.trim();
        let tags: Vec<String> = if e.is_empty() || e == "*" {
            Vec::new()
        } else {
            e.split("||")
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let codes = tags.iter().map(|t| java_string_hash(t) as i64).collect();
        Self {
            topic: topic.to_owned(),
            expression: e.to_owned(),
            tags,
            codes,
        }
    }

    /// Whether everything matches.
    pub fn all(&self) -> bool {
        self.tags.is_empty()
    }
}

struct Client {
    conn: Arc<Conn>,
    seen: Instant,
}

#[derive(Default)]
struct ConsumerGroup {
    clients: BTreeMap<String, Client>,
    subscriptions: HashMap<String, Subscription>,
    consume_from_where: String,
    message_model: String,
}

#[derive(Default)]
struct Tables {
    consumers: HashMap<String, ConsumerGroup>,
    producers: HashMap<String, BTreeMap<String, Client>>,
}

/// The registry.
#[derive(Default)]
pub struct Registry {
    t: Mutex<Tables>,
}

/// What a heartbeat told us about consumer groups (to create retry topics).
pub struct HeartbeatOutcome {
    /// Consumer groups in clustering mode (they need `%RETRY%<group>`).
    pub clustering_groups: Vec<String>,
}

fn str_of(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

impl Registry {
    /// Apply a HEART_BEAT body. The C++ client writes enums as numbers and
    /// leaves fields out, so everything is read leniently.
    pub fn heartbeat(&self, conn: &Arc<Conn>, body: &[u8]) -> Result<HeartbeatOutcome, String> {
        let v: Value = serde_json::from_slice(body).map_err(|e| format!("heartbeat body: {e}"))?;
        let client_id = str_of(&v, "clientID");
        if client_id.is_empty() {
            return Err("heartbeat without clientID".into());
        }
        let now = Instant::now();
        let mut changed = Vec::new();
        let mut clustering = Vec::new();
        let mut t = self.t.lock();
        if let Some(Value::Array(ps)) = v.get("producerDataSet") {
            for p in ps {
                let g = str_of(p, "groupName");
                if g.is_empty() {
                    continue;
                }
                t.producers.entry(g).or_default().insert(
                    client_id.clone(),
                    Client {
                        conn: conn.clone(),
                        seen: now,
                    },
                );
            }
        }
        if let Some(Value::Array(cs)) = v.get("consumerDataSet") {
            for c in cs {
                let g = str_of(c, "groupName");
                if g.is_empty() {
                    continue;
                }
                let group = t.consumers.entry(g.clone()).or_default();
                let model = str_of(c, "messageModel");
                // BROADCASTING is 0 in the C++ client's enum, CLUSTERING 1.
                let broadcasting = model == "BROADCASTING" || model == "0";
                if !broadcasting {
                    clustering.push(g.clone());
                }
                group.message_model = model;
                group.consume_from_where = str_of(c, "consumeFromWhere");
                if let Some(Value::Array(subs)) = c.get("subscriptionDataSet") {
                    // A heartbeat carries the group's whole subscription set.
                    group.subscriptions.clear();
                    for s in subs {
                        let topic = str_of(s, "topic");
                        if topic.is_empty() {
                            continue;
                        }
                        let sub = Subscription::parse(&topic, &str_of(s, "subString"));
                        group.subscriptions.insert(topic, sub);
                    }
                }
                let new = group
                    .clients
                    .insert(
                        client_id.clone(),
                        Client {
                            conn: conn.clone(),
                            seen: now,
                        },
                    )
                    .is_none_or(|old| old.conn.id != conn.id);
                if new {
                    changed.push(g);
                }
            }
        }
        drop(t);
        for g in changed {
            self.notify_changed(&g);
        }
        Ok(HeartbeatOutcome {
            clustering_groups: clustering,
        })
    }

    /// A client left a group (UNREGISTER_CLIENT).
    pub fn unregister(&self, client_id: &str, producer: Option<&str>, consumer: Option<&str>) {
        let mut t = self.t.lock();
        if let Some(g) = producer {
            if let Some(p) = t.producers.get_mut(g) {
                p.remove(client_id);
            }
        }
        let mut changed = None;
        if let Some(g) = consumer {
            if let Some(c) = t.consumers.get_mut(g) {
                if c.clients.remove(client_id).is_some() {
                    changed = Some(g.to_owned());
                }
            }
        }
        drop(t);
        if let Some(g) = changed {
            self.notify_changed(&g);
        }
    }

    /// Drop every client of a closed connection; returns their ids.
    pub fn connection_closed(&self, conn_id: u64) -> Vec<String> {
        self.drop_where(|c| c.conn.id == conn_id)
    }

    /// Drop clients whose heartbeats stopped.
    pub fn expire(&self, timeout: Duration) -> Vec<String> {
        let now = Instant::now();
        self.drop_where(|c| now.duration_since(c.seen) > timeout)
    }

    fn drop_where(&self, gone: impl Fn(&Client) -> bool) -> Vec<String> {
        let mut t = self.t.lock();
        let mut ids = Vec::new();
        let mut changed = Vec::new();
        for (g, c) in t.consumers.iter_mut() {
            let before = c.clients.len();
            c.clients.retain(|id, cl| {
                let keep = !gone(cl);
                if !keep {
                    ids.push(id.clone());
                }
                keep
            });
            if c.clients.len() != before {
                changed.push(g.clone());
            }
        }
        for p in t.producers.values_mut() {
            p.retain(|id, cl| {
                let keep = !gone(cl);
                if !keep {
                    ids.push(id.clone());
                }
                keep
            });
        }
        // Groups without members are forgotten (they come back with a heartbeat).
        t.consumers.retain(|_, c| !c.clients.is_empty());
        t.producers.retain(|_, p| !p.is_empty());
        drop(t);
        for g in changed {
            self.notify_changed(&g);
        }
        ids
    }

    /// Client ids of a consumer group.
    pub fn consumer_ids(&self, group: &str) -> Vec<String> {
        self.t
            .lock()
            .consumers
            .get(group)
            .map(|c| c.clients.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The group's subscription of `topic`.
    pub fn subscription(&self, group: &str, topic: &str) -> Option<Subscription> {
        self.t
            .lock()
            .consumers
            .get(group)
            .and_then(|c| c.subscriptions.get(topic).cloned())
    }

    /// (client id, address, language-independent facts) of a group's members.
    pub fn consumer_connections(&self, group: &str) -> Vec<(String, String)> {
        self.t
            .lock()
            .consumers
            .get(group)
            .map(|c| {
                c.clients
                    .iter()
                    .map(|(id, cl)| (id.clone(), cl.conn.peer.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// (message model, consume-from-where, subscriptions) of a group.
    pub fn consumer_group_info(&self, group: &str) -> Option<(String, String, Vec<Subscription>)> {
        self.t.lock().consumers.get(group).map(|c| {
            (
                c.message_model.clone(),
                c.consume_from_where.clone(),
                c.subscriptions.values().cloned().collect(),
            )
        })
    }

    /// A live connection of a producer group (for transaction checks).
    pub fn producer_conn(&self, group: &str) -> Option<Arc<Conn>> {
        self.t
            .lock()
            .producers
            .get(group)
            .and_then(|p| p.values().max_by_key(|c| c.seen).map(|c| c.conn.clone()))
    }

    /// Tell every member of `group` to rebalance.
    fn notify_changed(&self, group: &str) {
        let conns: Vec<Arc<Conn>> = self
            .t
            .lock()
            .consumers
            .get(group)
            .map(|c| c.clients.values().map(|cl| cl.conn.clone()).collect())
            .unwrap_or_default();
        for c in conns {
            let mut cmd = Command::request(request::NOTIFY_CONSUMER_IDS_CHANGED);
            cmd.set("consumerGroup", group);
            c.send_oneway(cmd);
        }
    }
}
