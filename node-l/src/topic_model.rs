//! MQTT message ↔ stored RocketMQ message, as the design's topic model says:
//! RocketMQ topic = first MQTT level (percent-encoded), tag = second level,
//! the full topic in `MQTT_TOPIC`, QoS, retain and MQTT 5 properties as
//! message properties (binary values base64), queue = hash(full topic) mod N.

use base64::Engine;
use bytes::Bytes;
use ferrymq_shared::boundary::{LogError, MqttMessage, MqttProps};
use ferrymq_shared::{to_rocketmq, valid_rocketmq_topic};
use shared_store::message::property;
use shared_store::{Message, Properties};

/// Property names this module writes.
pub mod prop {
    /// QoS as published ("0", "1", "2").
    pub const QOS: &str = "MQTT_QOS";
    /// "1" when published with the retain flag.
    pub const RETAIN: &str = "MQTT_RETAIN";
    /// Publishing client id.
    pub const CLIENT_ID: &str = "MQTT_CLIENT_ID";
    /// Payload format indicator.
    pub const PAYLOAD_FORMAT: &str = "MQTT_PAYLOAD_FORMAT";
    /// Message expiry interval (s), counted from the store timestamp.
    pub const MESSAGE_EXPIRY: &str = "MQTT_MESSAGE_EXPIRY";
    /// Content type.
    pub const CONTENT_TYPE: &str = "MQTT_CONTENT_TYPE";
    /// Response topic.
    pub const RESPONSE_TOPIC: &str = "MQTT_RESPONSE_TOPIC";
    /// Correlation data, base64.
    pub const CORRELATION_DATA: &str = "MQTT_CORRELATION_DATA";
    /// Every user property in order, `k=v&k=v` with `%`, `=`, `&` escaped:
    /// the exact list (names may repeat), while each pair is also a plain
    /// property for RocketMQ consumers.
    pub const USER_PROPS: &str = "MQTT_USER_PROPS";
}

/// Prefix of light queues holding persistent sessions' messages.
pub const SESSION_QUEUE_PREFIX: &str = "%LMQ%";
/// Light queue indexing every retained publish (the retained table's log).
pub const RETAINED_QUEUE: &str = "%LMQ%$retained";
/// Topic of the session table's change events.
pub const SESSION_TOPIC: &str = "rmq_sys_ferrymq_session";

/// RocketMQ's own topics: an MQTT first level may not write into them.
const SYSTEM_TOPICS: &[&str] = &[
    "TBW102",
    "SCHEDULE_TOPIC_XXXX",
    "BenchmarkTest",
    "OFFSET_MOVED_EVENT",
    "SELF_TEST_TOPIC",
    "DefaultCluster",
    "TRANS_CHECK_MAX_TIME_TOPIC",
];

/// Property names an MQTT user property may not take over.
fn reserved_property(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "KEYS",
        "TAGS",
        "WAIT",
        "DELAY",
        "RETRY_TOPIC",
        "REAL_TOPIC",
        "REAL_QID",
        "TRAN_MSG",
        "PGROUP",
        "MIN_OFFSET",
        "MAX_OFFSET",
        "BUYER_ID",
        "ORIGIN_MESSAGE_ID",
        "TRANSFER_FLAG",
        "CORRECTION_FLAG",
        "MQ2_FLAG",
        "RECONSUME_TIME",
        "MSG_REGION",
        "TRACE_ON",
        "UNIQ_KEY",
        "MAX_RECONSUME_TIMES",
        "CONSUME_START_TIME",
        "TRAN_PREPARED_QUEUE_OFFSET",
        "TRANSACTION_CHECK_TIMES",
        "CHECK_IMMUNITY_TIME_IN_SECONDS",
        "INSTANCE_ID",
        "CORRELATION_ID",
        "REPLY_TO_CLIENT",
        "TTL",
        "ARRIVE_TIME",
        "PUSH_REPLY_TIME",
        "CLUSTER",
        "MSG_TYPE",
        "SHARDING_KEY",
    ];
    NAMES.contains(&name)
        || name == property::UNIQ_KEY
        || name.starts_with("MQTT_")
        || name.starts_with("INNER_")
        || name.starts_with("__")
        || name.starts_with("TIMER_")
}

/// Whether a RocketMQ topic belongs to RocketMQ or ferrymq itself.
pub fn is_system_topic(topic: &str) -> bool {
    SYSTEM_TOPICS.contains(&topic)
        || topic.starts_with("rmq_sys_")
        || topic.starts_with("RMQ_SYS_")
        || topic.starts_with("%RETRY%")
        || topic.starts_with("%DLQ%")
        || topic.starts_with(SESSION_QUEUE_PREFIX)
}

