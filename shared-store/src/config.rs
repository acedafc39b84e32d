//! Store configuration, with RocketMQ's names and defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// When a put counts as durable (RocketMQ's `flushDiskType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FlushDiskType {
    /// Return once the bytes are in the page cache; a background flusher syncs.
    #[default]
    AsyncFlush,
    /// Return once the bytes are on disk; waiters share fsyncs (group commit).
    SyncFlush,
}

/// Configuration of a [`crate::MessageStore`].
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct StoreConfig {
    /// Root directory (`commitlog/`, `consumequeue/`, `index/`, `checkpoint`).
    pub store_path: PathBuf,
    /// CommitLog segment size in bytes (default 1 GiB).
    pub mapped_file_size_commit_log: u64,
    /// Entries per ConsumeQueue file (default 300,000 of 20 bytes).
    pub consume_queue_entries_per_file: u64,
    /// Hash slots per IndexFile (default 5,000,000).
    pub max_hash_slot_num: u32,
    /// Entries per IndexFile (default 20,000,000).
    pub max_index_num: u32,
    /// Largest message body accepted (default 4 MiB).
    pub max_message_size: usize,
    /// Durability a put waits for.
    pub flush_disk_type: FlushDiskType,
    /// ASYNC_FLUSH: flush at least this often (ms).
    pub flush_interval_commit_log: u64,
    /// ASYNC_FLUSH: flush early once this many 4 KiB pages are dirty.
    pub flush_commit_log_least_pages: u64,
    /// SYNC_FLUSH: a put that is not durable after this long (ms) returns FLUSH_DISK_TIMEOUT.
    pub sync_flush_timeout: u64,
    /// Checkpoint + ConsumeQueue/Index flush period (ms).
    pub flush_interval_consume_queue: u64,
    /// Hours a CommitLog file is kept after its last write (default 48).
    pub file_reserved_time: u64,
    /// Hours of the day (0-23, `;` separated) at which expired files are deleted.
    pub delete_when: String,
    /// Disk usage ratio past which the oldest files are deleted early (0.75).
    pub disk_max_used_space_ratio: f64,
    /// Disk usage ratio past which writes are refused (0.90).
    pub disk_hard_limit_ratio: f64,
    /// Optional quota for the store's own files: usage is also measured against it.
    pub disk_quota_bytes: Option<u64>,
    /// Retention check period (ms).
    pub clean_resource_interval: u64,
    /// Address written as STOREHOST and inside offsetMsgIds.
    pub store_host: SocketAddr,
    /// Largest number of bytes a single get returns.
    pub max_transfer_bytes: usize,
    /// Bytes of the staging ring appends land in before the committer copies
    /// them into the CommitLog (default 32 MiB; raised to fit two of the
    /// largest entries). Appends wait for the committer when it is full.
    pub commit_log_staging_size: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            store_path: PathBuf::from("data/store"),
            mapped_file_size_commit_log: 1 << 30,
            consume_queue_entries_per_file: 300_000,
            max_hash_slot_num: 5_000_000,
            max_index_num: 20_000_000,
            max_message_size: 4 << 20,
            flush_disk_type: FlushDiskType::AsyncFlush,
            flush_interval_commit_log: 500,
            flush_commit_log_least_pages: 4,
            sync_flush_timeout: 5_000,
            flush_interval_consume_queue: 1_000,
            file_reserved_time: 48,
            delete_when: "04".into(),
            disk_max_used_space_ratio: 0.75,
            disk_hard_limit_ratio: 0.90,
            disk_quota_bytes: None,
            clean_resource_interval: 10_000,
            store_host: SocketAddr::from(([127, 0, 0, 1], 10911)),
            max_transfer_bytes: 4 << 20,
            commit_log_staging_size: 32 << 20,
        }
    }
}

impl StoreConfig {
    /// A config rooted at `path` with every other value at its default.
    pub fn with_path(path: impl Into<PathBuf>) -> Self {
        Self {
            store_path: path.into(),
            ..Self::default()
        }
    }

    pub(crate) fn validate(&self) -> crate::Result<()> {
        let bad = |s: &str| Err(crate::StoreError::Config(s.to_string()));
        if self.mapped_file_size_commit_log < 4096 {
            return bad("mappedFileSizeCommitLog must be at least 4096");
        }
        if self.max_message_size as u64 + 4096 > self.mapped_file_size_commit_log {
            return bad("maxMessageSize must leave room in a CommitLog segment");
        }
        if self.consume_queue_entries_per_file == 0 {
            return bad("consumeQueueEntriesPerFile must be positive");
        }
        if self.max_hash_slot_num == 0 || self.max_index_num < 2 {
            return bad("index sizes must be positive");
        }
        if !(0.0..=1.0).contains(&self.disk_hard_limit_ratio)
            || !(0.0..=1.0).contains(&self.disk_max_used_space_ratio)
        {
            return bad("disk ratios must be within 0..1");
        }
        if self.delete_hours().is_empty() {
            return bad("deleteWhen must list hours 0-23 separated by ';'");
        }
        Ok(())
    }

    pub(crate) fn delete_hours(&self) -> Vec<u32> {
        self.delete_when
            .split(';')
            .filter_map(|h| h.trim().parse::<u32>().ok())
            .filter(|h| *h < 24)
            .collect()
    }

    pub(crate) fn sync_flush_timeout(&self) -> Duration {
        Duration::from_millis(self.sync_flush_timeout)
    }
}
