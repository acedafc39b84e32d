//! Subscription index: topic filter -> { subscriber key -> value }.
//!
//! Every PUBLISH asks "who is subscribed to this topic?", so the structure is
//! a trie over filter levels: a lookup only walks the levels of the topic and
//! the branches that can match them (literal child, `+` child, `#` child), and
//! costs nothing for the possibly millions of unrelated filters.
//!
//! Filters and topics come from clients and may be up to 65535 bytes, i.e.
//! over 32000 levels. Walking, pruning and dropping are therefore all
//! iterative: a recursive walk of such a trie would overflow the stack of the
//! task that happened to touch it and abort the whole broker.

use core::borrow::Borrow;
use core::fmt;
use core::hash::Hash;

use hashbrown::HashMap;

/// Maps topic filters to the subscribers (keys) holding them, each with a
/// value such as the granted QoS and subscription options.
///
/// Filters are taken verbatim (no `$share/` handling: store the inner filter
/// and keep the group in `K` or `V`) and should have passed
/// [`crate::valid_topic_filter`]. Invalid filters do not panic; they follow
/// the same fixed rules as [`crate::matches()`], with which
/// [`SubscriptionTrie::for_each_match`] always agrees.
pub struct SubscriptionTrie<K, V> {
    root: Node<K, V>,
    len: usize,
}

/// One filter level. The wildcard children are kept out of `children` so
/// that matching never has to hash the literal strings `+` and `#`, and so
/// that a literal `#` (only possible in an invalid filter) cannot be confused
/// with the wildcard.
struct Node<K, V> {
    children: HashMap<String, Node<K, V>>,
    plus: Option<Box<Node<K, V>>>,
    /// Subscribers of `<this node's path>/#`. `#` is always the last level,
    /// so it needs no node of its own, just the subscriber set.
    hash: Option<Box<Subs<K, V>>>,
    /// Subscribers of the filter ending exactly at this node.
    subs: Option<Box<Subs<K, V>>>,
}

/// The subscribers of one filter. Boxed in [`Node`] because most nodes are
/// interior and should not pay for an empty map and string inline.
struct Subs<K, V> {
    /// The full filter, kept so that match callbacks can report which
    /// subscription fired (needed for subscription identifiers, shared-group
    /// routing and per-subscription options) without rebuilding it from the
    /// path.
    filter: Box<str>,
    entries: HashMap<K, V>,
}

impl<K, V> Node<K, V> {
    fn new() -> Self {
        Node {
            children: HashMap::new(),
            plus: None,
            hash: None,
            subs: None,
        }
    }

