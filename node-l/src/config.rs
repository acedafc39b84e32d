//! Settings of the L role. Names follow RocketMQ's broker.conf where RocketMQ
//! has the concept, so an operator's existing vocabulary applies.

use serde::Deserialize;

/// Configuration of an [`crate::LNode`] (the `[broker]` section).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct LConfig {
    /// Create a topic on its first publish (RocketMQ's `autoCreateTopicEnable`).
    pub auto_create_topic_enable: bool,
    /// Queues of an auto-created topic (RocketMQ's `defaultTopicQueueNums`).
    pub default_topic_queue_nums: u32,
    /// MQTT 5 reason code for a publish to an unknown topic when auto-create is
    /// off: 0x90 (topic name invalid, default) or 0x87 (not authorized).
    pub unknown_topic_reason_code: u8,
    /// How often consumer and session offsets are written (ms).
    pub flush_consumer_offset_interval: u64,
    /// How often the session and retained tables are snapshotted when they
    /// changed (ms); a restart replays only what came after the snapshot.
    pub snapshot_interval: u64,
    /// Publishers are slowed while a SYNC_FLUSH put has waited this long (ms).
    pub flush_busy_wait_millis: u64,
    /// Publishers are slowed while this many bytes are written but not flushed.
    pub flush_busy_unflushed_bytes: u64,
    /// How long a slowed publisher's connection stops reading (ms).
    pub throttle_millis: u64,
    /// Most topics auto-creation may make (each costs ConsumeQueue files and
    /// a rewrite of the topic table).
    pub max_topic_count: usize,
}

impl Default for LConfig {
    fn default() -> Self {
        Self {
            auto_create_topic_enable: true,
            default_topic_queue_nums: 8,
            unknown_topic_reason_code: 0x90,
            flush_consumer_offset_interval: 1000,
            snapshot_interval: 5000,
            flush_busy_wait_millis: 1000,
            flush_busy_unflushed_bytes: 512 << 20,
            throttle_millis: 20,
            max_topic_count: 10_000,
        }
    }
}