/// The RocketMQ (topic, tag) an MQTT topic is stored under, or why it cannot be.
pub fn rocketmq_target(mqtt_topic: &str) -> Result<(String, Option<String>), LogError> {
    let t = to_rocketmq(mqtt_topic);
    if !valid_rocketmq_topic(&t.topic) {
        return Err(LogError::TopicInvalid(format!(
            "{mqtt_topic:?}: first level maps to {:?}, not a valid RocketMQ topic (empty or over 127 characters)",
            t.topic
        )));
    }
    if is_system_topic(&t.topic) {
        return Err(LogError::TopicInvalid(format!(
            "{mqtt_topic:?}: first level names the system topic {}",
            t.topic
        )));
    }
    // A tag of `*` or with `||` would read as a tag expression on the RocketMQ
    // side: such messages are stored untagged (MQTT_TOPIC still has it all).
    let tag = t
        .tag
        .filter(|g| !g.is_empty() && g != "*" && !g.contains("||"));
    Ok((t.topic, tag))
}

/// Light queue of a persistent session. Client ids are percent-encoded like
/// topics (they may hold `/`, which cannot name a directory); very long ids are
/// shortened with a hash so the name fits RocketMQ's 127 characters.
pub fn session_queue(client_id: &str) -> String {
    let enc = ferrymq_shared::rocketmq_topic_of(client_id);
    if SESSION_QUEUE_PREFIX.len() + enc.len() <= 120 {
        return format!("{SESSION_QUEUE_PREFIX}{enc}");
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in client_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let head: String = enc.chars().take(80).collect();
    format!("{SESSION_QUEUE_PREFIX}{head}~{h:016x}")
}

fn storable(what: &str, s: &str) -> Result<(), LogError> {
    if s.contains(['\u{1}', '\u{2}']) {
        return Err(LogError::PropertyInvalid(format!(
            "{what} contains U+0001 or U+0002, the stored format's separators"
        )));
    }
    Ok(())
}

fn escape_pair_part(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '=' => out.push_str("%3D"),
            '&' => out.push_str("%26"),
            c => out.push(c),
        }
    }
}

fn unescape_pair_part(s: &str) -> String {
    s.replace("%3D", "=")
        .replace("%26", "&")
        .replace("%25", "%")
}

fn encode_user_props(user: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in user.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        escape_pair_part(k, &mut out);
        out.push('=');
        escape_pair_part(v, &mut out);
    }
    out
}

fn decode_user_props(s: &str) -> Vec<(String, String)> {
    if s.is_empty() {
        return Vec::new();
    }
    s.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (unescape_pair_part(k), unescape_pair_part(v)),
            None => (unescape_pair_part(pair), String::new()),
        })
        .collect()
}

