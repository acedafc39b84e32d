//! Mapping between MQTT topics and RocketMQ (topic, tag) pairs.
//!
//! Messages are stored RocketMQ-style so that RocketMQ clients can consume
//! them. RocketMQ topics are a flat, small namespace with a restricted
//! charset, while MQTT topics are arbitrary hierarchies, so:
//!
//! - RocketMQ topic = first MQTT level, percent-encoded into RocketMQ's
//!   charset ([`rocketmq_topic_of`]). One RocketMQ topic per first level keeps
//!   the number of topics (and of ConsumeQueues) small.
//! - tag = second MQTT level, raw, so RocketMQ consumers can filter by it
//!   server-side with ordinary tag expressions.
//! - The full MQTT topic travels in the [`MQTT_TOPIC_PROPERTY`] message
//!   property, because topic + tag alone only preserves two levels.

/// Message property holding the full MQTT topic of a stored message.
///
/// The broker should always set it when storing an MQTT publish: without
/// it, [`from_rocketmq`] can only rebuild the first two levels.
pub const MQTT_TOPIC_PROPERTY: &str = "MQTT_TOPIC";

/// RocketMQ's limit on topic names (`TopicValidator.TOPIC_MAX_LENGTH`).
pub const ROCKETMQ_TOPIC_MAX_LEN: usize = 127;

/// Where an MQTT publish is stored on the RocketMQ side.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RocketTarget {
    /// Encoded first level; check it with [`valid_rocketmq_topic`] before
    /// use, since an empty or long first level maps to an invalid name.
    pub topic: String,
    /// Second level verbatim; `None` for a one-level topic, `Some("")` for
    /// `a/` or `a//b`, so the two cases stay distinguishable.
    pub tag: Option<String>,
}

/// Bytes RocketMQ accepts in topic names and that we keep as they are.
/// `%` is also accepted by RocketMQ but is our escape character.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'|' | b'_' | b'-')
}

/// RocketMQ topic name for an MQTT first level.
///
/// Every byte outside `[|a-zA-Z0-9_-]` becomes `%XX` (uppercase hex of the
/// UTF-8 byte), `%` included, so the encoding is injective and reversed
/// exactly by [`first_level_of`]. A side effect is that encoded names never
/// start with `%RETRY%` or `%DLQ%`, RocketMQ's reserved prefixes.
pub fn rocketmq_topic_of(first_level: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(first_level.len());
    for b in first_level.bytes() {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0F)]));
        }
    }
    out
}

/// MQTT first level for a RocketMQ topic name: the inverse of
/// [`rocketmq_topic_of`].
///
/// Topics created by native RocketMQ clients were never encoded, so decoding
/// is lenient instead of failing: a `%` not followed by two hex digits is
/// kept literally, and if the decoded bytes are not UTF-8 the name is
/// returned unchanged.
pub fn first_level_of(rocketmq_topic: &str) -> String {
    if !rocketmq_topic.contains('%') {
        return rocketmq_topic.to_owned();
    }
    let bytes = rocketmq_topic.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).and_then(|&b| hex_value(b));
            let lo = bytes.get(i + 2).and_then(|&b| hex_value(b));
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| rocketmq_topic.to_owned())
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// RocketMQ topic and tag under which to store a publish to `mqtt_topic`.
pub fn to_rocketmq(mqtt_topic: &str) -> RocketTarget {
    let mut levels = mqtt_topic.splitn(3, '/');
    let first = levels.next().unwrap_or_default();
    RocketTarget {
        topic: rocketmq_topic_of(first),
        tag: levels.next().map(str::to_owned),
    }
}

/// MQTT topic under which to deliver a stored message.
///
/// The [`MQTT_TOPIC_PROPERTY`] value wins when present and non-empty (an
/// empty MQTT topic is invalid, so an empty property can only be noise).
/// Otherwise the topic is rebuilt as `first_level_of(topic)/tag`, or just the
/// decoded topic without a tag: exact for MQTT topics of at most two levels,
/// and the natural mapping for messages from native RocketMQ producers.
///
/// The result is not validated: a native message may decode to something
/// that is not a valid MQTT topic name (e.g. with `+` in its tag), so check
/// it with [`crate::valid_topic_name`] before delivering.
pub fn from_rocketmq(topic: &str, tag: Option<&str>, mqtt_topic_property: Option<&str>) -> String {
    if let Some(mqtt_topic) = mqtt_topic_property.filter(|t| !t.is_empty()) {
        return mqtt_topic.to_owned();
    }
    let mut mqtt_topic = first_level_of(topic);
    if let Some(tag) = tag {
        mqtt_topic.push('/');
        mqtt_topic.push_str(tag);
    }
    mqtt_topic
}

