//! What every gateway handler shares: the L role, the MQTT side (for
//! delivering RocketMQ-sent messages to devices), the client registry and the
//! advertised broker address.

use std::net::SocketAddr;
use std::sync::Arc;

use node_l::topic_config::{TopicConfig, PERM_READ, PERM_WRITE};
use node_l::LNode;
use serde_json::json;
use shared_store::MessageStore;

use crate::clients::Registry;
use crate::config::GatewayConfig;
use crate::locks::QueueLocks;
use crate::namesrv::AUTO_CREATE_TOPIC_KEY;

/// RocketMQ's "inherit" permission bit (set on TBW102).
const PERM_INHERIT: u32 = 1;

/// Gateway state.
pub struct Shared {
    /// Settings.
    pub config: GatewayConfig,
    /// The L role (topics, offsets, the store).
    pub l: LNode,
    /// The store.
    pub store: MessageStore,
    /// The A node's broker, so RocketMQ-sent messages reach MQTT subscribers.
    pub mqtt: Option<Arc<node_a::Broker>>,
    /// Address routes point clients to.
    pub broker_addr: SocketAddr,
    /// Producers and consumers known from heartbeats.
    pub clients: Registry,
    /// Queue locks of orderly consumers.
    pub locks: QueueLocks,
    /// Delay of each level, ms (index 0 = level 1).
    pub delay_levels: Vec<u64>,
    /// Open transactions.
    pub tx: crate::transaction::Transactions,
    /// Subscription group configs (`config/subscriptionGroup.json`).
    pub groups: crate::groups::SubscriptionGroups,
}

impl Shared {
    /// A topic's config, creating it when auto-create is on. None: unknown
    /// topic and auto-create off.
    pub fn topic_or_create(&self, topic: &str, queues: Option<u32>) -> Option<TopicConfig> {
        if let Some(t) = self.l.topics().get(topic) {
            return Some(t);
        }
        if !self.l.config().auto_create_topic_enable {
            return None;
        }
        let n = queues
            .unwrap_or(self.l.config().default_topic_queue_nums)
            .clamp(1, self.l.config().default_topic_queue_nums.max(1));
        self.l
            .topics()
            .get_or_create(topic, n, self.l.config().max_topic_count)
            .ok()??;
        self.l.topics().get(topic)
    }

    /// TopicRouteData JSON for `topic`, or None if it does not exist.
    pub fn route(&self, topic: &str) -> Option<String> {
        // A push consumer looks up its group's retry topic before its first
        // heartbeat reaches us; RocketMQ clients refresh routes only every
        // 30 s, so the retry topic is made on first sight.
        if topic.starts_with("%RETRY%")
            && self.l.config().auto_create_topic_enable
            && ferrymq_shared::valid_rocketmq_topic(topic)
            && self.l.topics().get(topic).is_none()
        {
            let _ = self.l.topics().put(TopicConfig::new(topic, 1));
        }
        let (read, write, perm) = match self.l.topics().get(topic) {
            Some(t) => (t.read_queue_nums, t.write_queue_nums, t.perm),
            None if topic == AUTO_CREATE_TOPIC_KEY && self.l.config().auto_create_topic_enable => {
                let n = self.l.config().default_topic_queue_nums;
                (n, n, PERM_READ | PERM_WRITE | PERM_INHERIT)
            }
            None => return None,
        };
        let name = &self.config.broker_name;
        Some(
            json!({
                "orderTopicConf": null,
                "queueDatas": [{
                    "brokerName": name,
                    "readQueueNums": read,
                    "writeQueueNums": write,
                    "perm": perm,
                    // 4.x spells it topicSynFlag, 5.x (and rocketmq-rust,
                    // which requires it) topicSysFlag.
                    "topicSynFlag": 0,
                    "topicSysFlag": 0,
                }],
                "brokerDatas": [{
                    "cluster": self.config.broker_cluster_name,
                    "brokerName": name,
                    "brokerAddrs": {"0": self.broker_addr.to_string()},
                    "enableActingMaster": false,
                }],
                "filterServerTable": {},
            })
            .to_string(),
        )
    }
}
