//! Consumer offsets (RocketMQ's `consumerOffset.json`: `topic@group` → queue →
//! next offset to consume) and the session-queue offsets of persistent MQTT
//! sessions. Kept in memory, written every `flushConsumerOffsetInterval`: a
//! crash replays at most that much, which at-least-once delivery allows.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::snapshot::{read_json, write_json, FileError};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OffsetFile {
    offset_table: BTreeMap<String, BTreeMap<i32, i64>>,
    #[serde(default)]
    session_offsets: BTreeMap<String, i64>,
}

/// The offset table.
pub struct OffsetTable {
    path: PathBuf,
    data: Mutex<OffsetFile>,
    dirty: AtomicBool,
}

impl OffsetTable {
    /// Load `path` (empty if missing).
    pub fn open(path: PathBuf) -> Result<Self, FileError> {
        let data = read_json(&path)?.unwrap_or_default();
        Ok(Self {
            path,
            data: Mutex::new(data),
            dirty: AtomicBool::new(false),
        })
    }

    /// A consumer group's next offset in (topic, queue).
    pub fn query(&self, group: &str, topic: &str, queue_id: i32) -> Option<i64> {
        self.data
            .lock()
            .offset_table
            .get(&format!("{topic}@{group}"))
            .and_then(|q| q.get(&queue_id).copied())
    }

    /// Set a consumer group's next offset in (topic, queue).
    pub fn commit(&self, group: &str, topic: &str, queue_id: i32, offset: i64) {
        self.data
            .lock()
            .offset_table
            .entry(format!("{topic}@{group}"))
            .or_default()
            .insert(queue_id, offset);
        self.dirty.store(true, Ordering::Release);
    }

    /// A session's committed queue offset.
    pub fn session(&self, client_id: &str) -> Option<i64> {
        self.data.lock().session_offsets.get(client_id).copied()
    }

    /// Set a session's committed queue offset.
    pub fn commit_session(&self, client_id: &str, offset: i64) {
        let mut d = self.data.lock();
        match d.session_offsets.get_mut(client_id) {
            Some(o) if *o == offset => return,
            Some(o) => *o = offset,
            None => {
                d.session_offsets.insert(client_id.to_owned(), offset);
            }
        }
        drop(d);
        self.dirty.store(true, Ordering::Release);
    }

    /// Forget a session's offset (the session is gone).
    pub fn remove_session(&self, client_id: &str) {
        if self.data.lock().session_offsets.remove(client_id).is_some() {
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// Write the table if it changed since the last write.
    pub fn persist(&self) -> Result<(), FileError> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let snapshot = self.data.lock().clone();
        let r = write_json(&self.path, &snapshot);
        if r.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        r
    }
}
