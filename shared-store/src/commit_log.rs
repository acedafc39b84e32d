//! The CommitLog: every message of every topic appended to one log of mmap'd
//! segments. Appends are serialised by one short lock that also assigns queue
//! offsets, so CommitLog order and ConsumeQueue order always agree. They land
//! in the staging ring; `commit` copies them into the segments.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use hashbrown::HashMap;
use parking_lot::{Condvar, Mutex};

use crate::error::{Result, StoreError};
use crate::mapped_file::MappedFileQueue;
use crate::message::{
    self, check_entry_at, property, EntryCheck, Message, BLANK_MAGIC_CODE,
    END_FILE_MIN_BLANK_LENGTH, LMQ_PREFIX, MESSAGE_MAGIC_CODE, POS_PHYSICAL_OFFSET,
    POS_QUEUE_OFFSET, POS_SYSFLAG,
};
use crate::msg_id::encode_offset_msg_id;
use crate::staging::{OldRing, Staging};

/// Where an append landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    /// CommitLog offset of the entry.
    pub physical_offset: i64,
    /// Encoded size.
    pub wrote_bytes: i32,
    /// Offset in the message's ConsumeQueue.
    pub queue_offset: i64,
    /// Broker clock at append (ms).
    pub store_timestamp: i64,
    /// offsetMsgId of the entry.
    pub offset_msg_id: String,
    /// Offsets assigned in light queues, in INNER_MULTI_DISPATCH order.
    pub lmq_offsets: Vec<(String, i64)>,
}

impl AppendResult {
    /// CommitLog offset one past the entry.
    pub fn end_offset(&self) -> u64 {
        self.physical_offset as u64 + self.wrote_bytes as u64
    }
}

/// Next queue offset of every queue: the only state the append lock guards.
/// Nested by topic so a lookup by `&str` needs no key allocation per append.
#[derive(Default)]
pub(crate) struct QueueOffsets {
    table: HashMap<String, HashMap<i32, i64>>,
}

impl QueueOffsets {
    pub(crate) fn peek(&self, topic: &str, queue_id: i32) -> i64 {
        self.table
            .get(topic)
            .and_then(|q| q.get(&queue_id))
            .copied()
            .unwrap_or(0)
    }

    fn put_back(&mut self, topic: &str, queue_id: i32, next: i64) {
        match self.table.get_mut(topic) {
            Some(q) => {
                q.insert(queue_id, next);
            }
            None => {
                self.table
                    .insert(topic.to_string(), HashMap::from([(queue_id, next)]));
            }
        }
    }

    /// Record that (topic, queue) holds `next` entries (recovery).
    pub(crate) fn set(&mut self, topic: &str, queue_id: i32, next: i64) {
        self.put_back(topic, queue_id, next);
    }

    pub(crate) fn remove_topic(&mut self, topic: &str) {
        self.table.remove(topic);
    }
}

const PAGE: usize = 4096;

/// Most bytes copied from the ring per `pwrite`.
const COMMIT_CHUNK: u64 = 1 << 20;

/// The CommitLog. Appends go to the staging ring (see [`crate::staging`]);
/// the committer copies them into the segments, where readers find them.
pub(crate) struct CommitLog {
    files: MappedFileQueue,
    store_host: SocketAddr,
    flushed: AtomicU64,
    /// One past the last appended byte (in the ring, maybe not yet in a segment).
    appended: AtomicU64,
    /// One past the last byte copied into a segment and published to readers
    /// (always an entry boundary).
    committed: AtomicU64,
    /// One past the last ring byte copied out (may be mid-entry while a
    /// commit runs): appends may overwrite the ring below it.
    copied: AtomicU64,
    staging: Staging,
    /// The ring as the last process left it, until recovery has replayed it.
    old_ring: Mutex<Option<OldRing>>,
    commit_lock: Mutex<()>,
    /// Set under the append lock by [`Self::close`]: no append follows it.
    closed: AtomicBool,
    /// Writers waiting for ring space sleep on `space` (under `space_lock`).
    space_lock: Mutex<()>,
    space: Condvar,
    append: Mutex<QueueOffsets>,
}

