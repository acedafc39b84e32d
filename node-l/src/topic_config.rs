//! The topic table: which RocketMQ topics exist, with how many queues and
//! which permissions. Persisted as `config/topics.json` in RocketMQ's
//! `topicConfigTable` shape, so admin tools see familiar fields.

use std::collections::BTreeMap;
use std::path::PathBuf;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::snapshot::{read_json, write_json, FileError};

/// Readable permission bit (RocketMQ's `PermName.PERM_READ`).
pub const PERM_READ: u32 = 1 << 2;
/// Writable permission bit (RocketMQ's `PermName.PERM_WRITE`).
pub const PERM_WRITE: u32 = 1 << 1;

/// One topic's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicConfig {
    /// RocketMQ topic name.
    pub topic_name: String,
    /// Queues readers see.
    pub read_queue_nums: u32,
    /// Queues writers use.
    pub write_queue_nums: u32,
    /// Permission bits (read 4, write 2).
    pub perm: u32,
    /// Whether the topic is ordered (informational for RocketMQ clients).
    #[serde(default)]
    pub order: bool,
}

impl TopicConfig {
    /// A read-write topic with `queues` queues.
    pub fn new(name: &str, queues: u32) -> Self {
        Self {
            topic_name: name.to_owned(),
            read_queue_nums: queues,
            write_queue_nums: queues,
            perm: PERM_READ | PERM_WRITE,
            order: false,
        }
    }

    /// Whether writes are allowed.
    pub fn writable(&self) -> bool {
        self.perm & PERM_WRITE != 0
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TopicFile {
    topic_config_table: BTreeMap<String, TopicConfig>,
}

/// The topic table, loaded at start and rewritten on every change (topics
/// change rarely; a lost auto-creation would silently change queue counts).
pub struct TopicTable {
    path: PathBuf,
    topics: RwLock<BTreeMap<String, TopicConfig>>,
}

impl TopicTable {
    /// Load `path` (empty table if missing).
    pub fn open(path: PathBuf) -> Result<Self, FileError> {
        let file: TopicFile = read_json(&path)?.unwrap_or_default();
        Ok(Self {
            path,
            topics: RwLock::new(file.topic_config_table),
        })
    }

    /// A topic's config.
    pub fn get(&self, name: &str) -> Option<TopicConfig> {
        self.topics.read().get(name).cloned()
    }

    /// Queue count and writability of a topic, without cloning its config.
    pub fn write_queues(&self, name: &str) -> Option<(u32, bool)> {
        self.topics
            .read()
            .get(name)
            .map(|t| (t.write_queue_nums, t.writable()))
    }

    /// Create or replace a topic, persisting the table.
    pub fn put(&self, cfg: TopicConfig) -> Result<(), FileError> {
        let mut t = self.topics.write();
        t.insert(cfg.topic_name.clone(), cfg);
        self.persist(&t)
    }

    /// Create `name` with `queues` queues unless it exists; returns its queue
    /// count and writability, or None when `max_topics` exist already.
    pub fn get_or_create(
        &self,
        name: &str,
        queues: u32,
        max_topics: usize,
    ) -> Result<Option<(u32, bool)>, FileError> {
        if let Some(q) = self.write_queues(name) {
            return Ok(Some(q));
        }
        let mut t = self.topics.write();
        if let Some(c) = t.get(name) {
            return Ok(Some((c.write_queue_nums, c.writable())));
        }
        if t.len() >= max_topics {
            return Ok(None);
        }
        let cfg = TopicConfig::new(name, queues);
        t.insert(name.to_owned(), cfg);
        self.persist(&t)?;
        tracing::info!(topic = name, queues, "topic auto-created");
        Ok(Some((queues, true)))
    }

    /// Remove a topic; returns whether it existed.
    pub fn remove(&self, name: &str) -> Result<bool, FileError> {
        let mut t = self.topics.write();
        let existed = t.remove(name).is_some();
        if existed {
            self.persist(&t)?;
        }
        Ok(existed)
    }

    /// Every topic.
    pub fn all(&self) -> Vec<TopicConfig> {
        self.topics.read().values().cloned().collect()
    }

    fn persist(&self, t: &BTreeMap<String, TopicConfig>) -> Result<(), FileError> {
        write_json(
            &self.path,
            &TopicFile {
                topic_config_table: t.clone(),
            },
        )
    }
}
