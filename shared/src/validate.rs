//! Syntax checks for MQTT topic names, topic filters and shared subscriptions.
//!
//! These run on every PUBLISH and SUBSCRIBE, before anything touches the
//! subscription trie or the store, so they only ever look at bytes: `+`, `#`,
//! `/` and NUL are all ASCII, and UTF-8 never reuses ASCII bytes inside a
//! multi-byte sequence, so byte scanning is both fast and unicode-correct.

/// Upper bound on a topic name or filter in bytes.
///
/// MQTT encodes strings with a 16-bit length prefix, so nothing longer can
/// arrive on the wire; enforcing it here keeps internally built topics (e.g.
/// from the RocketMQ side) within what an MQTT client can be sent.
pub const MAX_TOPIC_LEN: usize = 65_535;

/// The first level that marks an MQTT 5 shared subscription.
const SHARE_LEVEL: &str = "$share";

/// A `$share/{group}/{filter}` subscription split into its parts.
///
/// Borrowed so that SUBSCRIBE handling can route on the group without
/// allocating; callers that keep it around copy the two strings themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SharedFilter<'a> {
    /// Share name: subscribers with the same group and filter split the
    /// messages between them instead of each receiving a copy.
    pub group: &'a str,
    /// The topic filter the group subscribes to; this, not the whole
    /// `$share/...` string, is what gets matched against topic names.
    pub filter: &'a str,
}

/// Whether `s` may be used as the topic of a PUBLISH.
///
/// Wildcards are rejected because a message must have exactly one topic for
/// filters to be matched against; NUL is rejected because the MQTT spec
/// forbids it and C-string based tooling would truncate at it.
pub fn valid_topic_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_TOPIC_LEN && !s.bytes().any(|b| matches!(b, b'+' | b'#' | 0))
}

/// Whether `s` may be used as a SUBSCRIBE / UNSUBSCRIBE topic filter,
/// including `$share/{group}/{filter}` shared subscriptions.
///
/// Anything whose first level is `$share` is treated as a shared
/// subscription, so a malformed one (`$share`, `$share/g`, `$share//a`) is
/// rejected rather than silently subscribed to as a literal topic the client
/// never meant.
pub fn valid_topic_filter(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_TOPIC_LEN || s.as_bytes().contains(&0) {
        return false;
    }
    if !is_share_level(s) {
        return valid_plain_filter(s);
    }
    match parse_shared(s) {
        Some(shared) => valid_share_group(shared.group) && valid_plain_filter(shared.filter),
        None => false,
    }
}

/// Splits a `$share/{group}/{filter}` string into group and filter.
///
/// Returns `None` when `s` is not a shared subscription, and also when it
/// starts like one but lacks the group/filter separator. It only splits: the
/// group and filter may still be invalid (`$share//a` yields an empty group),
/// so untrusted input must go through [`valid_topic_filter`] first.
pub fn parse_shared(s: &str) -> Option<SharedFilter<'_>> {
    let rest = s.strip_prefix(SHARE_LEVEL)?.strip_prefix('/')?;
    let (group, filter) = rest.split_once('/')?;
    Some(SharedFilter { group, filter })
}

