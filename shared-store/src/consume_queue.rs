//! ConsumeQueue: per (topic, queue) index of 20-byte entries (CommitLog
//! offset i64, size i32, tag hash i64) over the CommitLog, in files of
//! `consumeQueueEntriesPerFile` entries. Written only by the dispatcher.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::error::Result;
use crate::mapped_file::MappedFileQueue;

/// Bytes per ConsumeQueue entry.
pub const CQ_UNIT: u64 = 20;

/// One ConsumeQueue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CqEntry {
    /// CommitLog offset of the message.
    pub physical_offset: i64,
    /// Encoded size of the message.
    pub size: i32,
    /// Java `String.hashCode` of the TAGS property (0 without tags).
    pub tag_hash: i64,
}

impl CqEntry {
    fn encode(&self) -> [u8; 20] {
        let mut b = [0u8; 20];
        b[..8].copy_from_slice(&self.physical_offset.to_be_bytes());
        b[8..12].copy_from_slice(&self.size.to_be_bytes());
        b[12..].copy_from_slice(&self.tag_hash.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Self {
        let mut o = [0u8; 8];
        o.copy_from_slice(&b[..8]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[12..20]);
        Self {
            physical_offset: i64::from_be_bytes(o),
            size: i32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            tag_hash: i64::from_be_bytes(t),
        }
    }

    fn is_empty(&self) -> bool {
        self.size == 0
    }
}

/// The ConsumeQueue of one (topic, queue id).
pub(crate) struct ConsumeQueue {
    topic: String,
    queue_id: i32,
    files: MappedFileQueue,
    /// Lowest queue offset whose message is still in the CommitLog.
    min_logic: AtomicI64,
}

impl ConsumeQueue {
    pub(crate) fn load(
        root: &std::path::Path,
        topic: &str,
        queue_id: i32,
        entries_per_file: u64,
    ) -> Result<Self> {
        let dir: PathBuf = root.join(topic).join(queue_id.to_string());
        let files = MappedFileQueue::load(dir, entries_per_file * CQ_UNIT)?;
        let cq = Self {
            topic: topic.to_string(),
            queue_id,
            files,
            min_logic: AtomicI64::new(0),
        };
        cq.recover_end();
        cq.min_logic
            .store((cq.files.min_offset() / CQ_UNIT) as i64, Ordering::Release);
        Ok(cq)
    }

    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    pub(crate) fn queue_id(&self) -> i32 {
        self.queue_id
    }

    /// Find the end of the last file's filled entries: the last non-empty one.
    fn recover_end(&self) {
        let Some(last) = self.files.last() else {
            return;
        };
        let all = last.all();
        let n = all.len() / CQ_UNIT as usize;
        let mut end = 0;
        for i in (0..n).rev() {
            let e = CqEntry::decode(&all[i * 20..i * 20 + 20]);
            if !e.is_empty() {
                end = (i + 1) * 20;
                break;
            }
        }
        last.set_wrote(end as u64);
        last.set_flushed(end as u64);
    }

    /// Number of entries ever written (the next queue offset).
    pub(crate) fn max_offset(&self) -> i64 {
        (self.files.max_offset() / CQ_UNIT) as i64
    }

    /// Lowest queue offset still readable.
    pub(crate) fn min_offset(&self) -> i64 {
        self.min_logic
            .load(Ordering::Acquire)
            .max((self.files.min_offset() / CQ_UNIT) as i64)
    }

    /// Write the entry for `queue_offset`. Dispatcher (or recovery) only.
    pub(crate) fn put(&self, queue_offset: i64, entry: CqEntry) -> Result<()> {
        let pos = queue_offset as u64 * CQ_UNIT;
        if pos < self.files.min_offset() {
            // Already below retention: nothing to index.
            return Ok(());
        }
        let file = self.files.get_or_create(pos)?;
        let in_file = pos - file.from();
        let wrote = file.wrote();
        if in_file < wrote {
            // Re-dispatch after a crash: the slot is rewritten with the same entry.
            // SAFETY: re-dispatch happens during recovery, before readers exist.
            unsafe { file.write_at(in_file, &entry.encode())? };
            return Ok(());
        }
        if in_file > wrote {
            tracing::warn!(topic = %self.topic, queue = self.queue_id, queue_offset, "consume queue hole before entry");
        }
        // SAFETY: the dispatcher is the only writer and writes at or past `wrote`.
        unsafe { file.write_at(in_file, &entry.encode())? };
        file.set_wrote(in_file + CQ_UNIT);
        Ok(())
    }

    /// The entry at `queue_offset`, if written.
    pub(crate) fn get(&self, queue_offset: i64) -> Option<CqEntry> {
        let pos = u64::try_from(queue_offset).ok()? * CQ_UNIT;
        let f = self.files.find(pos)?;
        let b = f.slice(pos - f.from(), CQ_UNIT, f.wrote())?;
        Some(CqEntry::decode(b))
    }

    /// Up to `max` entries from `queue_offset` (stops at a file end; callers loop).
    pub(crate) fn entries(&self, queue_offset: i64, max: usize) -> Vec<CqEntry> {
        let mut out = Vec::new();
        let Ok(start) = u64::try_from(queue_offset) else {
            return out;
        };
        let mut pos = start * CQ_UNIT;
        while out.len() < max {
            let Some(f) = self.files.find(pos) else { break };
            let wrote = f.wrote();
            let mut p = pos - f.from();
            while p + CQ_UNIT <= wrote && out.len() < max {
                if let Some(b) = f.slice(p, CQ_UNIT, wrote) {
                    out.push(CqEntry::decode(b));
                }
                p += CQ_UNIT;
            }
            if p < f.size() {
                break;
            }
            pos = f.from() + f.size();
        }
        out
    }

    /// Remove entries that point at or past `commit_log_end` (recovery).
    pub(crate) fn truncate_dirty(&self, commit_log_end: u64) -> Result<()> {
        let mut n = self.max_offset();
        let min = (self.files.min_offset() / CQ_UNIT) as i64;
        while n > min {
            match self.get(n - 1) {
                Some(e)
                    if e.is_empty()
                        || e.physical_offset as u64 + e.size as u64 > commit_log_end =>
                {
                    n -= 1
                }
                _ => break,
            }
        }
        if n != self.max_offset() {
            self.files.truncate(n as u64 * CQ_UNIT)?;
        }
        Ok(())
    }

    /// Move the readable minimum past entries whose messages were deleted, and
    /// delete files entirely below `commit_log_min`. Never deletes the last file.
    pub(crate) fn clean(&self, commit_log_min: u64) -> Result<usize> {
        let mut deleted = 0;
        while self.files.len() > 1 {
            let Some(first) = self.files.first() else {
                break;
            };
            let last_in_first = (first.from() + first.size()) / CQ_UNIT - 1;
            match self.get(last_in_first as i64) {
                Some(e) if (e.physical_offset as u64 + e.size as u64) <= commit_log_min => {
                    self.files.remove_first()?;
                    deleted += 1;
                }
                _ => break,
            }
        }
        // Binary search the first entry still in the CommitLog.
        let (mut lo, mut hi) = (self.min_offset(), self.max_offset());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(mid) {
                Some(e) if (e.physical_offset as u64) < commit_log_min => lo = mid + 1,
                _ => hi = mid,
            }
        }
        self.min_logic.fetch_max(lo, Ordering::AcqRel);
        Ok(deleted)
    }

    pub(crate) fn flush(&self) -> Result<()> {
        self.files.flush_from(0)?;
        Ok(())
    }

    pub(crate) fn destroy(&self) -> Result<()> {
        self.files.destroy_all()
    }
}
