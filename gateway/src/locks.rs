//! Queue locks for orderly consumers (LOCK_BATCH_MQ / UNLOCK_BATCH_MQ): one
//! client of a group holds a queue; a lock not renewed for 60 s lapses, as
//! RocketMQ's `RebalanceLockManager` does.

use std::time::{Duration, Instant};

use hashbrown::HashMap;
use parking_lot::Mutex;

/// How long a lock lives without renewal.
pub const LOCK_MAX_LIVE: Duration = Duration::from_secs(60);

/// (group, topic, queue id).
type Key = (String, String, i32);

/// The lock table.
#[derive(Default)]
pub struct QueueLocks {
    table: Mutex<HashMap<Key, (String, Instant)>>,
}

impl QueueLocks {
    /// Lock what can be locked for `client`; returns the queues it now holds.
    pub fn lock(&self, group: &str, client: &str, queues: &[(String, i32)]) -> Vec<(String, i32)> {
        let now = Instant::now();
        let mut t = self.table.lock();
        if t.len() > 4096 {
            // Lapsed locks are only dropped lazily: keep the table small.
            t.retain(|_, (_, at)| now.duration_since(*at) <= LOCK_MAX_LIVE);
        }
        let mut held = Vec::new();
        for (topic, q) in queues {
            let key = (group.to_owned(), topic.clone(), *q);
            let free = match t.get(&key) {
                Some((owner, at)) => owner == client || now.duration_since(*at) > LOCK_MAX_LIVE,
                None => true,
            };
            if free {
                t.insert(key, (client.to_owned(), now));
                held.push((topic.clone(), *q));
            }
        }
        held
    }

    /// Release the queues `client` holds among `queues`.
    pub fn unlock(&self, group: &str, client: &str, queues: &[(String, i32)]) {
        let mut t = self.table.lock();
        for (topic, q) in queues {
            let key = (group.to_owned(), topic.clone(), *q);
            if t.get(&key).is_some_and(|(owner, _)| owner == client) {
                t.remove(&key);
            }
        }
    }

    /// Release everything `client` holds (it went away).
    pub fn release_client(&self, client: &str) {
        self.table.lock().retain(|_, (owner, _)| owner != client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_owner_per_queue() {
        let l = QueueLocks::default();
        let qs = vec![("t".to_owned(), 0), ("t".to_owned(), 1)];
        assert_eq!(l.lock("g", "c1", &qs), qs);
        assert!(l.lock("g", "c2", &qs).is_empty());
        assert_eq!(l.lock("g", "c1", &qs[..1]), qs[..1].to_vec());
        l.unlock("g", "c1", &qs[1..]);
        assert_eq!(l.lock("g", "c2", &qs), qs[1..].to_vec());
        assert_eq!(l.lock("other", "c2", &qs), qs);
    }
}
