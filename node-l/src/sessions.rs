//! The persistent-session table. Every change is a small JSON event appended
//! to the system topic [`crate::topic_model::SESSION_TOPIC`], so it shares the
//! CommitLog's group commit and crash recovery instead of needing its own
//! fsync; a periodic snapshot (`config/sessions.json`) bounds the replay at
//! start to the events after it.

use std::path::PathBuf;

use ferrymq_shared::boundary::SessionRecord;
use hashbrown::HashMap;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::snapshot::{read_json, write_json, FileError};

/// One change to the table, as stored in the event topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum SessionEvent {
    /// Create or replace a session.
    Save {
        /// The session.
        session: SessionRecord,
    },
    /// Delete a session.
    #[serde(rename_all = "camelCase")]
    Remove {
        /// Its client id.
        client_id: String,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionFile {
    /// First event-queue offset not reflected in `sessions`.
    next_offset: i64,
    sessions: Vec<SessionRecord>,
}

/// The table in memory plus where its snapshot lives.
pub struct SessionTable {
    path: PathBuf,
    inner: Mutex<Tables>,
}

struct Tables {
    sessions: HashMap<String, SessionRecord>,
    /// Event offset the in-memory table reflects (exclusive).
    applied: i64,
    /// Event offset of the last snapshot.
    snapshotted: i64,
}

impl SessionTable {
    /// Load the snapshot (empty table if missing); the caller replays events
    /// from [`Self::applied`].
    pub fn open(path: PathBuf) -> Result<Self, FileError> {
        let file: SessionFile = read_json(&path)?.unwrap_or_default();
        let sessions = file
            .sessions
            .into_iter()
            .map(|s| (s.client_id.clone(), s))
            .collect();
        Ok(Self {
            path,
            inner: Mutex::new(Tables {
                sessions,
                applied: file.next_offset,
                snapshotted: file.next_offset,
            }),
        })
    }

    /// Event offset the table reflects (exclusive).
    pub fn applied(&self) -> i64 {
        self.inner.lock().applied
    }

    /// Apply the event stored at `offset`.
    pub fn apply(&self, offset: i64, ev: SessionEvent) {
        let mut t = self.inner.lock();
        match ev {
            SessionEvent::Save { session } => {
                t.sessions.insert(session.client_id.clone(), session);
            }
            SessionEvent::Remove { client_id } => {
                t.sessions.remove(&client_id);
            }
        }
        t.applied = t.applied.max(offset + 1);
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

    /// Every session.
    pub fn all(&self) -> Vec<SessionRecord> {
        self.inner.lock().sessions.values().cloned().collect()
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.inner.lock().sessions.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Write a snapshot if events were applied since the last one.
    pub fn snapshot(&self) -> Result<(), FileError> {
        let (file, applied) = {
            let t = self.inner.lock();
            if t.applied == t.snapshotted {
                return Ok(());
            }
            (
                SessionFile {
                    next_offset: t.applied,
                    sessions: t.sessions.values().cloned().collect(),
                },
                t.applied,
            )
        };
        write_json(&self.path, &file)?;
        self.inner.lock().snapshotted = applied;
        Ok(())
    }
}
