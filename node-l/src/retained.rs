//! The retained table. Every retained publish is also indexed into the light
//! queue [`crate::topic_model::RETAINED_QUEUE`] (one ConsumeQueue entry, no
//! copy of the message), so the table is rebuilt at start from a snapshot
//! (`config/retained.json`, messages in full so they outlive CommitLog
//! retention) plus the queue entries after it.

use std::path::PathBuf;

use base64::Engine;
use bytes::Bytes;
use ferrymq_shared::boundary::{MqttMessage, MqttProps, RetainedMessage};
use hashbrown::HashMap;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::snapshot::{read_json, write_json, FileError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    topic: String,
    payload_base64: String,
    qos: u8,
    stored_at_ms: i64,
    publisher: Option<String>,
    payload_format: Option<u8>,
    message_expiry: Option<u32>,
    content_type: Option<String>,
    response_topic: Option<String>,
    correlation_data_base64: Option<String>,
    user: Vec<(String, String)>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl From<&RetainedMessage> for Entry {
    fn from(r: &RetainedMessage) -> Self {
        let m = &r.message;
        Entry {
            topic: m.topic.clone(),
            payload_base64: b64().encode(&m.payload),
            qos: m.qos,
            stored_at_ms: r.stored_at_ms,
            publisher: m.publisher.clone(),
            payload_format: m.props.payload_format,
            message_expiry: m.props.message_expiry,
            content_type: m.props.content_type.clone(),
            response_topic: m.props.response_topic.clone(),
            correlation_data_base64: m.props.correlation_data.as_ref().map(|d| b64().encode(d)),
            user: m.props.user.clone(),
        }
    }
}

impl Entry {
    fn into_message(self) -> Option<RetainedMessage> {
        let payload = b64().decode(&self.payload_base64).ok()?;
        let correlation_data = match self.correlation_data_base64 {
            Some(c) => Some(Bytes::from(b64().decode(c).ok()?)),
            None => None,
        };
        Some(RetainedMessage {
            stored_at_ms: self.stored_at_ms,
            message: MqttMessage {
                topic: self.topic,
                payload: Bytes::from(payload),
                qos: self.qos,
                retain: true,
                props: MqttProps {
                    payload_format: self.payload_format,
                    message_expiry: self.message_expiry,
                    content_type: self.content_type,
                    response_topic: self.response_topic,
                    correlation_data,
                    user: self.user,
                },
                publisher: self.publisher,
            },
        })
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RetainedFile {
    next_offset: i64,
    messages: Vec<Entry>,
}

/// The retained table and its snapshot file.
pub struct RetainedTable {
    path: PathBuf,
    inner: Mutex<Table>,
}

struct Table {
    messages: HashMap<String, RetainedMessage>,
    applied: i64,
    snapshotted: i64,
}

impl RetainedTable {
    /// Load the snapshot (empty if missing); the caller replays the retained
    /// queue from [`Self::applied`].
    pub fn open(path: PathBuf) -> Result<Self, FileError> {
        let file: RetainedFile = read_json(&path)?.unwrap_or_default();
        let mut messages = HashMap::new();
        for e in file.messages {
            let topic = e.topic.clone();
            match e.into_message() {
                Some(m) => {
                    messages.insert(topic, m);
                }
                None => tracing::warn!(
                    topic,
                    "retained snapshot entry is not valid base64; skipped"
                ),
            }
        }
        Ok(Self {
            path,
            inner: Mutex::new(Table {
                messages,
                applied: file.next_offset,
                snapshotted: file.next_offset,
            }),
        })
    }

    /// Queue offset the table reflects (exclusive).
    pub fn applied(&self) -> i64 {
        self.inner.lock().applied
    }

    /// Apply a retained publish stored at queue `offset` (empty payload clears).
    pub fn apply(&self, offset: i64, msg: RetainedMessage) {
        let mut t = self.inner.lock();
        if offset < t.applied {
            return;
        }
        if msg.message.payload.is_empty() {
            t.messages.remove(&msg.message.topic);
        } else {
            t.messages.insert(msg.message.topic.clone(), msg);
        }
        t.applied = offset + 1;
    }

    /// Never claim more than the log holds (after a crash lost unflushed entries).
    pub fn clamp_applied(&self, log_end: i64) {
        let mut t = self.inner.lock();
        if t.applied > log_end {
            tracing::warn!(
                applied = t.applied,
                log_end,
                "snapshot is ahead of the log; replaying from its end"
            );
            t.applied = log_end;
        }
    }

    /// Every retained message.
    pub fn all(&self) -> Vec<RetainedMessage> {
        self.inner.lock().messages.values().cloned().collect()
    }

    /// Write a snapshot if anything changed since the last one.
    pub fn snapshot(&self) -> Result<(), FileError> {
        let (file, applied) = {
            let t = self.inner.lock();
            if t.applied == t.snapshotted {
                return Ok(());
            }
            (
                RetainedFile {
                    next_offset: t.applied,
                    messages: t.messages.values().map(Entry::from).collect(),
                },
                t.applied,
            )
        };
        write_json(&self.path, &file)?;
        self.inner.lock().snapshotted = applied;
        Ok(())
    }
}
