//! Access control: allow/deny rules per user, client id or everyone, for
//! publish and subscribe, with `%u` / `%c` substitution; the first matching
//! rule wins.
//!
//! File format, one rule per line:
//! `allow|deny  user NAME|client ID|all  publish|subscribe|all  FILTER`

use std::path::Path;

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// PUBLISH to a topic.
    Publish,
    /// SUBSCRIBE to a filter.
    Subscribe,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    User(String),
    Client(String),
    All,
}

#[derive(Debug, Clone)]
struct Rule {
    allow: bool,
    who: Who,
    actions: (bool, bool),
    filter: String,
}

/// A parse error with its line.
#[derive(Debug, thiserror::Error)]
#[error("ACL line {line}: {reason}")]
pub struct AclError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// An ordered rule list.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    rules: Vec<Rule>,
    default_allow: bool,
}

impl Acl {
    /// Everything allowed (no ACL configured).
    pub fn allow_all() -> Self {
        Self {
            rules: Vec::new(),
            default_allow: true,
        }
    }

    /// Parse rules; when none matches, `default_allow` decides.
    pub fn parse(text: &str, default_allow: bool) -> Result<Self, AclError> {
        let mut rules = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: &str| AclError {
                line: i + 1,
                reason: reason.to_string(),
            };
            let mut it = line.split_whitespace();
            let allow = match it.next() {
                Some("allow") => true,
                Some("deny") => false,
                _ => return Err(err("must start with allow or deny")),
            };
            let who = match it.next() {
                Some("all") => Who::All,
                Some("user") => Who::User(
                    it.next()
                        .ok_or_else(|| err("user needs a name"))?
                        .to_string(),
                ),
                Some("client") => Who::Client(
                    it.next()
                        .ok_or_else(|| err("client needs an id"))?
                        .to_string(),
                ),
                _ => return Err(err("expected user NAME, client ID or all")),
            };
            let actions = match it.next() {
                Some("publish") => (true, false),
                Some("subscribe") => (false, true),
                Some("all") => (true, true),
                _ => return Err(err("expected publish, subscribe or all")),
            };
            let filter = it
                .next()
                .ok_or_else(|| err("missing topic filter"))?
                .to_string();
            if it.next().is_some() {
                return Err(err("trailing words"));
            }
            rules.push(Rule {
                allow,
                who,
                actions,
                filter,
            });
        }
        Ok(Self {
            rules,
            default_allow,
        })
    }

    /// Load a rule file.
    pub fn load(path: &Path, default_allow: bool) -> Result<Self, AclError> {
        let text = std::fs::read_to_string(path).map_err(|e| AclError {
            line: 0,
            reason: format!("{}: {e}", path.display()),
        })?;
        Self::parse(&text, default_allow)
    }

    /// May `user`/`client` do `action` on `topic` (a topic for publish, a filter for subscribe)?
    pub fn check(&self, user: Option<&str>, client: &str, action: Action, topic: &str) -> bool {
        for r in &self.rules {
            let who = match &r.who {
                Who::All => true,
                Who::User(u) => user == Some(u.as_str()),
                Who::Client(c) => c == client,
            };
            let act = match action {
                Action::Publish => r.actions.0,
                Action::Subscribe => r.actions.1,
            };
            if !who || !act {
                continue;
            }
            // %u / %c must not let an identifier inject wildcards or levels.
            let unsafe_id = |s: &str| s.contains(['+', '#', '/']);
            if (r.filter.contains("%u") && user.is_none_or(unsafe_id))
                || (r.filter.contains("%c") && unsafe_id(client))
            {
                continue;
            }
            let filter = r
                .filter
                .replace("%u", user.unwrap_or(""))
                .replace("%c", client);
            let hit = match action {
                Action::Publish => ferrymq_shared::matches(topic, &filter),
                Action::Subscribe => covers(&filter, topic),
            };
            if hit {
                return r.allow;
            }
        }
        self.default_allow
    }
}

/// Does rule filter `rule` cover every topic subscription filter `sub` can match?
fn covers(rule: &str, sub: &str) -> bool {
    let sub = ferrymq_shared::parse_shared(sub)
        .map(|s| s.filter)
        .unwrap_or(sub);
    let mut r = rule.split('/');
    let mut s = sub.split('/');
    loop {
        match (r.next(), s.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(l)) if l != "#" => {}
            (Some(a), Some(b)) if a == b && a != "+" && a != "#" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = "
        # admins see everything
        allow user admin all #
        deny all subscribe $SYS/#
        allow all all devices/%c/#
        allow all publish telemetry/%u/+
        deny client evil all #
        allow all subscribe public/#
    ";

    #[test]
    fn first_match_wins_with_substitution() {
        let acl = Acl::parse(RULES, false).unwrap();
        assert!(acl.check(Some("admin"), "x", Action::Subscribe, "$SYS/#"));
        assert!(!acl.check(Some("bob"), "x", Action::Subscribe, "$SYS/broker/uptime"));
        assert!(acl.check(None, "d1", Action::Publish, "devices/d1/temp"));
        assert!(!acl.check(None, "d1", Action::Publish, "devices/d2/temp"));
        assert!(acl.check(None, "d1", Action::Subscribe, "devices/d1/+"));
        assert!(!acl.check(None, "d1", Action::Subscribe, "devices/+/temp"));
        assert!(acl.check(Some("bob"), "c", Action::Publish, "telemetry/bob/t"));
        assert!(!acl.check(None, "c", Action::Publish, "telemetry//t"));
        assert!(acl.check(None, "c", Action::Subscribe, "public/news"));
        assert!(!acl.check(None, "evil", Action::Subscribe, "public/news"));
        assert!(!acl.check(None, "c", Action::Publish, "other"));
        // An id with wildcards cannot widen its own rule.
        assert!(!acl.check(None, "#", Action::Subscribe, "devices/#"));
        assert!(Acl::parse("permit all all #", true).is_err());
    }
}
