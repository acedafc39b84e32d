//! Request and response codes (RocketMQ's `RequestCode` / `ResponseCode`).

/// Request codes.
pub mod request {
    /// Send one message (v1 header, full field names).
    pub const SEND_MESSAGE: i32 = 10;
    /// Pull messages.
    pub const PULL_MESSAGE: i32 = 11;
    /// Query messages by key.
    pub const QUERY_MESSAGE: i32 = 12;
    /// A consumer group's offset.
    pub const QUERY_CONSUMER_OFFSET: i32 = 14;
    /// Store a consumer group's offset.
    pub const UPDATE_CONSUMER_OFFSET: i32 = 15;
    /// Create or update a topic.
    pub const UPDATE_AND_CREATE_TOPIC: i32 = 17;
    /// Every topic's config.
    pub const GET_ALL_TOPIC_CONFIG: i32 = 21;
    /// Offset by store time.
    pub const SEARCH_OFFSET_BY_TIMESTAMP: i32 = 29;
    /// Max offset of a queue.
    pub const GET_MAX_OFFSET: i32 = 30;
    /// Min offset of a queue.
    pub const GET_MIN_OFFSET: i32 = 31;
    /// Store time of a queue's first message.
    pub const GET_EARLIEST_MSG_STORETIME: i32 = 32;
    /// A message by offsetMsgId (CommitLog offset).
    pub const VIEW_MESSAGE_BY_ID: i32 = 33;
    /// Client heartbeat (groups and subscriptions).
    pub const HEART_BEAT: i32 = 34;
    /// Client leaves.
    pub const UNREGISTER_CLIENT: i32 = 35;
    /// A consumer returns a message for retry.
    pub const CONSUMER_SEND_MSG_BACK: i32 = 36;
    /// Commit or roll back a half message.
    pub const END_TRANSACTION: i32 = 37;
    /// Members of a consumer group.
    pub const GET_CONSUMER_LIST_BY_GROUP: i32 = 38;
    /// Broker → producer: what became of this transaction?
    pub const CHECK_TRANSACTION_STATE: i32 = 39;
    /// Broker → consumer: the group changed, rebalance.
    pub const NOTIFY_CONSUMER_IDS_CHANGED: i32 = 40;
    /// Lock queues for orderly consumption.
    pub const LOCK_BATCH_MQ: i32 = 41;
    /// Release queue locks.
    pub const UNLOCK_BATCH_MQ: i32 = 42;
    /// Create or update a subscription group's config (retry limit).
    pub const UPDATE_AND_CREATE_SUBSCRIPTIONGROUP: i32 = 200;
    /// Every subscription group's config.
    pub const GET_ALL_SUBSCRIPTIONGROUP_CONFIG: i32 = 201;
    /// Delete a subscription group's config.
    pub const DELETE_SUBSCRIPTIONGROUP: i32 = 207;
    /// NameServer KV config lookup.
    pub const GET_KV_CONFIG: i32 = 101;
    /// NameServer: route of a topic.
    pub const GET_ROUTEINFO_BY_TOPIC: i32 = 105;
    /// NameServer: brokers and clusters.
    pub const GET_BROKER_CLUSTER_INFO: i32 = 106;
    /// KV configs of a namespace.
    pub const GET_KVLIST_BY_NAMESPACE: i32 = 219;
    /// Connections of a consumer group (admin).
    pub const GET_CONSUMER_CONNECTION_LIST: i32 = 203;
    /// Consumer progress (admin).
    pub const GET_CONSUME_STATS: i32 = 208;
    /// NameServer: every topic.
    pub const GET_ALL_TOPIC_LIST_FROM_NAMESERVER: i32 = 206;
    /// Delete a topic's data and config.
    pub const DELETE_TOPIC_IN_BROKER: i32 = 215;
    /// NameServer: delete a topic's route.
    pub const DELETE_TOPIC_IN_NAMESRV: i32 = 216;
    /// Send one message (v2 header, one-letter field names).
    pub const SEND_MESSAGE_V2: i32 = 310;
    /// Send a batch.
    pub const SEND_BATCH_MESSAGE: i32 = 320;
    /// Send a reply message (request/reply).
    pub const SEND_REPLY_MESSAGE_V2: i32 = 325;
}

/// Response codes.
pub mod response {
    /// Success (SEND_OK for sends).
    pub const SUCCESS: i32 = 0;
    /// Unexpected failure.
    pub const SYSTEM_ERROR: i32 = 1;
    /// Broker busy.
    pub const SYSTEM_BUSY: i32 = 2;
    /// Unknown request code.
    pub const REQUEST_CODE_NOT_SUPPORTED: i32 = 3;
    /// Stored, not flushed in time.
    pub const FLUSH_DISK_TIMEOUT: i32 = 10;
    /// Message refused (size, properties, topic).
    pub const MESSAGE_ILLEGAL: i32 = 13;
    /// Broker cannot take writes now (disk full).
    pub const SERVICE_NOT_AVAILABLE: i32 = 14;
    /// Permission denied (topic not writable).
    pub const NO_PERMISSION: i32 = 16;
    /// Unknown topic.
    pub const TOPIC_NOT_EXIST: i32 = 17;
    /// Nothing to pull yet.
    pub const PULL_NOT_FOUND: i32 = 19;
    /// Pull again now (filtered everything, or data removed).
    pub const PULL_RETRY_IMMEDIATELY: i32 = 20;
    /// The offset is out of range: use nextBeginOffset.
    pub const PULL_OFFSET_MOVED: i32 = 21;
    /// Not found (offsets, messages, KV config).
    pub const QUERY_NOT_FOUND: i32 = 22;
    /// Consumer group unknown.
    pub const SUBSCRIPTION_GROUP_NOT_EXIST: i32 = 26;
    /// Consumer not online.
    pub const CONSUMER_NOT_ONLINE: i32 = 206;
}
