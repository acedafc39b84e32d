//! ferrymq-shared: the topic rules every ferrymq role must agree on.
//!
//! Front ends validate and match MQTT topics, routers index subscriptions,
//! and the store maps MQTT topics onto RocketMQ topics, tags and queues. If
//! any two of them disagreed (say, on whether `a/#` matches `a`, or on which
//! queue `a/b` lives in), messages would be lost or reordered, so the rules
//! live here, once.
//!
//! - [`validate`]: topic name, topic filter and `$share` syntax.
//! - [`matching`]: the reference topic/filter matching rules.
//! - [`trie`]: [`SubscriptionTrie`], the subscription index used on publish.
//! - [`rocketmq`]: MQTT topic <-> RocketMQ (topic, tag) and queue selection.
//! - [`boundary`]: the A → L boundary ([`boundary::MessageLog`]) and its data.
//!
//! The crate is pure logic without I/O or locking, so each role can embed
//! it under whatever concurrency scheme it uses.

pub mod boundary;
pub mod matching;
pub mod rocketmq;
pub mod trie;
pub mod validate;

pub use matching::matches;
pub use rocketmq::{
    first_level_of, from_rocketmq, queue_for, rocketmq_topic_of, to_rocketmq, valid_rocketmq_topic,
    RocketTarget, MQTT_TOPIC_PROPERTY, ROCKETMQ_TOPIC_MAX_LEN,
};
pub use trie::SubscriptionTrie;
pub use validate::{
    parse_shared, valid_topic_filter, valid_topic_name, SharedFilter, MAX_TOPIC_LEN,
};
