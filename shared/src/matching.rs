//! Matching a single topic name against a single topic filter.
//!
//! This is the reference semantics: [`crate::SubscriptionTrie`] must agree
//! with [`matches()`] on every input (the trie's property tests check exactly
//! that), so any rule change has to be made in both places.

/// Whether the topic name `topic` is matched by the topic filter `filter`
/// (MQTT 5 section 4.7).
///
/// - `+` matches exactly one level, including an empty one.
/// - `#` as the last level matches its parent level and everything below,
///   so `a/#` matches `a`, `a/` and `a/b/c`.
/// - Topics starting with `$` (e.g. `$SYS/...`) are not matched by a filter
///   whose first level is a wildcard, so that `#` subscribers do not receive
///   broker-internal traffic.
///
/// `filter` must be a plain filter: strip `$share/{group}/` with
/// [`crate::parse_shared`] first. The inputs are meant to be validated, but
/// anything is accepted without panicking, with fixed rules so that the trie
/// can mirror them: a `#` that is not the last level is compared literally,
/// `+` is always a wildcard, and wildcard characters inside a topic name are
/// plain characters.
pub fn matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') {
        let first = filter.split('/').next().unwrap_or_default();
        // A first-level `#` is only the wildcard when nothing follows it.
        if first == "+" || (first == "#" && filter.len() == 1) {
            return false;
        }
    }
    let mut topic_levels = topic.split('/');
    let mut filter_levels = filter.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) if filter_levels.clone().next().is_none() => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[track_caller]
    fn yes(topic: &str, filter: &str) {
        assert!(matches(topic, filter), "{filter:?} should match {topic:?}");
    }

    #[track_caller]
    fn no(topic: &str, filter: &str) {
        assert!(
            !matches(topic, filter),
            "{filter:?} should not match {topic:?}"
        );
    }

    #[test]
    fn spec_multi_level_wildcard() {
        let f = "sport/tennis/player1/#";
        yes("sport/tennis/player1", f);
        yes("sport/tennis/player1/ranking", f);
        yes("sport/tennis/player1/score/wimbledon", f);
        no("sport/tennis/player2", f);
        no("sport/tennis", f);
        yes("sport", "sport/#");
        yes("sport/", "sport/#");
        yes("anything/at/all", "#");
        yes("/", "#");
    }

    #[test]
    fn spec_single_level_wildcard() {
        yes("sport/tennis/player1", "sport/tennis/+");
        yes("sport/tennis/player2", "sport/tennis/+");
        no("sport/tennis/player1/ranking", "sport/tennis/+");
        yes("sport/", "sport/+");
        no("sport", "sport/+");
        yes("/finance", "+/+");
        yes("/finance", "/+");
        no("/finance", "+");
        yes("sport/tennis/player1/ranking", "+/tennis/#");
        yes("sport/tennis/player1", "sport/+/player1");
    }

    #[test]
    fn spec_dollar_topics() {
        no("$SYS/monitor/Clients", "#");
        no("$SYS/monitor/Clients", "+/monitor/Clients");
        yes("$SYS/monitor/Clients", "$SYS/#");
        yes("$SYS/monitor/Clients", "$SYS/monitor/+");
        yes("$SYS", "$SYS/#");
        no("$SYS", "+");
        // Only the first level is special.
        yes("a/$SYS", "a/+");
        yes("a/$SYS", "#");
    }

    #[test]
    fn exact_and_edge_cases() {
        yes("a/b", "a/b");
        no("a/b", "a/b/c");
        no("a/b/c", "a/b");
        no("a", "b");
        yes("a//b", "a/+/b");
        no("a/b", "a/b/");
        yes("a/b/", "a/b/+");
        // Case sensitive, byte exact.
        no("A", "a");
        yes("ünï/🦀", "ünï/+");
        yes("ünï/🦀/x", "+/🦀/#");
    }

    #[test]
    fn invalid_inputs_follow_fixed_rules() {
        // A non-final `#` is literal.
        no("a/x/b", "a/#/b");
        yes("a/#/b", "a/#/b");
        // `sport+` is not a wildcard level.
        no("sport1", "sport+");
        yes("sport+", "sport+");
        // `#/a` on a `$` topic: its first level is literal, not a wildcard.
        no("$x/a", "#/a");
        no("", "a");
        yes("", "");
        yes("", "+");
        yes("", "#");
    }

    proptest! {
        #[test]
        fn never_panics(topic in any::<String>(), filter in any::<String>()) {
            let _ = matches(&topic, &filter);
        }

        /// A topic name used as a filter matches exactly itself.
        #[test]
        fn literal_filter_matches_itself(
            a in prop::collection::vec("[ab$€]{0,2}", 1..5),
            b in prop::collection::vec("[ab$€]{0,2}", 1..5),
        ) {
            let (a, b) = (a.join("/"), b.join("/"));
            prop_assert_eq!(matches(&a, &b), a == b);
        }

        /// Replacing the tail of a topic with `#` always matches, unless the
        /// `$` rule kicks in at the first level.
        #[test]
        fn hash_suffix_matches(
            levels in prop::collection::vec("[ab$]{0,2}", 1..5),
            keep in 0usize..5,
        ) {
            let topic = levels.join("/");
            let keep = keep.min(levels.len());
            let mut filter: Vec<&str> = levels[..keep].iter().map(String::as_str).collect();
            filter.push("#");
            let filter = filter.join("/");
            let expected = !(keep == 0 && topic.starts_with('$'));
            prop_assert_eq!(matches(&topic, &filter), expected);
        }
    }
}
