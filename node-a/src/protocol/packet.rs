//! ferrymq's own model of MQTT control packets: one type family for both
//! protocol versions (MQTT 5 is the superset; 3.1.1 packets decode into it
//! with the v5-only fields empty). The broker's logic is written once against
//! this model; `codec` translates to and from the wire.

use bytes::Bytes;

/// Protocol version of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5 (protocol level 5).
    V5,
}

/// Quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    /// At most once.
    #[default]
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// From the two wire bits; None for 3.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

/// MQTT 5 reason codes the broker sends or receives (spec 2.4).
pub mod reason {
    #![allow(missing_docs)]
    pub const SUCCESS: u8 = 0x00;
    pub const GRANTED_QOS_1: u8 = 0x01;
    pub const GRANTED_QOS_2: u8 = 0x02;
    pub const DISCONNECT_WITH_WILL: u8 = 0x04;
    pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    pub const CONTINUE_AUTHENTICATION: u8 = 0x18;
    pub const RE_AUTHENTICATE: u8 = 0x19;
    pub const UNSPECIFIED_ERROR: u8 = 0x80;
    pub const MALFORMED_PACKET: u8 = 0x81;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const IMPLEMENTATION_SPECIFIC_ERROR: u8 = 0x83;
    pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
    pub const CLIENT_IDENTIFIER_NOT_VALID: u8 = 0x85;
    pub const BAD_USER_NAME_OR_PASSWORD: u8 = 0x86;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    pub const SERVER_BUSY: u8 = 0x89;
    pub const BANNED: u8 = 0x8A;
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    pub const PACKET_IDENTIFIER_IN_USE: u8 = 0x91;
    pub const PACKET_IDENTIFIER_NOT_FOUND: u8 = 0x92;
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    pub const MESSAGE_RATE_TOO_HIGH: u8 = 0x96;
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    pub const ADMINISTRATIVE_ACTION: u8 = 0x98;
    pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
    pub const RETAIN_NOT_SUPPORTED: u8 = 0x9A;
    pub const QOS_NOT_SUPPORTED: u8 = 0x9B;
    pub const USE_ANOTHER_SERVER: u8 = 0x9C;
    pub const SERVER_MOVED: u8 = 0x9D;
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0x9E;
    pub const CONNECTION_RATE_EXCEEDED: u8 = 0x9F;
    pub const MAXIMUM_CONNECT_TIME: u8 = 0xA0;
    pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: u8 = 0xA1;
    pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0xA2;
}

/// User properties, in order (names may repeat).
pub type UserProperties = Vec<(String, String)>;

/// Properties a PUBLISH (or a will) carries through the broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    /// 0 = unspecified bytes, 1 = UTF-8.
    pub payload_format_indicator: Option<u8>,
    /// Seconds until the message expires.
    pub message_expiry_interval: Option<u32>,
    /// Topic alias (only meaningful on one connection's wire).
    pub topic_alias: Option<u16>,
    /// Response topic of a request.
    pub response_topic: Option<String>,
    /// Correlation data of a request.
    pub correlation_data: Option<Bytes>,
    /// User properties.
    pub user_properties: UserProperties,
    /// Subscription identifiers of the matching subscriptions (outgoing only).
    pub subscription_identifiers: Vec<u32>,
    /// MIME type of the payload.
    pub content_type: Option<String>,
}

/// PUBLISH.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publish {
    /// Redelivery flag.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Topic name (may be empty on the wire when a topic alias stands for it).
    pub topic: String,
    /// Packet identifier (0 for QoS 0).
    pub pkid: u16,
    /// Payload.
    pub payload: Bytes,
    /// MQTT 5 properties.
    pub properties: PublishProperties,
}

/// A will message from CONNECT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Will {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Seconds to wait after the connection drops before publishing.
    pub delay_interval: u32,
    /// Properties passed through to subscribers.
    pub properties: PublishProperties,
}

/// CONNECT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connect {
    /// Protocol version (set by the codec from the protocol level).
    pub protocol: Option<Protocol>,
    /// Client identifier (may be empty).
    pub client_id: String,
    /// Clean session (v3.1.1) / clean start (v5).
    pub clean_start: bool,
    /// Keep alive, seconds.
    pub keep_alive: u16,
    /// Session expiry interval, seconds (v5).
    pub session_expiry_interval: Option<u32>,
    /// Client's receive maximum (v5).
    pub receive_maximum: Option<u16>,
    /// Largest packet the client accepts (v5).
    pub maximum_packet_size: Option<u32>,
    /// Client's topic alias maximum (v5).
    pub topic_alias_maximum: Option<u16>,
    /// Request response information (v5).
    pub request_response_information: Option<u8>,
    /// Request problem information (v5).
    pub request_problem_information: Option<u8>,
    /// User properties (v5).
    pub user_properties: UserProperties,
    /// Enhanced authentication method (v5).
    pub authentication_method: Option<String>,
    /// Enhanced authentication data (v5).
    pub authentication_data: Option<Bytes>,
    /// Will message.
    pub will: Option<Will>,
    /// User name.
    pub username: Option<String>,
    /// Password (binary in v5).
    pub password: Option<Bytes>,
}