/// First level exactly `$share`; `$shared/...` or `$sharex` are ordinary
/// `$` topics and must not be mistaken for shared subscriptions.
fn is_share_level(s: &str) -> bool {
    match s.strip_prefix(SHARE_LEVEL) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The group ends at the first `/`, so it cannot contain one; wildcards are
/// forbidden by MQTT 5 (4.8.2) because a group name is an identifier, not a
/// pattern.
fn valid_share_group(group: &str) -> bool {
    !group.is_empty() && !group.bytes().any(|b| matches!(b, b'+' | b'#' | b'/'))
}

/// Filter rules without the `$share` interpretation; used for the inner
/// filter of a shared subscription, which is matched literally.
fn valid_plain_filter(f: &str) -> bool {
    if f.is_empty() {
        return false;
    }
    let mut levels = f.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return false;
        }
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn topic_names() {
        for ok in [
            "a",
            "/",
            "//",
            "sport/tennis/player1",
            "/finance",
            "$SYS/monitor/Clients",
            "$share/g",
            "ünï/cødé/🦀",
            " ",
        ] {
            assert!(valid_topic_name(ok), "{ok:?} should be valid");
        }
        for bad in ["", "a/+", "+", "#", "a/#", "sport+", "a\0b", "a#b"] {
            assert!(!valid_topic_name(bad), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn topic_name_length_limit() {
        assert!(valid_topic_name(&"a".repeat(MAX_TOPIC_LEN)));
        assert!(!valid_topic_name(&"a".repeat(MAX_TOPIC_LEN + 1)));
        // The limit is in bytes, not chars: 21845 * 3 bytes = 65535.
        assert!(valid_topic_name(&"€".repeat(21_845)));
        assert!(!valid_topic_name(&"€".repeat(21_846)));
    }

    #[test]
    fn topic_filters_spec_examples() {
        for ok in [
            "sport/tennis/player1/#",
            "sport/#",
            "#",
            "+",
            "+/tennis/#",
            "sport/+/player1",
            "+/+",
            "/+",
            "/#",
            "//",
            "$SYS/#",
            "$SYS/monitor/+",
            "a/+/+/#",
            "$shared/g/a",
            "$sharex",
        ] {
            assert!(valid_topic_filter(ok), "{ok:?} should be valid");
        }
        for bad in [
            "",
            "sport/tennis#",
            "sport/tennis/#/ranking",
            "sport+",
            "#/a",
            "##",
            "++",
            "a/+b",
            "a/b+",
            "a\0",
        ] {
            assert!(!valid_topic_filter(bad), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn topic_filter_length_limit() {
        let at_limit = format!("{}/#", "a".repeat(MAX_TOPIC_LEN - 2));
        assert!(valid_topic_filter(&at_limit));
        let over = format!("{}/#", "a".repeat(MAX_TOPIC_LEN - 1));
        assert!(!valid_topic_filter(&over));
    }

    #[test]
    fn shared_filters() {
        for ok in [
            "$share/g/a",
            "$share/g/#",
            "$share/g/+",
            "$share/g/a/b/+/#",
            "$share/g//",
            "$share/group-1/$SYS/#",
            "$share/g/$share/h/a",
        ] {
            assert!(valid_topic_filter(ok), "{ok:?} should be valid");
        }
        for bad in [
            "$share",
            "$share/",
            "$share/g",
            "$share//a",
            "$share/g/",
            "$share/g+/a",
            "$share/+/a",
            "$share/#/a",
            "$share/g#/a",
            "$share/g/a#",
            "$share/g/#/a",
            "$share/g/sport+",
        ] {
            assert!(!valid_topic_filter(bad), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn parse_shared_splits() {
        assert_eq!(
            parse_shared("$share/g/a/b"),
            Some(SharedFilter {
                group: "g",
                filter: "a/b"
            })
        );
        assert_eq!(
            parse_shared("$share/g/#"),
            Some(SharedFilter {
                group: "g",
                filter: "#"
            })
        );
        // Structural split only; validity is valid_topic_filter's job.
        assert_eq!(
            parse_shared("$share//a"),
            Some(SharedFilter {
                group: "",
                filter: "a"
            })
        );
        for not_shared in [
            "a/b",
            "$shared/g/a",
            "$SHARE/g/a",
            "$share",
            "$share/g",
            "#",
        ] {
            assert_eq!(parse_shared(not_shared), None, "{not_shared:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = valid_topic_name(&s);
            let _ = valid_topic_filter(&s);
            let _ = parse_shared(&s);
        }

        /// A plain topic name is a filter without wildcards, so (outside the
        /// `$share` namespace) every valid name must be a valid filter.
        #[test]
        fn names_are_filters(
            levels in prop::collection::vec("[ab$€+#]{0,3}", 1..5)
        ) {
            let s = levels.join("/");
            if valid_topic_name(&s) && !is_share_level(&s) {
                prop_assert!(valid_topic_filter(&s));
            }
        }

        /// Every valid shared filter is exactly `$share/` + valid group +
        /// `/` + valid plain filter.
        #[test]
        fn shared_validity_is_compositional(
            group in "[ab+#]{0,2}",
            filter in prop::collection::vec("[ab+#]{0,2}", 0..4),
        ) {
            let filter = filter.join("/");
            let s = format!("$share/{group}/{filter}");
            let expected = !group.is_empty()
                && !group.contains(['+', '#'])
                && valid_plain_filter(&filter);
            prop_assert_eq!(valid_topic_filter(&s), expected);
        }
    }
}