/// Queue (of `queue_count`) that messages on `mqtt_topic` go to.
///
/// Messages of one MQTT topic must stay in order, so they all go to one
/// queue, chosen by hashing the full MQTT topic. The hash is FNV-1a 32 over
/// the UTF-8 bytes, followed by MurmurHash3's 32-bit finalizer (`fmix32`),
/// then `% queue_count`. The finalizer matters: FNV-1a's low `n` bits depend
/// only on the low `n` bits of each input byte, and queue counts are usually
/// powers of two, so plain FNV-1a would put e.g. `x/0` and `x/@` on the same
/// queue for any count up to 16. Both functions are fully specified and
/// platform independent. Changing them reorders every stored topic across
/// queues, so they are pinned by tests and must not change between releases.
///
/// Returns 0 when `queue_count` is 0, so a misconfigured topic surfaces as an
/// error on queue 0 rather than as a panic.
pub fn queue_for(mqtt_topic: &str, queue_count: u32) -> u32 {
    if queue_count == 0 {
        return 0;
    }
    fmix32(fnv1a32(mqtt_topic.as_bytes())) % queue_count
}

fn fnv1a32(bytes: &[u8]) -> u32 {
    const OFFSET_BASIS: u32 = 0x811C_9DC5;
    const PRIME: u32 = 0x0100_0193;
    bytes
        .iter()
        .fold(OFFSET_BASIS, |h, &b| (h ^ u32::from(b)).wrapping_mul(PRIME))
}

fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^= h >> 16;
    h
}