impl CommitLog {
    pub(crate) fn load(
        dir: PathBuf,
        segment_size: u64,
        store_host: SocketAddr,
        staging_path: PathBuf,
        staging_size: u64,
    ) -> Result<Self> {
        let (staging, old) = Staging::open(staging_path, staging_size)?;
        Ok(Self {
            files: MappedFileQueue::load(dir, segment_size)?,
            store_host,
            flushed: AtomicU64::new(0),
            appended: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            copied: AtomicU64::new(0),
            staging,
            old_ring: Mutex::new(old),
            commit_lock: Mutex::new(()),
            closed: AtomicBool::new(false),
            space_lock: Mutex::new(()),
            space: Condvar::new(),
            append: Mutex::new(QueueOffsets::default()),
        })
    }

    pub(crate) fn files(&self) -> &MappedFileQueue {
        &self.files
    }

    pub(crate) fn queue_offsets(&self) -> parking_lot::MutexGuard<'_, QueueOffsets> {
        self.append.lock()
    }

    pub(crate) fn min_offset(&self) -> u64 {
        self.files.min_offset()
    }

    /// One past the last appended byte.
    pub(crate) fn max_offset(&self) -> u64 {
        self.appended.load(Ordering::Acquire)
    }

    /// One past the last byte readers can see (copied into a segment).
    pub(crate) fn committed_offset(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    pub(crate) fn flushed_offset(&self) -> u64 {
        self.flushed.load(Ordering::Acquire)
    }

    /// Append `msg`. Most of the encoding happens before the lock; under it we
    /// only pick the offsets, patch them in and copy into the staging ring.
    pub(crate) fn append(&self, msg: &Message) -> Result<AppendResult> {
        let lmq = msg
            .properties
            .get(property::INNER_MULTI_DISPATCH)
            .map(|s| {
                s.split(',')
                    .filter(|q| !q.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if lmq.iter().any(|q| !q.starts_with(LMQ_PREFIX)) {
            return Err(StoreError::MessageIllegal(format!(
                "{} may only name {LMQ_PREFIX} queues",
                property::INNER_MULTI_DISPATCH
            )));
        }
        let pre = if lmq.is_empty() {
            Some(message::encode(msg, 0, 0, 0, &self.store_host)?)
        } else {
            None
        };

        let mut offsets = self.append.lock();
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::ShutDown);
        }
        let store_timestamp = message::now_millis();
        // Half and rolled-back transaction entries never reach a ConsumeQueue,
        // so they take no queue offset (as in RocketMQ).
        let tx = msg.sys_flag & message::SYSFLAG_TRANSACTION_ROLLBACK;
        let consumable = tx != message::SYSFLAG_TRANSACTION_PREPARED
            && tx != message::SYSFLAG_TRANSACTION_ROLLBACK;
        let queue_offset = if consumable {
            offsets.peek(&msg.topic, msg.queue_id)
        } else {
            0
        };
        let mut lmq_offsets = Vec::with_capacity(lmq.len());
        let mut buf: BytesMut = match pre {
            Some(b) => b,
            None => {
                // Light-queue offsets live in the entry's properties, so the entry
                // is encoded here, where the offsets are known.
                let mut m = msg.clone();
                let mut list = Vec::with_capacity(lmq.len());
                for q in &lmq {
                    let o = offsets.peek(q, 0);
                    lmq_offsets.push((q.clone(), o));
                    list.push(o.to_string());
                }
                m.properties
                    .insert(property::INNER_MULTI_QUEUE_OFFSET, list.join(","));
                message::encode(&m, 0, 0, 0, &self.store_host)?
            }
        };
        let len = buf.len() as u64;
        let segment = self.files.file_size();
        if len + END_FILE_MIN_BLANK_LENGTH as u64 > segment {
            return Err(StoreError::MessageIllegal(format!(
                "message of {len} bytes does not fit a segment"
            )));
        }

        // Only the appender moves `appended`, and we hold the append lock.
        let mut start = self.appended.load(Ordering::Relaxed);
        let pos = start % segment;
        // Not enough room: close the segment with a blank and roll over.
        let blank_at = (pos + len + END_FILE_MIN_BLANK_LENGTH as u64 > segment).then_some(start);
        if blank_at.is_some() {
            start += segment - pos;
        }
        self.reserve(start + len)?;
        if start.is_multiple_of(segment) {
            // A new segment: create it before closing the old one (a failure
            // here must leave nothing half done) so the committer finds it.
            self.files.get_or_create(start)?;
        }
        if let Some(at) = blank_at {
            let file = self.files.get_or_create(at)?;
            let remaining = (segment - pos) as i32;
            let mut blank = [0u8; 8];
            blank[..4].copy_from_slice(&remaining.to_be_bytes());
            blank[4..].copy_from_slice(&BLANK_MAGIC_CODE.to_be_bytes());
            // SAFETY: we hold the append lock and `reserve` made room.
            unsafe { self.staging.write(at, &blank) };
            file.set_closed_at(pos);
        }
        let physical_offset = start as i64;
        buf[POS_QUEUE_OFFSET..POS_QUEUE_OFFSET + 8].copy_from_slice(&queue_offset.to_be_bytes());
        buf[POS_PHYSICAL_OFFSET..POS_PHYSICAL_OFFSET + 8]
            .copy_from_slice(&physical_offset.to_be_bytes());
        let sys_flag = i32::from_be_bytes([
            buf[POS_SYSFLAG],
            buf[POS_SYSFLAG + 1],
            buf[POS_SYSFLAG + 2],
            buf[POS_SYSFLAG + 3],
        ]);
        let ts_pos = message::store_timestamp_pos(sys_flag);
        buf[ts_pos..ts_pos + 8].copy_from_slice(&store_timestamp.to_be_bytes());
        // SAFETY: we hold the append lock and `reserve` made room.
        unsafe { self.staging.write(start, &buf) };
        self.appended.store(start + len, Ordering::Release);
        if consumable {
            offsets.put_back(&msg.topic, msg.queue_id, queue_offset + 1);
        }
        for (q, o) in &lmq_offsets {
            offsets.put_back(q, 0, o + 1);
        }
        drop(offsets);

        Ok(AppendResult {
            physical_offset,
            wrote_bytes: len as i32,
            queue_offset,
            store_timestamp,
            offset_msg_id: encode_offset_msg_id(&self.store_host, physical_offset),
            lmq_offsets,
        })
    }

    /// Refuse every later append (shutdown). Taken under the append lock, so
    /// an append either finished before or fails: none lands after the final
    /// commit and checkpoint.
    pub(crate) fn close(&self) {
        let _g = self.append.lock();
        self.closed.store(true, Ordering::Release);
    }

    /// Make sure the ring can take bytes up to `end`: wait for the committer
    /// while it is a whole ring behind (backpressure on the writers instead of
    /// unbounded memory). Waiting rather than copying ourselves keeps the
    /// writer and the committer on two cores. Should the committer make no
    /// progress for a while, the writer copies.
    fn reserve(&self, end: u64) -> Result<()> {
        let size = self.staging.size();
        if end - self.copied.load(Ordering::Acquire) <= size {
            return Ok(());
        }
        if end - self.max_offset() > size {
            return Err(StoreError::MessageIllegal(format!(
                "entry does not fit the {size}-byte staging ring"
            )));
        }
        let mut g = self.space_lock.lock();
        while end - self.copied.load(Ordering::Acquire) > size {
            let before = self.copied.load(Ordering::Acquire);
            let timed_out = self
                .space
                .wait_for(&mut g, std::time::Duration::from_millis(10))
                .timed_out();
            if timed_out && self.copied.load(Ordering::Acquire) == before {
                drop(g);
                self.commit()?;
                g = self.space_lock.lock();
            }
        }
        Ok(())
    }

    /// Copy everything appended so far from the ring into the segments and
    /// make it visible to readers; returns the committed offset.
    pub(crate) fn commit(&self) -> Result<u64> {
        let _g = self.commit_lock.lock();
        let end = self.appended.load(Ordering::Acquire);
        let mut at = self.committed.load(Ordering::Acquire);
        while at < end {
            let f = self.files.find(at).ok_or_else(|| StoreError::Corruption {
                file: self.files.dir().to_path_buf(),
                offset: at,
                reason: "no segment for appended bytes".into(),
            })?;
            let seg_end = f.from() + f.size();
            // A closed segment is copied through its blank; what follows the
            // blank in the ring was never written.
            let (stop, next) = match f.closed_at() {
                Some(b) if f.from() + b + 8 <= end => (f.from() + b + 8, seg_end),
                // An open segment: `end` is an entry boundary inside it.
                _ => (end, end),
            };
            // Copied in chunks so writers waiting for ring space get it as it
            // frees up; published to readers only at the entry boundary.
            let mut p = at;
            while p < stop {
                let q = stop.min(p + COMMIT_CHUNK);
                // SAFETY: `[p, q)` lies between `copied` and the acquired
                // append end, which the appender does not overwrite.
                let (a, b) = unsafe { self.staging.slices(p, q - p) };
                let pos = p - f.from();
                f.pwrite(pos, a)?;
                if !b.is_empty() {
                    f.pwrite(pos + a.len() as u64, b)?;
                }
                // The ring is freed only at entry boundaries (below): a
                // crash mid-commit must find the torn entry still in the ring.
                p = q;
            }
            f.set_wrote(next - f.from());
            at = next;
            self.committed.store(at, Ordering::Release);
            self.free_ring(at);
        }
        self.staging.set_committed(at);
        Ok(at)
    }

    /// The ring below `offset` has been copied out: writers may reuse it.
    fn free_ring(&self, offset: u64) {
        self.copied.store(offset, Ordering::Release);
        // Taken so a writer between its check and its wait cannot miss this.
        drop(self.space_lock.lock());
        self.space.notify_all();
    }

    /// Readers call this before reading `[offset, end)`: bytes appended but not
    /// yet committed are committed now rather than reported missing.
    fn ensure_committed(&self, end: u64) {
        if end > self.committed_offset() && end <= self.max_offset() {
            if let Err(e) = self.commit() {
                tracing::error!(%e, "commit for a reader failed");
            }
        }
    }

    /// Copy of the `size` bytes at `offset`, if they are stored.
    pub(crate) fn read(&self, offset: u64, size: u64) -> Option<Bytes> {
        self.ensure_committed(offset + size);
        let f = self.files.find(offset)?;
        let slice = f.slice(offset - f.from(), size, f.wrote())?;
        Some(Bytes::copy_from_slice(slice))
    }

    /// Read the whole entry starting at `offset`.
    pub(crate) fn read_entry(&self, offset: u64) -> Option<Bytes> {
        self.ensure_committed(offset + 1);
        let f = self.files.find(offset)?;
        let pos = offset - f.from();
        let head = f.slice(pos, 8, f.wrote())?;
        let total = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let magic = i32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if magic != MESSAGE_MAGIC_CODE || total <= 0 {
            return None;
        }
        Some(Bytes::copy_from_slice(f.slice(
            pos,
            total as u64,
            f.wrote(),
        )?))
    }

    /// Store timestamp of the entry at `offset` (search by time).
    pub(crate) fn store_timestamp_at(&self, offset: u64) -> Option<i64> {
        self.ensure_committed(offset + 1);
        let f = self.files.find(offset)?;
        let pos = offset - f.from();
        let head = f.slice(pos, 40, f.wrote())?;
        let sys_flag = i32::from_be_bytes([head[36], head[37], head[38], head[39]]);
        let ts = f.slice(
            pos + message::store_timestamp_pos(sys_flag) as u64,
            8,
            f.wrote(),
        )?;
        let mut a = [0u8; 8];
        a.copy_from_slice(ts);
        Some(i64::from_be_bytes(a))
    }

    /// Commit, then msync everything written since the last flush; returns
    /// the flushed offset.
    pub(crate) fn flush(&self) -> Result<u64> {
        let committed = self.commit()?;
        let from = self.flushed_offset();
        // Never past what was committed: a segment the appender created since
        // (written length 0) would otherwise claim its predecessor's tail.
        let flushed = self.files.flush_from(from)?.max(from).min(committed);
        self.flushed.store(flushed, Ordering::Release);
        Ok(flushed)
    }

    /// Start of the first segment found short on disk, whose bytes must be re-verified.
    pub(crate) fn first_short_segment(&self) -> Option<u64> {
        self.files
            .files()
            .iter()
            .find(|f| f.was_extended())
            .map(|f| f.from())
    }

    /// Trust a clean shutdown's checkpoint: the log ends at `end`. Like
    /// RocketMQ's normal recovery, the entries of the last `verify_files`
    /// segments are still checked (shape and CRC), which is cheap and catches
    /// damage done while the broker was down.
    pub(crate) fn recover_clean(&self, end: u64, verify_files: usize) -> Result<()> {
        let (first, last) = match (self.files.first(), self.files.last()) {
            (Some(f), Some(l)) => (f, l),
            _ if end == 0 => return Ok(()),
            _ => {
                return Err(StoreError::Corruption {
                    file: self.files.dir().to_path_buf(),
                    offset: 0,
                    reason: format!("checkpoint says the log ends at {end} but it has no segment"),
                })
            }
        };
        if end < first.from() || end > last.from() + last.size() {
            return Err(StoreError::Corruption {
                file: last.path().to_path_buf(),
                offset: end.saturating_sub(last.from()),
                reason: format!("checkpoint offset {end} lies outside the segments"),
            });
        }
        self.files.truncate(end)?;
        let files = self.files.files();
        for f in files.iter().rev().take(verify_files) {
            let all = f.all();
            let limit = f.wrote() as usize;
            let mut pos = 0usize;
            while pos < limit {
                match check_entry_at(&all[pos..limit], f.from() + pos as u64) {
                    Ok(EntryCheck::Message(n)) => pos += n,
                    Ok(EntryCheck::Blank) => break,
                    Err(e) => {
                        return Err(StoreError::Corruption {
                            file: f.path().to_path_buf(),
                            offset: pos as u64,
                            reason: format!("{e} (below the clean-shutdown offset {end})"),
                        })
                    }
                }
            }
        }
        self.flushed.store(end, Ordering::Release);
        // A clean shutdown committed everything: the ring holds nothing new.
        self.old_ring.lock().take();
        self.set_end(end);
        Ok(())
    }

    /// Scan from `start`, verifying every entry, calling `on_entry` for each
    /// valid one, and cut the log after the last valid entry. Bytes below
    /// `durable` were known flushed: a bad entry there is corruption. So is a bad
    /// entry with valid entries after it. Anything else bad is a torn tail.
    pub(crate) fn recover_scan(
        &self,
        start: u64,
        durable: u64,
        mut on_entry: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<u64> {
        let files = self.files.files();
        let Some(first) = files.first() else {
            if durable > 0 {
                return Err(StoreError::Corruption {
                    file: self.files.dir().to_path_buf(),
                    offset: 0,
                    reason: format!("{durable} bytes were flushed but no segment exists"),
                });
            }
            self.old_ring.lock().take();
            self.set_end(0);
            return Ok(0);
        };
        let start = start.max(first.from());
        let mut end = start;
        let mut idx = files
            .iter()
            .position(|f| start >= f.from() && start < f.from() + f.size())
            .unwrap_or(files.len());
        'files: while idx < files.len() {
            let f = &files[idx];
            let all = f.all();
            let mut pos = (end - f.from()) as usize;
            while pos < all.len() {
                match check_entry_at(&all[pos..], f.from() + pos as u64) {
                    Ok(EntryCheck::Message(n)) => {
                        on_entry(f.from() + pos as u64, &all[pos..pos + n])?;
                        pos += n;
                        end = f.from() + pos as u64;
                    }
                    Ok(EntryCheck::Blank) => {
                        end = f.from() + f.size();
                        idx += 1;
                        continue 'files;
                    }
                    Err(e) => {
                        let at = f.from() + pos as u64;
                        let empty = all[pos..(pos + 8).min(all.len())].iter().all(|b| *b == 0);
                        let reason = if empty {
                            "log ends here but flushed data follows".to_string()
                        } else {
                            e.to_string()
                        };
                        if at < durable || Self::valid_entry_after(&files[idx..], pos) {
                            return Err(StoreError::Corruption {
                                file: f.path().to_path_buf(),
                                offset: pos as u64,
                                reason: if at < durable {
                                    format!("{reason} (below the flushed offset {durable})")
                                } else {
                                    format!("{reason}, and valid entries follow")
                                },
                            });
                        }
                        if !empty {
                            tracing::warn!(file = %f.path().display(), offset = pos, %e, "truncating torn tail");
                        }
                        break 'files;
                    }
                }
            }
            end = f.from() + f.size();
            idx += 1;
        }
        if end < durable {
            return Err(StoreError::Corruption {
                file: self.files.dir().to_path_buf(),
                offset: end,
                reason: format!("log ends at {end}, before the flushed offset {durable}"),
            });
        }
        self.files.truncate(end)?;
        let end = self.replay_staged(end, &mut on_entry)?;
        self.flushed.store(end, Ordering::Release);
        self.set_end(end);
        Ok(end)
    }

    /// After recovery: the log ends at `end`, all of it committed.
    fn set_end(&self, end: u64) {
        self.appended.store(end, Ordering::Release);
        self.committed.store(end, Ordering::Release);
        self.copied.store(end, Ordering::Release);
        self.staging.set_committed(end);
    }

    /// Re-append, from the ring the crashed process left, the entries that
    /// follow `end` (appended, never copied into a segment). Stops at the first
    /// bytes that are not the next entry: stale ring content carries another
    /// offset or fails its CRC. Nothing is replayed when the log ends before
    /// what the committer had copied (the log lost data the ring cannot
    /// explain, e.g. an OS crash under ASYNC_FLUSH or a damaged segment).
    fn replay_staged(
        &self,
        mut end: u64,
        on_entry: &mut impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<u64> {
        let Some(old) = self.old_ring.lock().take() else {
            return Ok(end);
        };
        if old.committed > end {
            tracing::warn!(
                log_end = end,
                committed = old.committed,
                "the log ends before what was committed from the staging ring: not replaying it"
            );
            return Ok(end);
        }
        let segment = self.files.file_size();
        let mut replayed = 0u64;
        while let Some(head) = old.read(end, 8) {
            let total = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            let magic = i32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            let pos = end % segment;
            if magic == BLANK_MAGIC_CODE {
                if total <= 0 || pos + total as u64 != segment {
                    break;
                }
                let f = self.files.get_or_create(end)?;
                // SAFETY: recovery runs before the store is shared.
                unsafe { f.write_at(pos, &head)? };
                f.set_wrote(segment);
                end += total as u64;
                continue;
            }
            if magic != MESSAGE_MAGIC_CODE || total <= 0 || pos + total as u64 > segment {
                break;
            }
            let Some(bytes) = old.read(end, total as u64) else {
                break;
            };
            if !matches!(check_entry_at(&bytes, end), Ok(EntryCheck::Message(n)) if n == bytes.len())
            {
                break;
            }
            let f = self.files.get_or_create(end)?;
            // SAFETY: recovery runs before the store is shared.
            unsafe { f.write_at(pos, &bytes)? };
            f.set_wrote(pos + bytes.len() as u64);
            on_entry(end, &bytes)?;
            end += bytes.len() as u64;
            replayed += 1;
        }
        if replayed > 0 {
            tracing::info!(
                replayed,
                ring_bytes = old.size(),
                "re-appended entries the crashed process had staged but not committed"
            );
        }
        Ok(end)
    }

    /// Is there a valid entry anywhere after `pos` in the first file, or at the
    /// start of a later one?
    fn valid_entry_after(
        files: &[std::sync::Arc<crate::mapped_file::MappedFile>],
        pos: usize,
    ) -> bool {
        let magic = MESSAGE_MAGIC_CODE.to_be_bytes();
        if let Some(f) = files.first() {
            let all = f.all();
            // Only regions holding data can hold an entry: holes are skipped
            // without reading them (a 1 GiB segment is mostly hole after a crash).
            let mut region = f.next_data(pos as u64 + 1);
            while let Some(start) = region {
                let stop = (f.next_hole(start) as usize).min(all.len());
                let mut p = (start as usize).max(pos + 1);
                while p + 8 <= stop {
                    // Fallocated extents read as data but hold zeros: skip zero
                    // pages word by word before looking for a magic code.
                    let page_end = ((p / PAGE + 1) * PAGE).min(stop);
                    if crate::mapped_file::is_zero(&all[p..page_end]) {
                        p = page_end;
                        continue;
                    }
                    let scan_end = (page_end + 4).min(stop);
                    let Some(k) = all[p + 4..scan_end].iter().position(|b| *b == magic[0]) else {
                        p = page_end;
                        continue;
                    };
                    let q = p + k;
                    if q + 8 <= all.len()
                        && all[q + 4..q + 8] == magic
                        && matches!(
                            check_entry_at(&all[q..], f.from() + q as u64),
                            Ok(EntryCheck::Message(_))
                        )
                    {
                        return true;
                    }
                    p = q + 1;
                }
                region = f.next_data(stop as u64);
            }
        }
        files.iter().skip(1).any(|f| {
            matches!(
                check_entry_at(f.all(), f.from()),
                Ok(EntryCheck::Message(_))
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEGMENT: u64 = 64 * 1024;

    fn load(dir: &std::path::Path) -> CommitLog {
        CommitLog::load(
            dir.join("commitlog"),
            SEGMENT,
            SocketAddr::from(([127, 0, 0, 1], 10911)),
            dir.join("staging"),
            crate::staging::min_size(8 * 1024),
        )
        .unwrap()
    }

    fn msg(i: usize) -> Message {
        Message::new("t", 0, vec![i as u8; 3000 + i])
    }

    /// A process that dies between append and commit leaves entries only in
    /// the ring; the next open re-appends them, across a segment roll-over.
    #[test]
    fn uncommitted_appends_are_replayed_from_the_ring() {
        let dir = tempfile::tempdir().unwrap();
        let log = load(dir.path());
        let mut ends = Vec::new();
        for i in 0..10 {
            ends.push(log.append(&msg(i)).unwrap());
        }
        log.commit().unwrap();
        let committed = log.committed_offset();
        // Enough to close the first segment with a blank and start the next.
        for i in 10..40 {
            ends.push(log.append(&msg(i)).unwrap());
        }
        assert!(ends.last().unwrap().end_offset() > SEGMENT);
        assert_eq!(log.committed_offset(), committed, "nothing committed yet");
        drop(log);

        let log = load(dir.path());
        let mut seen = Vec::new();
        let end = log
            .recover_scan(0, 0, |phy, bytes| {
                seen.push((phy, bytes.len()));
                Ok(())
            })
            .unwrap();
        assert_eq!(end, ends.last().unwrap().end_offset());
        assert_eq!(seen.len(), 40);
        for (i, a) in ends.iter().enumerate() {
            assert_eq!(seen[i], (a.physical_offset as u64, a.wrote_bytes as usize));
            let entry = log.read_entry(a.physical_offset as u64).unwrap();
            let m = crate::message::decode(&entry).unwrap();
            assert_eq!(&m.message.body[..], &msg(i).body[..]);
        }
        // The replayed entries are now in the segments: a later open finds
        // them without the ring.
        log.flush().unwrap();
        drop(log);
        std::fs::remove_file(dir.path().join("staging")).unwrap();
        let log = load(dir.path());
        let mut n = 0;
        log.recover_scan(0, 0, |_, _| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 40);
    }

    /// A log that lost committed data (an OS crash under ASYNC_FLUSH, a
    /// damaged segment) is not patched from the ring: the ring cannot say what
    /// else is missing, so recovery keeps RocketMQ's cut at the damage.
    #[test]
    fn a_log_missing_committed_data_is_not_patched_from_the_ring() {
        let dir = tempfile::tempdir().unwrap();
        let log = load(dir.path());
        let mut last = None;
        for i in 0..5 {
            last = Some(log.append(&msg(i)).unwrap());
        }
        log.flush().unwrap();
        drop(log);
        let last = last.unwrap();
        let seg = dir
            .path()
            .join("commitlog")
            .join(crate::mapped_file::file_name(0));
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(
            &vec![0u8; last.wrote_bytes as usize],
            last.physical_offset as u64,
        )
        .unwrap();
        drop(f);
        let log = load(dir.path());
        let end = log.recover_scan(0, 0, |_, _| Ok(())).unwrap();
        assert_eq!(end, last.physical_offset as u64);
    }

    /// Readers only ever see whole entries, even while a commit larger than
    /// one `pwrite` chunk is copying.
    #[test]
    fn readers_see_only_entry_boundaries_during_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let log = std::sync::Arc::new(
            CommitLog::load(
                dir.path().join("commitlog"),
                16 << 20,
                SocketAddr::from(([127, 0, 0, 1], 10911)),
                dir.path().join("staging"),
                8 << 20,
            )
            .unwrap(),
        );
        let mut ends = std::collections::HashSet::from([0u64]);
        for i in 0..1500 {
            ends.insert(log.append(&msg(i % 200)).unwrap().end_offset());
        }
        assert!(log.max_offset() > 3 * COMMIT_CHUNK);
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (log, done) = (log.clone(), done.clone());
            std::thread::spawn(move || {
                let mut seen = std::collections::HashSet::new();
                while !done.load(Ordering::Acquire) {
                    seen.insert(log.committed_offset());
                    seen.insert(log.files.max_offset());
                }
                seen
            })
        };
        log.commit().unwrap();
        done.store(true, Ordering::Release);
        let seen = watcher.join().unwrap();
        for o in seen {
            assert!(
                ends.contains(&o),
                "a reader saw the log end at {o}, inside an entry"
            );
        }
    }
}