    fn child_count(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some())
    }

    fn child(&self, level: &str) -> Option<&Node<K, V>> {
        if level == "+" {
            self.plus.as_deref()
        } else {
            self.children.get(level)
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Node<K, V>> {
        if level == "+" {
            self.plus.as_deref_mut()
        } else {
            self.children.get_mut(level)
        }
    }

    fn child_or_insert(&mut self, level: &str) -> &mut Node<K, V> {
        if level == "+" {
            self.plus.get_or_insert_with(|| Box::new(Node::new()))
        } else {
            self.children.entry_ref(level).or_insert_with(Node::new)
        }
    }

    fn remove_child(&mut self, level: &str) {
        if level == "+" {
            self.plus = None;
        } else {
            self.children.remove(level);
        }
    }
}

impl<K, V> Drop for Node<K, V> {
    /// Dismantles the subtree with an explicit stack; the derived drop glue
    /// would recurse once per level.
    fn drop(&mut self) {
        if self.child_count() == 0 {
            return;
        }
        let mut stack: Vec<Node<K, V>> = Vec::new();
        loop {
            stack.extend(self.children.drain().map(|(_, child)| child));
            if let Some(plus) = self.plus.take() {
                stack.push(*plus);
            }
            // Each popped node has its children moved onto the stack before
            // it is dropped, so its own `drop` finds nothing to recurse into.
            match stack.pop() {
                Some(mut next) => core::mem::swap(self, &mut next),
                None => return,
            }
        }
    }
}

/// Splits a filter into the node path and whether it ends in the `#`
/// wildcard, which lives in the parent's `hash` slot rather than in a node.
fn path_of(filter: &str) -> (Option<&str>, bool) {
    if filter == "#" {
        (None, true)
    } else if let Some(prefix) = filter.strip_suffix("/#") {
        (Some(prefix), true)
    } else {
        (Some(filter), false)
    }
}

fn levels_of(path: Option<&str>) -> impl Iterator<Item = &str> + Clone {
    path.into_iter().flat_map(|p| p.split('/'))
}

impl<K, V> SubscriptionTrie<K, V> {
    /// An empty trie.
    pub fn new() -> Self {
        SubscriptionTrie {
            root: Node::new(),
            len: 0,
        }
    }

    /// Number of (filter, key) pairs, i.e. individual subscriptions; a
    /// filter shared by many sessions counts once per session.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no subscriptions at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn slot(&self, filter: &str) -> Option<&Subs<K, V>> {
        let (path, hash) = path_of(filter);
        let mut node = &self.root;
        for level in levels_of(path) {
            node = node.child(level)?;
        }
        if hash {
            node.hash.as_deref()
        } else {
            node.subs.as_deref()
        }
    }

    /// Visits every subscription whose filter matches `topic`, as
    /// `f(filter, key, value)`.
    ///
    /// A key subscribed through several matching filters is visited once per
    /// filter; MQTT leaves it to the server whether to deliver once or per
    /// subscription, so deduplication is the caller's choice. The visiting
    /// order is unspecified.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&str, &K, &V)) {
        fn emit<K, V, F: FnMut(&str, &K, &V)>(subs: &Option<Box<Subs<K, V>>>, f: &mut F) {
            if let Some(subs) = subs {
                for (key, value) in &subs.entries {
                    f(&subs.filter, key, value);
                }
            }
        }
        // Each entry is a node reached by consuming some topic levels, the
        // levels still to match, and whether wildcards may match the next
        // one. Every node is reached at most once per topic (its path fixes
        // how many levels it consumed), so nothing is reported twice.
        // `$` topics are invisible to wildcards at the first level only.
        let mut stack = vec![(&self.root, topic.split('/'), !topic.starts_with('$'))];
        while let Some((node, mut rest, wildcards)) = stack.pop() {
            match rest.next() {
                None => {
                    emit(&node.subs, &mut f);
                    // `a/#` matches `a` itself. Never the root here: a topic
                    // has at least one level, so the `$` rule is unaffected.
                    emit(&node.hash, &mut f);
                }
                Some(level) => {
                    if wildcards {
                        // `#` matches this level and any that follow.
                        emit(&node.hash, &mut f);
                        if let Some(plus) = node.plus.as_deref() {
                            stack.push((plus, rest.clone(), true));
                        }
                    }
                    if let Some(child) = node.children.get(level) {
                        stack.push((child, rest, true));
                    }
                }
            }
        }
    }
}

impl<K: Eq + Hash, V> SubscriptionTrie<K, V> {
    /// Adds or replaces `key`'s subscription to `filter`; returns the value
    /// it replaces, as MQTT requires a re-SUBSCRIBE to the same filter to
    /// replace the existing subscription rather than add a second one.
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        let (path, hash) = path_of(filter);
        let mut node = &mut self.root;
        for level in levels_of(path) {
            node = node.child_or_insert(level);
        }
        let slot = if hash { &mut node.hash } else { &mut node.subs };
        let subs = slot.get_or_insert_with(|| {
            Box::new(Subs {
                filter: filter.into(),
                entries: HashMap::new(),
            })
        });
        let old = subs.entries.insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// The value of `key`'s subscription to exactly `filter` (no wildcard
    /// matching: `filter` is looked up as a filter, not matched as a topic).
    pub fn get<Q>(&self, filter: &str, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.slot(filter)?.entries.get(key)
    }

    /// Removes `key`'s subscription to `filter` and returns its value.
    ///
    /// Nodes left without subscribers or children are removed, so that a
    /// broker seeing a steady churn of per-device filters (`dev/{id}/cmd`)
    /// does not grow without bound.
    pub fn remove<Q>(&mut self, filter: &str, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let (path, hash) = path_of(filter);
        let mut node = &mut self.root;
        for level in levels_of(path) {
            node = node.child_mut(level)?;
        }
        let slot = if hash { &mut node.hash } else { &mut node.subs };
        let subs = slot.as_mut()?;
        let value = subs.entries.remove(key)?;
        self.len -= 1;
        if subs.entries.is_empty() {
            *slot = None;
            self.prune(path);
        }
        Some(value)
    }