/// CONNACK properties (v5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAckProperties {
    /// Session expiry the server applies.
    pub session_expiry_interval: Option<u32>,
    /// Server's receive maximum.
    pub receive_maximum: Option<u16>,
    /// Highest QoS supported.
    pub maximum_qos: Option<u8>,
    /// Retain supported.
    pub retain_available: Option<u8>,
    /// Largest packet the server accepts.
    pub maximum_packet_size: Option<u32>,
    /// Client id chosen by the server for an empty one.
    pub assigned_client_identifier: Option<String>,
    /// Server's topic alias maximum.
    pub topic_alias_maximum: Option<u16>,
    /// Human-readable reason.
    pub reason_string: Option<String>,
    /// User properties.
    pub user_properties: UserProperties,
    /// Wildcard subscriptions supported.
    pub wildcard_subscription_available: Option<u8>,
    /// Subscription identifiers supported.
    pub subscription_identifiers_available: Option<u8>,
    /// Shared subscriptions supported.
    pub shared_subscription_available: Option<u8>,
    /// Keep alive the server imposes.
    pub server_keep_alive: Option<u16>,
    /// Response information.
    pub response_information: Option<String>,
    /// Another server to use.
    pub server_reference: Option<String>,
    /// Enhanced auth method.
    pub authentication_method: Option<String>,
    /// Enhanced auth data.
    pub authentication_data: Option<Bytes>,
}

/// CONNACK. `reason` is a v5 reason code; for v3.1.1 the codec maps it to the
/// nearest return code (0x84→1, 0x85→2, 0x88/0x89/0x8B→3, 0x86→4, 0x87→5, others→3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAck {
    /// Session present flag.
    pub session_present: bool,
    /// v5 reason code.
    pub reason: u8,
    /// v5 properties.
    pub properties: ConnAckProperties,
}

/// PUBACK / PUBREC / PUBREL / PUBCOMP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ack {
    /// Packet identifier.
    pub pkid: u16,
    /// v5 reason code (0 = success).
    pub reason: u8,
    /// v5 reason string.
    pub reason_string: Option<String>,
    /// v5 user properties.
    pub user_properties: UserProperties,
}

/// One filter of a SUBSCRIBE with its options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// Topic filter (may be `$share/group/filter`).
    pub filter: String,
    /// Maximum QoS.
    pub qos: QoS,
    /// v5: don't send my own publishes back to me.
    pub no_local: bool,
    /// v5: keep the retain flag as published.
    pub retain_as_published: bool,
    /// v5: 0 send retained on subscribe, 1 only if new, 2 never.
    pub retain_handling: u8,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier.
    pub pkid: u16,
    /// Filters.
    pub filters: Vec<SubscribeFilter>,
    /// v5 subscription identifier.
    pub subscription_identifier: Option<u32>,
    /// v5 user properties.
    pub user_properties: UserProperties,
}

/// SUBACK. Reason codes are v5's; for v3.1.1 granted QoS 0-2 pass as is and
/// every failure becomes 0x80.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier.
    pub pkid: u16,
    /// One per filter.
    pub reasons: Vec<u8>,
    /// v5 reason string.
    pub reason_string: Option<String>,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub pkid: u16,
    /// Filters.
    pub filters: Vec<String>,
    /// v5 user properties.
    pub user_properties: UserProperties,
}

/// UNSUBACK (reasons are sent only in v5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier.
    pub pkid: u16,
    /// One per filter.
    pub reasons: Vec<u8>,
}

/// DISCONNECT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disconnect {
    /// v5 reason code.
    pub reason: u8,
    /// v5: new session expiry (client to server only).
    pub session_expiry_interval: Option<u32>,
    /// v5 reason string.
    pub reason_string: Option<String>,
    /// v5 server reference.
    pub server_reference: Option<String>,
    /// v5 user properties.
    pub user_properties: UserProperties,
}

/// AUTH (v5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    /// 0x00, 0x18 or 0x19.
    pub reason: u8,
    /// Authentication method.
    pub method: Option<String>,
    /// Authentication data.
    pub data: Option<Bytes>,
    /// Reason string.
    pub reason_string: Option<String>,
    /// User properties.
    pub user_properties: UserProperties,
}

/// Every MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT
    Connect(Box<Connect>),
    /// CONNACK
    ConnAck(ConnAck),
    /// PUBLISH
    Publish(Publish),
    /// PUBACK
    PubAck(Ack),
    /// PUBREC
    PubRec(Ack),
    /// PUBREL
    PubRel(Ack),
    /// PUBCOMP
    PubComp(Ack),
    /// SUBSCRIBE
    Subscribe(Subscribe),
    /// SUBACK
    SubAck(SubAck),
    /// UNSUBSCRIBE
    Unsubscribe(Unsubscribe),
    /// UNSUBACK
    UnsubAck(UnsubAck),
    /// PINGREQ
    PingReq,
    /// PINGRESP
    PingResp,
    /// DISCONNECT
    Disconnect(Disconnect),
    /// AUTH
    Auth(Auth),
}