/// Whether RocketMQ accepts `s` as a topic name: 1 to 127 characters from
/// `[%|a-zA-Z0-9_-]`, as RocketMQ's `TopicValidator` checks.
///
/// Reserved system names (`TBW102`, `SCHEDULE_TOPIC_XXXX`, `RMQ_SYS_...`)
/// are not rejected here; that policy belongs to the caller.
pub fn valid_rocketmq_topic(s: &str) -> bool {
    (1..=ROCKETMQ_TOPIC_MAX_LEN).contains(&s.len())
        && s.bytes().all(|b| b == b'%' || is_unreserved(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_first_level_only() {
        assert_eq!(
            to_rocketmq("sport/tennis/player1"),
            RocketTarget {
                topic: "sport".into(),
                tag: Some("tennis".into())
            }
        );
        assert_eq!(
            to_rocketmq("sport"),
            RocketTarget {
                topic: "sport".into(),
                tag: None
            }
        );
        assert_eq!(to_rocketmq("sport/").tag.as_deref(), Some(""));
        assert_eq!(to_rocketmq("a//b").tag.as_deref(), Some(""));
        // The tag is raw, even with characters that get encoded in topics.
        assert_eq!(to_rocketmq("a/ü b").tag.as_deref(), Some("ü b"));
        let t = to_rocketmq("/finance");
        assert_eq!(t.topic, "");
        assert!(!valid_rocketmq_topic(&t.topic));
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(rocketmq_topic_of("Abc_1-2|x"), "Abc_1-2|x");
        assert_eq!(rocketmq_topic_of("$SYS"), "%24SYS");
        assert_eq!(rocketmq_topic_of("100%"), "100%25");
        assert_eq!(rocketmq_topic_of("a b.c"), "a%20b%2Ec");
        assert_eq!(rocketmq_topic_of("ü"), "%C3%BC");
        assert_eq!(rocketmq_topic_of("🦀"), "%F0%9F%A6%80");
        assert_eq!(rocketmq_topic_of("%RETRY%g"), "%25RETRY%25g");
        assert_eq!(rocketmq_topic_of(""), "");
        assert_eq!(first_level_of("%24SYS"), "$SYS");
        assert_eq!(first_level_of("%C3%BC"), "ü");
    }

    #[test]
    fn lenient_decoding_of_native_topics() {
        assert_eq!(first_level_of("TopicTest"), "TopicTest");
        assert_eq!(first_level_of("%RETRY%group"), "%RETRY%group");
        assert_eq!(first_level_of("%DLQ%group"), "%DLQ%group");
        assert_eq!(first_level_of("a%"), "a%");
        assert_eq!(first_level_of("a%4"), "a%4");
        assert_eq!(first_level_of("%c3%bc"), "ü");
        // Not UTF-8 once decoded: keep the name as it is.
        assert_eq!(first_level_of("%FF"), "%FF");
        assert_eq!(first_level_of("%C3"), "%C3");
    }

    #[test]
    fn from_rocketmq_prefers_property() {
        assert_eq!(from_rocketmq("a", Some("b"), Some("a/b/c")), "a/b/c");
        assert_eq!(from_rocketmq("a", Some("b"), Some("")), "a/b");
        assert_eq!(from_rocketmq("a", Some("b"), None), "a/b");
        assert_eq!(from_rocketmq("a", Some(""), None), "a/");
        assert_eq!(from_rocketmq("a", None, None), "a");
        assert_eq!(from_rocketmq("%24SYS", Some("x"), None), "$SYS/x");
        assert_eq!(
            from_rocketmq("TopicTest", Some("TagA"), None),
            "TopicTest/TagA"
        );
    }

    #[test]
    fn rocketmq_topic_validity() {
        assert!(valid_rocketmq_topic("TopicTest"));
        assert!(valid_rocketmq_topic("%RETRY%g"));
        assert!(valid_rocketmq_topic("a|b_c-9"));
        assert!(valid_rocketmq_topic(&"a".repeat(127)));
        assert!(!valid_rocketmq_topic(&"a".repeat(128)));
        assert!(!valid_rocketmq_topic(""));
        assert!(!valid_rocketmq_topic("a/b"));
        assert!(!valid_rocketmq_topic("a.b"));
        assert!(!valid_rocketmq_topic("ü"));
    }

    #[test]
    fn hash_is_pinned() {
        // Published FNV-1a 32 test vectors.
        assert_eq!(fnv1a32(b""), 0x811C_9DC5);
        assert_eq!(fnv1a32(b"a"), 0xE40C_292C);
        assert_eq!(fnv1a32(b"foobar"), 0xBF9C_F968);
        // MurmurHash3 fmix32 fixes zero and is a bijection.
        assert_eq!(fmix32(0), 0);
        // Stored data depends on these: they must never change.
        let pinned: Vec<u32> = [
            "a",
            "sport/tennis/player1",
            "$SYS/x",
            "dev/42/telemetry",
            "🦀",
        ]
        .iter()
        .map(|t| fmix32(fnv1a32(t.as_bytes())))
        .collect();
        assert_eq!(pinned, PINNED);
        assert_eq!(queue_for("sport/tennis/player1", 8), PINNED[1] % 8);
    }

    /// Computed independently (Python reference implementation) for
    /// `a`, `sport/tennis/player1`, `$SYS/x`, `dev/42/telemetry`, `🦀`.
    const PINNED: [u32; 5] = [
        0x1A80_B1B3,
        0x13F4_F37C,
        0xADA6_1C31,
        0x392F_72B5,
        0x5C27_A7AB,
    ];

    #[test]
    fn zero_queues() {
        assert_eq!(queue_for("a", 0), 0);
        assert_eq!(queue_for("a", 1), 0);
    }

    #[test]
    fn spreads_similar_topics() {
        for queues in [4u32, 8, 16, 7] {
            let mut counts = vec![0u32; queues as usize];
            let n = 16_000;
            for i in 0..n {
                counts[queue_for(&format!("dev/{i}/telemetry"), queues) as usize] += 1;
            }
            let expected = n / queues;
            for (q, &c) in counts.iter().enumerate() {
                assert!(
                    c.abs_diff(expected) < expected / 10,
                    "queue {q} of {queues} got {c}, expected about {expected}"
                );
            }
        }
        // Plain FNV-1a puts these on the same queue (`0` and `@` share their
        // low nibble); the finalizer separates them.
        assert_eq!(fnv1a32(b"x/0") % 16, fnv1a32(b"x/@") % 16);
        assert_ne!(queue_for("x/0", 16), queue_for("x/@", 16));
    }

    proptest! {
        #[test]
        fn encoding_round_trips(level in any::<String>()) {
            let encoded = rocketmq_topic_of(&level);
            prop_assert!(encoded.bytes().all(|b| b == b'%' || is_unreserved(b)));
            prop_assert_eq!(first_level_of(&encoded), level);
        }

        #[test]
        fn encoded_names_are_valid_when_short_enough(level in "\\PC{1,50}") {
            let encoded = rocketmq_topic_of(&level);
            prop_assert_eq!(valid_rocketmq_topic(&encoded), encoded.len() <= ROCKETMQ_TOPIC_MAX_LEN);
        }

        /// Without the property, topic + tag rebuild exactly the MQTT topics
        /// of one or two levels, whatever their characters.
        #[test]
        fn up_to_two_levels_round_trip_without_property(
            first in "[^/]*",
            second in proptest::option::of("[^/]*"),
        ) {
            let topic = match &second {
                Some(second) => format!("{first}/{second}"),
                None => first.clone(),
            };
            let target = to_rocketmq(&topic);
            prop_assert_eq!(from_rocketmq(&target.topic, target.tag.as_deref(), None), topic);
        }

        /// Deeper topics keep only their first two levels without the
        /// property, which is why the broker always sets it.
        #[test]
        fn deeper_topics_need_the_property(
            levels in prop::collection::vec("[^/]{0,4}", 3..6),
        ) {
            let topic = levels.join("/");
            let target = to_rocketmq(&topic);
            let rebuilt = from_rocketmq(&target.topic, target.tag.as_deref(), None);
            prop_assert_eq!(rebuilt, format!("{}/{}", levels[0], levels[1]));
            let with_property = from_rocketmq(&target.topic, target.tag.as_deref(), Some(&topic));
            prop_assert_eq!(with_property, topic);
        }

        #[test]
        fn first_level_of_never_panics(s in any::<String>()) {
            let _ = first_level_of(&s);
        }

        #[test]
        fn queue_in_range(topic in any::<String>(), queues in 1u32..1024) {
            prop_assert!(queue_for(&topic, queues) < queues);
        }
    }
}