    /// Cuts off the longest tail of `path` made of nodes that now hold
    /// nothing but the next node of the path. Done in two passes (find the
    /// cut, then cut) because holding `&mut` to every node on the path at
    /// once is not possible without unsafe code.
    fn prune(&mut self, path: Option<&str>) {
        // Depth of the first node of the removable tail, if any.
        let mut cut: Option<usize> = None;
        let mut node = &self.root;
        let mut levels = levels_of(path).enumerate().peekable();
        while let Some((depth, level)) = levels.next() {
            let Some(next) = node.child(level) else {
                return;
            };
            let is_last = levels.peek().is_none();
            let keeps_nothing_else = next.subs.is_none()
                && next.hash.is_none()
                && next.child_count() == usize::from(!is_last);
            if keeps_nothing_else {
                cut.get_or_insert(depth);
            } else {
                cut = None;
            }
            node = next;
        }
        let Some(cut) = cut else {
            return;
        };
        let mut levels = levels_of(path);
        let mut node = &mut self.root;
        for level in levels.by_ref().take(cut) {
            match node.child_mut(level) {
                Some(next) => node = next,
                None => return,
            }
        }
        if let Some(level) = levels.next() {
            node.remove_child(level);
        }
    }
}

impl<K, V> Default for SubscriptionTrie<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> fmt::Debug for SubscriptionTrie<K, V> {
    /// Only the size: a full dump of a production trie would be enormous,
    /// and a recursive one could overflow the stack.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionTrie")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matches;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    impl<K, V> Node<K, V> {
        /// Nodes in this subtree, including itself.
        fn count(&self) -> usize {
            let mut n = 0;
            let mut stack = vec![self];
            while let Some(node) = stack.pop() {
                n += 1;
                stack.extend(node.children.values());
                stack.extend(node.plus.as_deref());
            }
            n
        }
    }

    /// Nodes a minimal trie holding exactly `filters` has: the root plus one
    /// per distinct path prefix.
    fn expected_nodes<'a>(filters: impl IntoIterator<Item = &'a str>) -> usize {
        let mut prefixes = BTreeSet::new();
        for filter in filters {
            let levels: Vec<&str> = levels_of(path_of(filter).0).collect();
            for i in 1..=levels.len() {
                prefixes.insert(levels[..i].to_vec());
            }
        }
        1 + prefixes.len()
    }

    fn matched<V: Clone>(trie: &SubscriptionTrie<u8, V>, topic: &str) -> Vec<(String, u8, V)> {
        let mut out = Vec::new();
        trie.for_each_match(topic, |filter, &key, value| {
            out.push((filter.to_owned(), key, value.clone()));
        });
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    fn filters_matching(trie: &SubscriptionTrie<u8, ()>, topic: &str) -> Vec<String> {
        matched(trie, topic)
            .into_iter()
            .map(|(f, _, _)| f)
            .collect()
    }

    #[test]
    fn spec_examples() {
        let mut trie = SubscriptionTrie::new();
        for filter in [
            "sport/tennis/player1/#",
            "sport/#",
            "sport/tennis/+",
            "+/+",
            "/+",
            "+",
            "#",
            "+/monitor/Clients",
            "$SYS/#",
            "$SYS/monitor/+",
        ] {
            assert_eq!(trie.insert(filter, 1, ()), None);
        }
        assert_eq!(trie.len(), 10);

        assert_eq!(
            filters_matching(&trie, "sport/tennis/player1"),
            ["#", "sport/#", "sport/tennis/+", "sport/tennis/player1/#"]
        );
        assert_eq!(
            filters_matching(&trie, "sport/tennis/player1/ranking"),
            ["#", "sport/#", "sport/tennis/player1/#"]
        );
        assert_eq!(
            filters_matching(&trie, "sport/tennis/player1/score/wimbledon"),
            ["#", "sport/#", "sport/tennis/player1/#"]
        );
        assert_eq!(filters_matching(&trie, "sport"), ["#", "+", "sport/#"]);
        assert_eq!(filters_matching(&trie, "/finance"), ["#", "+/+", "/+"]);
        assert_eq!(
            filters_matching(&trie, "$SYS/monitor/Clients"),
            ["$SYS/#", "$SYS/monitor/+"]
        );
        assert_eq!(filters_matching(&trie, "$SYS"), ["$SYS/#"]);
        assert_eq!(
            filters_matching(&trie, "a/monitor/Clients"),
            ["#", "+/monitor/Clients"]
        );
    }

    #[test]
    fn insert_replaces_get_remove() {
        let mut trie = SubscriptionTrie::new();
        assert!(trie.is_empty());
        assert_eq!(trie.insert("a/+", "s1".to_owned(), 0), None);
        assert_eq!(trie.insert("a/+", "s2".to_owned(), 1), None);
        assert_eq!(trie.insert("a/+", "s1".to_owned(), 2), Some(0));
        assert_eq!(trie.len(), 2);
        assert_eq!(trie.get("a/+", "s1"), Some(&2));
        // `get` looks the filter up, it does not match.
        assert_eq!(trie.get("a/b", "s1"), None);
        assert_eq!(trie.get("a/+", "s3"), None);
        assert_eq!(trie.remove("a/+", "s3"), None);
        assert_eq!(trie.remove("a/b", "s1"), None);
        assert_eq!(trie.remove("a/+", "s1"), Some(2));
        assert_eq!(trie.remove("a/+", "s1"), None);
        assert_eq!(trie.len(), 1);
        assert_eq!(trie.remove("a/+", "s2"), Some(1));
        assert!(trie.is_empty());
        assert_eq!(trie.root.count(), 1);
    }

    #[test]
    fn prunes_only_what_is_unused() {
        let mut trie = SubscriptionTrie::new();
        trie.insert("a/b/c/d", 1, ());
        trie.insert("a/b", 1, ());
        trie.insert("a/b/#", 1, ());
        trie.insert("a/+/x", 1, ());
        assert_eq!(
            trie.root.count(),
            expected_nodes(["a/b/c/d", "a/b", "a/b/#", "a/+/x"])
        );
        trie.remove("a/b/c/d", &1);
        assert_eq!(trie.root.count(), expected_nodes(["a/b", "a/b/#", "a/+/x"]));
        trie.remove("a/b", &1);
        assert_eq!(trie.root.count(), expected_nodes(["a/b/#", "a/+/x"]));
        trie.remove("a/b/#", &1);
        assert_eq!(trie.root.count(), expected_nodes(["a/+/x"]));
        assert_eq!(filters_matching(&trie, "a/q/x"), ["a/+/x"]);
        trie.remove("a/+/x", &1);
        assert_eq!(trie.root.count(), 1);
        assert!(trie.is_empty());
    }

    #[test]
    fn keys_visited_once_per_matching_filter() {
        let mut trie = SubscriptionTrie::new();
        trie.insert("a/#", 7, "hash");
        trie.insert("a/b", 7, "exact");
        trie.insert("a/b", 8, "exact8");
        trie.insert("c", 7, "other");
        assert_eq!(
            matched(&trie, "a/b"),
            [
                ("a/#".to_owned(), 7, "hash"),
                ("a/b".to_owned(), 7, "exact"),
                ("a/b".to_owned(), 8, "exact8"),
            ]
        );
    }

    #[test]
    fn deep_filters_do_not_overflow_the_stack() {
        // 32767 levels: the deepest a 65535-byte filter can be.
        let deep = format!("{}#", "a/".repeat(32_767));
        let topic = "a/".repeat(40_000);
        let mut trie = SubscriptionTrie::new();
        trie.insert(&deep, 1u8, ());
        trie.insert("+/#", 2, ());
        assert_eq!(
            filters_matching(&trie, &topic).len(),
            2,
            "both filters match"
        );
        // Pruning the deep chain drops it in one piece.
        assert_eq!(trie.remove(&deep, &1), Some(()));
        assert_eq!(trie.root.count(), 2);
        // And dropping a deep trie must not recurse either.
        trie.insert(&deep, 1u8, ());
        let plus_deep = "+/".repeat(32_767) + "x";
        trie.insert(&plus_deep, 3, ());
        drop(trie);
    }

    fn level() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "$x", ""])
    }

    fn filter_level() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "$x", "", "+", "#"])
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..5).prop_map(|l| l.join("/"))
    }

    /// Includes invalid filters (non-final `#`): the trie must agree with
    /// `matches` on those too.
    fn filter() -> impl Strategy<Value = String> {
        prop::collection::vec(filter_level(), 1..5).prop_map(|l| l.join("/"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn agrees_with_matches(
            subs in prop::collection::vec((filter(), 0u8..3), 0..40),
            topics in prop::collection::vec(
                prop_oneof![topic(), filter()],
                1..10,
            ),
        ) {
            let mut trie = SubscriptionTrie::new();
            let mut model = BTreeMap::new();
            for (i, (filter, key)) in subs.iter().enumerate() {
                trie.insert(filter, *key, i);
                model.insert((filter.clone(), *key), i);
            }
            prop_assert_eq!(trie.len(), model.len());
            for topic in &topics {
                let expected: Vec<(String, u8, usize)> = model
                    .iter()
                    .filter(|((filter, _), _)| matches(topic, filter))
                    .map(|((filter, key), value)| (filter.clone(), *key, *value))
                    .collect();
                prop_assert_eq!(matched(&trie, topic), expected, "topic {:?}", topic);
            }
        }

        #[test]
        fn insert_then_remove_all_leaves_empty(
            subs in prop::collection::vec((filter(), 0u8..3), 0..40)
                .prop_flat_map(|v| {
                    let n = v.len();
                    (Just(v), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
                }),
        ) {
            let (subs, order) = subs;
            let mut trie = SubscriptionTrie::new();
            let mut model = BTreeMap::new();
            for (i, (filter, key)) in subs.iter().enumerate() {
                prop_assert_eq!(
                    trie.insert(filter, *key, i),
                    model.insert((filter.clone(), *key), i)
                );
            }
            for i in order {
                let (filter, key) = &subs[i];
                prop_assert_eq!(
                    trie.remove(filter, key),
                    model.remove(&(filter.clone(), *key))
                );
                prop_assert_eq!(trie.len(), model.len());
                prop_assert_eq!(
                    trie.root.count(),
                    expected_nodes(model.keys().map(|(f, _)| f.as_str()))
                );
            }
            prop_assert!(trie.is_empty());
            prop_assert_eq!(trie.root.count(), 1);
        }

        #[test]
        fn random_ops_match_model(
            ops in prop::collection::vec((any::<bool>(), filter(), 0u8..3, any::<u16>()), 0..80),
        ) {
            let mut trie = SubscriptionTrie::new();
            let mut model = BTreeMap::new();
            for (insert, filter, key, value) in ops {
                if insert {
                    prop_assert_eq!(
                        trie.insert(&filter, key, value),
                        model.insert((filter.clone(), key), value)
                    );
                } else {
                    prop_assert_eq!(
                        trie.remove(&filter, &key),
                        model.remove(&(filter.clone(), key))
                    );
                }
                prop_assert_eq!(trie.get(&filter, &key), model.get(&(filter.clone(), key)));
                prop_assert_eq!(trie.len(), model.len());
                prop_assert_eq!(
                    trie.root.count(),
                    expected_nodes(model.keys().map(|(f, _)| f.as_str()))
                );
            }
        }

        #[test]
        fn arbitrary_strings_never_panic(
            filters in prop::collection::vec(any::<String>(), 0..5),
            topic in any::<String>(),
        ) {
            let mut trie = SubscriptionTrie::new();
            for f in &filters {
                trie.insert(f, 0u8, ());
            }
            let mut n = 0;
            trie.for_each_match(&topic, |_, _, _| n += 1);
            prop_assert_eq!(n, filters.iter().collect::<BTreeSet<_>>()
                .into_iter().filter(|f| matches(&topic, f)).count());
            for f in &filters {
                trie.remove(f, &0);
            }
            prop_assert!(trie.is_empty());
            prop_assert_eq!(trie.root.count(), 1);
        }
    }
}
