//! The CommitLog: every message of every topic appended to one log of mmap'd
//! segments. Appends are serialised by one short lock that also assigns queue
//! offsets, so CommitLog order and ConsumeQueue order always agree.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use hashbrown::HashMap;
use parking_lot::Mutex;

use crate::error::{Result, StoreError};
use crate::mapped_file::MappedFileQueue;
use crate::message::{
    self, check_entry_at, property, EntryCheck, Message, BLANK_MAGIC_CODE,
    END_FILE_MIN_BLANK_LENGTH, LMQ_PREFIX, MESSAGE_MAGIC_CODE, POS_PHYSICAL_OFFSET,
    POS_QUEUE_OFFSET, POS_SYSFLAG,
};
use crate::msg_id::encode_offset_msg_id;

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
#[derive(Default)]
pub(crate) struct QueueOffsets {
    table: HashMap<String, i64>,
    key: String,
}

impl QueueOffsets {
    fn key(&mut self, topic: &str, queue_id: i32) -> &str {
        use std::fmt::Write;
        self.key.clear();
        let _ = write!(self.key, "{topic}-{queue_id}");
        &self.key
    }

    pub(crate) fn peek(&mut self, topic: &str, queue_id: i32) -> i64 {
        self.key(topic, queue_id);
        self.table.get(self.key.as_str()).copied().unwrap_or(0)
    }

    fn put_back(&mut self, topic: &str, queue_id: i32, next: i64) {
        self.key(topic, queue_id);
        match self.table.get_mut(self.key.as_str()) {
            Some(v) => *v = next,
            None => {
                self.table.insert(self.key.clone(), next);
            }
        }
    }

    /// Record that (topic, queue) holds `next` entries (recovery).
    pub(crate) fn set(&mut self, topic: &str, queue_id: i32, next: i64) {
        self.put_back(topic, queue_id, next);
    }

    pub(crate) fn remove_topic(&mut self, topic: &str) {
        let prefix = format!("{topic}-");
        self.table
            .retain(|k, _| !(k.starts_with(&prefix) && k[prefix.len()..].parse::<i32>().is_ok()));
    }
}

const PAGE: usize = 4096;

/// How far ahead of the write position pages are prefaulted.
const WARM_AHEAD: u64 = 8 << 20;

/// The CommitLog.
pub(crate) struct CommitLog {
    files: MappedFileQueue,
    store_host: SocketAddr,
    flushed: AtomicU64,
    warmed_to: AtomicU64,
    append: Mutex<QueueOffsets>,
}

impl CommitLog {
    pub(crate) fn load(dir: PathBuf, segment_size: u64, store_host: SocketAddr) -> Result<Self> {
        Ok(Self {
            files: MappedFileQueue::load(dir, segment_size)?,
            store_host,
            flushed: AtomicU64::new(0),
            warmed_to: AtomicU64::new(0),
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

    pub(crate) fn max_offset(&self) -> u64 {
        self.files.max_offset()
    }

    pub(crate) fn flushed_offset(&self) -> u64 {
        self.flushed.load(Ordering::Acquire)
    }

    /// Append `msg`. Most of the encoding happens before the lock; under it we
    /// only pick the offsets, patch them in and copy into the segment.
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

        let mut file = self.files.get_or_create(self.files.max_offset())?;
        if file.is_full() {
            file = self.files.get_or_create(file.from() + file.size())?;
        }
        let mut pos = file.wrote();
        if pos + len + END_FILE_MIN_BLANK_LENGTH as u64 > file.size() {
            // Not enough room: close the segment with a blank and roll over.
            let remaining = (file.size() - pos) as i32;
            let mut blank = [0u8; 8];
            blank[..4].copy_from_slice(&remaining.to_be_bytes());
            blank[4..].copy_from_slice(&BLANK_MAGIC_CODE.to_be_bytes());
            // SAFETY: we hold the append lock and write at `wrote`.
            unsafe { file.write_at(pos, &blank)? };
            file.set_wrote(file.size());
            file = self.files.get_or_create(file.from() + file.size())?;
            pos = 0;
            if len + END_FILE_MIN_BLANK_LENGTH as u64 > file.size() {
                return Err(StoreError::MessageIllegal(format!(
                    "message of {len} bytes does not fit a segment"
                )));
            }
        }
        let physical_offset = (file.from() + pos) as i64;
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
        // SAFETY: we hold the append lock and write at `wrote`.
        unsafe { file.write_at(pos, &buf)? };
        file.set_wrote(pos + len);
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

    /// Whether the write position came close to the prefaulted region.
    pub(crate) fn needs_warming(&self, end: u64) -> bool {
        end + WARM_AHEAD / 2 > self.warmed_to.load(Ordering::Relaxed)
    }

    /// Prefault the current segment up to `WARM_AHEAD` past the write position
    /// (warm thread), so appends under the lock do not fault pages in.
    pub(crate) fn warm_ahead(&self) {
        let Some(f) = self.files.last() else { return };
        let max = f.from() + f.wrote();
        let from = self.warmed_to.load(Ordering::Relaxed).max(max);
        let end = (max + WARM_AHEAD).min(f.from() + f.size());
        if end > from {
            f.warm(from - f.from(), end - from);
            self.warmed_to.store(end, Ordering::Relaxed);
        }
    }

    /// Copy of the `size` bytes at `offset`, if they are stored.
    pub(crate) fn read(&self, offset: u64, size: u64) -> Option<Bytes> {
        let f = self.files.find(offset)?;
        let slice = f.slice(offset - f.from(), size, f.wrote())?;
        Some(Bytes::copy_from_slice(slice))
    }

    /// Read the whole entry starting at `offset`.
    pub(crate) fn read_entry(&self, offset: u64) -> Option<Bytes> {
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

    /// msync everything written since the last flush; returns the flushed offset.
    pub(crate) fn flush(&self) -> Result<u64> {
        let from = self.flushed_offset();
        let flushed = self.files.flush_from(from)?.max(from);
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
        self.flushed.store(end, Ordering::Release);
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
