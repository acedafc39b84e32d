//! The A → L role boundary: what a front end (the A node, later the gateway)
//! asks of the role that persists messages.
//!
//! The types are plain data so that two transports can carry them: direct
//! calls in one process (`ferrymq standalone`) and MQTT 5 meta-commands
//! between machines. Every operation that may wait on a disk or a network
//! returns a boxed future, so a caller never depends on which one it talks to.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

/// A boxed, sendable future: what crosses the boundary when an answer may wait.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// MQTT 5 properties that travel with a stored message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MqttProps {
    /// Payload format indicator (1 = UTF-8).
    pub payload_format: Option<u8>,
    /// Message expiry interval in seconds, counted from the store time.
    pub message_expiry: Option<u32>,
    /// Content type.
    pub content_type: Option<String>,
    /// Response topic.
    pub response_topic: Option<String>,
    /// Correlation data (binary).
    pub correlation_data: Option<Bytes>,
    /// User properties in order; names may repeat.
    pub user: Vec<(String, String)>,
}

/// An MQTT message as the L role stores and returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttMessage {
    /// Full MQTT topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS it was published with (0, 1, 2).
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
    /// MQTT 5 properties.
    pub props: MqttProps,
    /// Publishing client id (No Local needs it after a restart).
    pub publisher: Option<String>,
}

/// One append: the message plus the parked/persistent sessions that must
/// also find it in their light queues.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// The message.
    pub message: MqttMessage,
    /// Client ids whose session queue gets an entry for this message.
    pub sessions: Vec<String>,
}

/// Where an append landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the entry in each requested session queue, in request order.
    pub session_offsets: Vec<i64>,
    /// offsetMsgId of the stored entry.
    pub msg_id: String,
}

/// Why the L role refused or could not confirm an operation. Each maps onto
/// an MQTT 5 reason code so a device hears why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The topic cannot be stored (no RocketMQ topic for it, reserved name).
    #[error("topic not allowed: {0}")]
    TopicInvalid(String),
    /// Auto-create is off and the topic does not exist.
    #[error("topic {0} does not exist and auto-create is off")]
    TopicNotFound(String),
    /// The topic's permissions forbid writes (or, as configured, an unknown
    /// topic is reported as not authorized).
    #[error("topic {0} is not writable")]
    NotWritable(String),
    /// Disk usage is past the hard limit.
    #[error("store is full: {0}")]
    DiskFull(String),
    /// The message is over the store's size limit.
    #[error("message too large: {0}")]
    TooLarge(String),
    /// Stored, but not confirmed durable in time (FLUSH_DISK_TIMEOUT).
    #[error("not confirmed durable in time")]
    FlushTimeout,
    /// The L role is shutting down or unreachable.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A property holds bytes the stored format cannot carry (U+0001, U+0002).
    #[error("property not storable: {0}")]
    PropertyInvalid(String),
    /// Anything else the store reported.
    #[error("store error: {0}")]
    Other(String),
}

impl LogError {
    /// The MQTT 5 reason code a publisher gets for this error.
    pub fn mqtt_reason(&self) -> u8 {
        match self {
            LogError::TopicInvalid(_) => 0x90,
            LogError::TopicNotFound(_) => 0x90,
            LogError::NotWritable(_) => 0x87,
            LogError::DiskFull(_) => 0x97,
            LogError::TooLarge(_) => 0x95,
            LogError::PropertyInvalid(_) => 0x83,
            LogError::FlushTimeout | LogError::Unavailable(_) | LogError::Other(_) => 0x80,
        }
    }
}

/// One subscription of a persistent session, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionRecord {
    /// Topic filter (shared ones under their full `$share/...` form).
    pub filter: String,
    /// Granted QoS.
    pub qos: u8,
    /// MQTT 5 No Local.
    pub no_local: bool,
    /// MQTT 5 Retain As Published.
    pub retain_as_published: bool,
    /// MQTT 5 Retain Handling.
    pub retain_handling: u8,
    /// MQTT 5 Subscription Identifier.
    pub subscription_id: Option<u32>,
}

/// A persistent session as the L role keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecord {
    /// Client id.
    pub client_id: String,
    /// Session expiry interval in seconds (u32::MAX = never).
    pub expiry_secs: u32,
    /// Subscriptions.
    pub subscriptions: Vec<SubscriptionRecord>,
    /// When the client disconnected (Unix ms); None while connected.
    pub disconnected_at_ms: Option<i64>,
}

/// A message read back from a session queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledMessage {
    /// Offset in the session queue.
    pub offset: i64,
    /// When the store accepted it (Unix ms): message expiry counts from here.
    pub stored_at_ms: i64,
    /// The message.
    pub message: MqttMessage,
}

/// Result of a session-queue pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// Messages in queue order (may skip offsets whose data is gone).
    pub messages: Vec<PulledMessage>,
    /// Where the next pull should start.
    pub next_offset: i64,
}

/// A retained message as kept by the L role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedMessage {
    /// When it was stored (Unix ms).
    pub stored_at_ms: i64,
    /// The message.
    pub message: MqttMessage,
}

/// Why a publisher should be slowed right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pressure {
    /// Disk usage is over the soft limit.
    Disk,
    /// Flushing falls behind the writes.
    Flush,
}

impl Pressure {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Pressure::Disk => "disk",
            Pressure::Flush => "flush",
        }
    }
}

/// Durability confirmation of one append.
pub type Durable = BoxFuture<Result<(), LogError>>;

/// What the A node needs from the L role.
pub trait MessageLog: Send + Sync + 'static {
    /// Append a message. The append is ordered at the call: two calls from one
    /// caller land in call order. Returns where it landed and a future that
    /// resolves once the message has the configured durability.
    fn append(&self, req: AppendRequest) -> Result<(Appended, Durable), LogError>;

    /// Messages of a session queue from `offset`, at most `max`. `until` is
    /// the offset the caller knows exists: the pull waits (bounded) for
    /// entries below it that are appended but not yet indexed.
    fn pull_session(
        &self,
        client_id: &str,
        offset: i64,
        until: i64,
        max: usize,
    ) -> BoxFuture<Result<Pulled, LogError>>;

    /// (committed offset, next offset) of a session queue.
    fn session_offsets(&self, client_id: &str) -> (i64, i64);

    /// Record that a session consumed its queue up to (not including) `offset`.
    fn commit_session_offset(&self, client_id: &str, offset: i64);

    /// Create or replace a persistent session.
    fn save_session(&self, rec: SessionRecord);

    /// Delete a session, its queue and its offsets.
    fn remove_session(&self, client_id: &str);

    /// Every persisted session (read once at start).
    fn sessions(&self) -> Vec<SessionRecord>;

    /// Every retained message (read once at start).
    fn retained(&self) -> Vec<RetainedMessage>;

    /// Whether publishers should pause before the next read, and for how long.
    fn pressure(&self) -> Option<(Pressure, Duration)>;
}