/// The store message for an MQTT publish, in `queue_id` of its topic.
pub fn to_store_message(
    m: &MqttMessage,
    rocket_topic: String,
    tag: Option<String>,
    queue_id: i32,
) -> Result<Message, LogError> {
    storable("topic", &m.topic)?;
    let mut msg = Message::new(rocket_topic, queue_id, m.payload.clone());
    let p = &mut msg.properties;
    if let Some(tag) = tag {
        p.insert(property::TAGS, tag);
    }
    p.insert(property::MQTT_TOPIC, m.topic.clone());
    p.insert(prop::QOS, m.qos.to_string());
    if m.retain {
        p.insert(prop::RETAIN, "1");
    }
    if let Some(c) = &m.publisher {
        storable("client id", c)?;
        p.insert(prop::CLIENT_ID, c.clone());
    }
    let mp = &m.props;
    if let Some(f) = mp.payload_format {
        p.insert(prop::PAYLOAD_FORMAT, f.to_string());
    }
    if let Some(e) = mp.message_expiry {
        p.insert(prop::MESSAGE_EXPIRY, e.to_string());
    }
    if let Some(c) = &mp.content_type {
        storable("content type", c)?;
        p.insert(prop::CONTENT_TYPE, c.clone());
    }
    if let Some(r) = &mp.response_topic {
        storable("response topic", r)?;
        p.insert(prop::RESPONSE_TOPIC, r.clone());
    }
    if let Some(d) = &mp.correlation_data {
        p.insert(
            prop::CORRELATION_DATA,
            base64::engine::general_purpose::STANDARD.encode(d),
        );
    }
    if !mp.user.is_empty() {
        for (k, v) in &mp.user {
            storable("user property", k)?;
            storable("user property", v)?;
        }
        p.insert(prop::USER_PROPS, encode_user_props(&mp.user));
        for (k, v) in &mp.user {
            if !k.is_empty() && !reserved_property(k) && p.get(k).is_none() {
                p.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(msg)
}

/// The MQTT view of a RocketMQ message (stored, or about to be). Messages that came from RocketMQ
/// producers have no `MQTT_TOPIC`: their topic is `T/tag` or `T`, their QoS 1,
/// and their non-system properties become user properties.
pub fn from_message(m: &Message) -> MqttMessage {
    let props: &Properties = &m.properties;
    let topic = ferrymq_shared::from_rocketmq(
        &m.topic,
        props.get(property::TAGS),
        props.get(property::MQTT_TOPIC),
    );
    let qos = props
        .get(prop::QOS)
        .and_then(|q| q.parse::<u8>().ok())
        .filter(|q| *q <= 2)
        .unwrap_or(1);
    let user = match props.get(prop::USER_PROPS) {
        Some(u) => decode_user_props(u),
        None if props.get(property::MQTT_TOPIC).is_none() => props
            .iter()
            .filter(|(k, _)| !reserved_property(k))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        None => Vec::new(),
    };
    MqttMessage {
        topic,
        payload: m.body.clone(),
        qos,
        retain: props.get(prop::RETAIN) == Some("1"),
        props: MqttProps {
            payload_format: props.get(prop::PAYLOAD_FORMAT).and_then(|v| v.parse().ok()),
            message_expiry: props.get(prop::MESSAGE_EXPIRY).and_then(|v| v.parse().ok()),
            content_type: props.get(prop::CONTENT_TYPE).map(str::to_owned),
            response_topic: props.get(prop::RESPONSE_TOPIC).map(str::to_owned),
            correlation_data: props.get(prop::CORRELATION_DATA).and_then(|v| {
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .ok()
                    .map(Bytes::from)
            }),
            user,
        },
        publisher: props.get(prop::CLIENT_ID).map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MqttMessage {
        MqttMessage {
            topic: "orders/paid/eu".into(),
            payload: Bytes::from_static(b"{\"id\":1}"),
            qos: 1,
            retain: true,
            props: MqttProps {
                payload_format: Some(1),
                message_expiry: Some(60),
                content_type: Some("application/json".into()),
                response_topic: Some("reply/x".into()),
                correlation_data: Some(Bytes::from_static(&[0, 1, 2, 255])),
                user: vec![
                    ("region".into(), "eu".into()),
                    ("region".into(), "us".into()),
                    ("a=b&c".into(), "100%".into()),
                    ("TAGS".into(), "spoof".into()),
                ],
            },
            publisher: Some("dev-1".into()),
        }
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let m = sample();
        let (t, tag) = rocketmq_target(&m.topic).expect("valid");
        assert_eq!((t.as_str(), tag.as_deref()), ("orders", Some("paid")));
        let msg = to_store_message(&m, t, tag, 3).expect("storable");
        assert_eq!(msg.properties.get("TAGS"), Some("paid"));
        assert_eq!(msg.properties.get("region"), Some("eu"));
        assert_eq!(msg.properties.get("MQTT_TOPIC"), Some("orders/paid/eu"));
        assert_eq!(from_message(&msg), m);
    }

    #[test]
    fn unstorable_topics_are_refused() {
        for t in ["/finance", "TBW102/x", "rmq_sys_ferrymq_session/x"] {
            assert!(
                matches!(rocketmq_target(t), Err(LogError::TopicInvalid(_))),
                "{t}"
            );
        }
        let long = "x".repeat(200);
        assert!(rocketmq_target(&long).is_err());
        assert_eq!(rocketmq_target("a/*").expect("ok").1, None);
        assert_eq!(rocketmq_target("a/x||y/z").expect("ok").1, None);
    }

    #[test]
    fn session_queues_are_valid_store_names() {
        for id in ["plain", "with/slash", &"é".repeat(100)] {
            let q = session_queue(id);
            assert!(q.len() <= 127 && !q.contains('/'), "{q}");
        }
        assert_ne!(session_queue("a/b"), session_queue("a%2Fb"));
    }

    #[test]
    fn rocketmq_produced_messages_read_as_mqtt() {
        let mut msg = Message::new("orders", 0, Bytes::from_static(b"x"));
        msg.properties.insert("TAGS", "paid");
        msg.properties.insert("KEYS", "k1");
        msg.properties.insert("region", "eu");
        let m = from_message(&msg);
        assert_eq!(m.topic, "orders/paid");
        assert_eq!(m.qos, 1);
        assert_eq!(m.props.user, vec![("region".into(), "eu".into())]);
    }
}
